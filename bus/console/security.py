"""Response headers of every console and documentation page: a strict Content-Security-Policy.

Scripts and styles come only from the bus itself (no inline script, no CDN, no eval); the page may only
talk to the bus (``connect-src 'self'``); it cannot be framed, and sends no referrer (ids stay here).
"""

from __future__ import annotations

CSP = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "form-action 'self'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ]
)


def secure_headers() -> dict[str, str]:
    return {
        "Content-Security-Policy": CSP,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
        "Cache-Control": "no-store",
    }
