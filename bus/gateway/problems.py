"""The one place where errors become ``application/problem+json`` (RFC 9457) with a stable code."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from bus.errors import BusError, MethodNotAllowed, NotFound, RequestInvalid

log = logging.getLogger(__name__)
PROBLEM = "application/problem+json"


def public_base(request: Request) -> str:
    """Where this bus's own documents live: ``BUS_PUBLIC_URL``, else the URL the request came to."""
    ctx = getattr(request.app.state, "ctx", None)
    configured = ctx.settings.public_url if ctx is not None else None
    return (configured or str(request.base_url)).rstrip("/")


def problem_response(err: BusError, request: Request) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if err.status == 401 else None
    body = err.to_problem(str(request.url.path))
    body["type"] = f"{public_base(request)}/problems/{err.code}"  # served by bus.console.docs
    return JSONResponse(body, status_code=err.status, media_type=PROBLEM, headers=headers)


def _loc(loc: tuple[object, ...] | list[object]) -> str:
    parts = [str(p) for p in loc if p not in ("body",)]
    return ".".join(parts) or "body"


def _content_type_hint(request: Request, exc: RequestValidationError) -> str | None:
    """A JSON body sent without ``Content-Type: application/json`` (``curl -d`` sends a form type) is
    not parsed, and the bare "Field required" that follows did not say why (issue 13)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json" or content_type.endswith("+json"):
        return None
    if not any(e.get("loc", ())[:1] == ("body",) for e in exc.errors()):
        return None
    sent = f"Content-Type {content_type!r}" if content_type else "no Content-Type"
    return f"the body must be JSON sent with 'Content-Type: application/json' (this request had {sent})"


def install(app: FastAPI) -> None:
    @app.exception_handler(BusError)
    async def _bus_error(request: Request, exc: BusError) -> JSONResponse:
        return problem_response(exc, request)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"field": _loc(e.get("loc", ())), "message": e.get("msg", "")} for e in exc.errors()]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
        hint = _content_type_hint(request, exc)
        if hint:
            detail = f"{hint} ({detail})" if detail else hint
        err = BusError(detail or "invalid request", code="request.invalid", errors=errors)
        err.status, err.title = 422, "Invalid request"
        return problem_response(err, request)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Only stable codes of bus.errors reach a caller: unknown route, wrong method, and a body that
        # cannot be parsed (FastAPI's 400 for malformed JSON) is bad input like any other.
        err: BusError
        if exc.status_code == 404:
            err = NotFound(str(exc.detail))
        elif exc.status_code == 405:
            err = MethodNotAllowed(str(exc.detail))
        else:
            err = RequestInvalid(str(exc.detail))
        err.status = exc.status_code
        return problem_response(err, request)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        err = BusError("internal error; the request was not applied", code="internal")
        err.status, err.title = 500, "Internal error"
        return problem_response(err, request)
