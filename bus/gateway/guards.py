"""Request guards that apply to every endpoint before any route runs."""

from __future__ import annotations

import contextlib
import json
from urllib.parse import unquote_to_bytes

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bus.errors import BusError, RequestInvalid, RequestTooLarge
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
                err = RequestInvalid("NUL characters are not allowed in the path or query parameters")
                await refuse(scope, send, err)
                return
        await self.app(scope, receive, send)


class _OverLimit(Exception):
    """Raised into the app from ``receive`` once the body passed the limit; the guard answers 413."""


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with ``request.too_large`` (413), before parsing (R14).

    A declared ``Content-Length`` over the limit is refused without reading a byte. A body sent without
    one (chunked) is counted as it streams in: the first chunk past the limit stops the read, whatever
    the route answers then is dropped, and the caller gets the 413 instead. Nothing past the limit is
    ever buffered, so a 60 MB body costs the gateway at most ``limit`` bytes of memory.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.limit:
            await refuse(scope, send, self._error(declared))
            return
        seen = 0
        over = False
        started = False

        async def counted() -> Message:
            nonlocal seen, over
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    over = True
                    raise _OverLimit
            return message

        async def guarded(message: Message) -> None:
            nonlocal started
            if over:
                return  # the route's answer to a truncated body never reaches the caller
            started = started or message["type"] == "http.response.start"
            await send(message)

        with contextlib.suppress(_OverLimit):
            await self.app(scope, counted, guarded)
        if over and not started:
            await refuse(scope, send, self._error(None))

    def _error(self, declared: int | None) -> RequestTooLarge:
        size = f"{declared} bytes" if declared is not None else "more"
        return RequestTooLarge(
            f"the request body is {size}; at most {self.limit} bytes are accepted "
            "(BUS_MAX_REQUEST_BYTES): send the records in smaller batches",
            limit=self.limit,
        )


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server refuses a malformed length itself
    return None


async def refuse(scope: Scope, send: Send, err: BusError) -> None:
    """Answer ``err`` as problem+json straight from a guard (no route, no exception handler ran)."""
    body = json.dumps(err.to_problem(scope.get("path", "").replace("\x00", ""))).encode()
    await send(
        {
            "type": "http.response.start",
            "status": err.status,
            "headers": [
                (b"content-type", PROBLEM.encode()),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
