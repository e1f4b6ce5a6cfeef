"""``/console``: the page shell, its static files (a fixed list read at start), and its settings.

One router, mounted by ``bus.gateway.app``; it includes ``bus.console.docs`` (problem pages, facet
schema). No templates are rendered with data: the shell is static and every datum comes from the public
API in the browser, with the caller's own key.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from importlib.resources.abc import Traversable

from fastapi import APIRouter, Path, Request
from fastapi.responses import RedirectResponse, Response

from bus import __version__
from bus.console import docs
from bus.console.security import secure_headers
from bus.errors import NotFound
from bus.gateway.auth import ctx_of

router = APIRouter(include_in_schema=False)
router.include_router(docs.router)

TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
    ".json": "application/json",
}


def _walk(node: Traversable, prefix: str = "") -> dict[str, Traversable]:
    out: dict[str, Traversable] = {}
    for child in node.iterdir():
        name = f"{prefix}{child.name}"
        if child.is_dir():
            out.update(_walk(child, f"{name}/"))
        elif any(name.endswith(s) for s in TYPES):
            out[name] = child
    return out


@lru_cache(maxsize=1)
def static_files() -> dict[str, Traversable]:
    """Every servable file under ``static/``, by relative path: nothing outside it can be asked for."""
    return _walk(resources.files("bus.console").joinpath("static"))


def _file(name: str) -> Response:
    found = static_files().get(name)
    if found is None:
        raise NotFound(f"no console file {name!r}")
    suffix = "." + name.rsplit(".", 1)[-1]
    return Response(found.read_bytes(), media_type=TYPES[suffix], headers=secure_headers())


@router.get("/console")
def console() -> Response:
    return _file("index.html")


@router.get("/console/")
def console_slash() -> RedirectResponse:
    return RedirectResponse("/console", status_code=308)


@router.get("/console/static/{name:path}")
def static(name: str = Path(..., max_length=200)) -> Response:
    return _file(name)


@router.get("/console/config.json")
def config(request: Request) -> Response:
    """What the page needs to know before login: the version and where Jaeger is (no secrets)."""
    settings = ctx_of(request).settings
    body = {"version": __version__, "jaeger_url": settings.jaeger_url}
    return Response(json.dumps(body), media_type="application/json", headers=secure_headers())
