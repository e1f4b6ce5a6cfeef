// Settings the page reads before sign-in (GET /console/config.json): version, Jaeger URL.
export const config = { version: "", jaeger_url: null };
