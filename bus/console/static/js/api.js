// The one way the console talks to the bus: the public HTTP API, same origin, the caller's own key in
// the Authorization header. The key lives in sessionStorage (this tab only), never in a URL or cookie.
const KEY = "databus.key";

export class Problem extends Error {
  constructor(body, status) {
    super(body.detail || body.title || `HTTP ${status}`);
    this.status = status;
    this.title = body.title || "Request refused";
    this.detail = body.detail || "";
    this.code = body.code || "unknown";
    this.type = body.type || null;
    this.body = body;
  }
}

export const key = {
  get: () => sessionStorage.getItem(KEY),
  set: (value) => sessionStorage.setItem(KEY, value),
  clear: () => sessionStorage.removeItem(KEY),
};

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== undefined && v !== null && v !== "") q.set(k, v);
  }
  const text = q.toString();
  return text ? `?${text}` : "";
}

export async function api(path, { method = "GET", body, params } = {}) {
  const headers = { Accept: "application/json" };
  const k = key.get();
  if (k) headers.Authorization = `Bearer ${k}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let res;
  try {
    res = await fetch(path + query(params), {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "omit", cache: "no-store", referrerPolicy: "no-referrer",
    });
  } catch (err) {
    throw new Problem({ title: "The bus did not answer", detail: String(err), code: "network" }, 0);
  }
  const type = res.headers.get("content-type") || "";
  const data = type.includes("json") ? await res.json() : await res.text();
  if (!res.ok) throw new Problem(typeof data === "object" ? data : { detail: data }, res.status);
  return data;
}

// Who the key belongs to: the agency id from GET /v1/bus, its roles from GET /v1/agencies/{id}.
export async function whoami() {
  const info = await api("/v1/bus");
  if (info.agency === "admin") return { id: "admin", roles: ["admin"] };
  const agency = await api(`/v1/agencies/${encodeURIComponent(info.agency)}`);
  return { id: info.agency, roles: agency.roles || [] };
}
