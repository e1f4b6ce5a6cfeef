"""Documents the bus's own URIs point at: ``/problems/{code}`` and the OpenLineage facet schema.

Problem ``type`` URIs (``bus.gateway.problems``) and the ``databus_grant`` facet's ``_schemaURL``
(``bus.lineage.openlineage``) point here, under ``BUS_PUBLIC_URL`` or the gateway's own URL, so they
resolve; the codes themselves never change. No authentication: these pages describe the contract and
hold no data.
"""

from __future__ import annotations

import html
import inspect
import json
from functools import lru_cache
from importlib import resources
from typing import Any

from fastapi import APIRouter, Path
from fastapi.responses import HTMLResponse, JSONResponse

from bus.console.security import secure_headers
from bus.errors import BusError, NotFound
from bus.lineage.openlineage import GRANT_FACET_PATH

router = APIRouter(tags=["docs"], include_in_schema=False)  # documents, not API operations


@lru_cache(maxsize=1)
def problem_classes() -> dict[str, type[BusError]]:
    """Every stable code with the class that carries it (the first one found for a shared code)."""
    found: dict[str, type[BusError]] = {}
    stack: list[type[BusError]] = [BusError]
    while stack:
        cls = stack.pop(0)
        found.setdefault(cls.code, cls)
        stack.extend(cls.__subclasses__())
    return dict(sorted(found.items()))


def _explain(cls: type[BusError]) -> str:
    doc = inspect.getdoc(cls) or ""
    inherited = next((inspect.getdoc(b) for b in cls.__mro__[1:] if b.__doc__ and b is not object), None)
    if not cls.__doc__ or doc == inherited:
        return f"{cls.title}."
    return doc


def _page(title: str, body: str) -> HTMLResponse:
    text = (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{html.escape(title)}</title>"
        "<link rel='stylesheet' href='/console/static/console.css'></head>"
        f"<body class='doc'><main>{body}<p><a href='/problems'>All problem codes</a> · "
        "<a href='/console'>Console</a></p></main></body></html>"
    )
    return HTMLResponse(text, headers=secure_headers())


@router.get("/problems", response_class=HTMLResponse, summary="Every problem code of the bus")
def problems_index() -> HTMLResponse:
    rows = "".join(
        f"<tr><td><a href='/problems/{html.escape(code)}'><code>{html.escape(code)}</code></a></td>"
        f"<td>{cls.status}</td><td>{html.escape(cls.title)}</td></tr>"
        for code, cls in problem_classes().items()
    )
    return _page(
        "Problem codes",
        "<h1>Problem codes</h1><p>Every error of the bus is <code>application/problem+json</code> "
        "(RFC 9457) with a stable <code>code</code>; its <code>type</code> links to a page here.</p>"
        f"<table><thead><tr><th>code</th><th>status</th><th>title</th></tr></thead><tbody>{rows}"
        "</tbody></table>",
    )


@router.get("/problems/{code}", response_class=HTMLResponse, summary="What one problem code means")
def problem_page(code: str = Path(..., max_length=100, pattern=r"^[a-z0-9_.]+$")) -> HTMLResponse:
    cls = problem_classes().get(code)
    if cls is None:
        raise NotFound(f"no problem code {code!r}; the list is at /problems")
    paras = "".join(f"<p>{html.escape(p)}</p>" for p in _explain(cls).split("\n\n"))
    return _page(
        f"{code}: {cls.title}",
        f"<h1><code>{html.escape(code)}</code></h1><p class='lead'>{html.escape(cls.title)} "
        f"(HTTP {cls.status})</p>{paras}<p>The response's <code>detail</code> says what happened "
        "this time and what to do; extra members name the objects involved.</p>",
    )


@lru_cache(maxsize=1)
def grant_facet_schema() -> dict[str, Any]:
    text = resources.files("bus.console").joinpath("schemas/DatabusGrantFacet.json").read_text()
    loaded: dict[str, Any] = json.loads(text)
    return loaded


@router.get(GRANT_FACET_PATH, summary="JSON schema of the custom OpenLineage facet databus_grant")
def grant_facet() -> JSONResponse:
    return JSONResponse(grant_facet_schema(), media_type="application/schema+json", headers=secure_headers())
