"""Request guards that apply to every endpoint before any route runs."""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

from starlette.types import ASGIApp, Receive, Scope, Send

from bus.errors import RequestInvalid
from bus.gateway.problems import PROBLEM


class RejectNul:
    """Refuse NUL characters in the path or query string with ``request.invalid`` (422).

    PostgreSQL cannot store NUL in text, so without this a NUL in any parameter would reach the store
    and fail there; refusing it at the door keeps every endpoint's answer a clear 422.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            raw_path = scope.get("raw_path") or scope.get("path", "").encode()
            query = scope.get("query_string", b"")
            if b"\x00" in unquote_to_bytes(raw_path) or b"\x00" in unquote_to_bytes(
                query.replace(b"+", b" ")
            ):
                await _refuse(scope, send)
                return
        await self.app(scope, receive, send)


async def _refuse(scope: Scope, send: Send) -> None:
    import json

    err = RequestInvalid("NUL characters are not allowed in the path or query parameters")
    body = json.dumps(err.to_problem(scope.get("path", "").replace("\x00", ""))).encode()
    await send(
        {
            "type": "http.response.start",
            "status": err.status,
            "headers": [(b"content-type", PROBLEM.encode()), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
