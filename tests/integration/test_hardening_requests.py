"""R14 (issue 13, item 4): request bodies over ``BUS_MAX_REQUEST_BYTES`` are refused with 413 before they
are parsed; bad cursors are 422 ``request.invalid``; every integer parameter is bounded."""

from __future__ import annotations

import base64
import socket

import httpx
import pytest
from fastapi.testclient import TestClient

from bus.context import BusContext
from bus.gateway.app import create_app
from bus.gateway.routes_subscribe import encode_cursor
from tests.integration.dataplane_helpers import grant_body


@pytest.fixture
def small_limit(ctx: BusContext) -> BusContext:
    ctx.settings.max_request_bytes = 4096
    return ctx


def test_r14_declared_body_over_the_limit_is_413_before_parsing(small_limit: BusContext, serve_app) -> None:
    base = serve_app(create_app(small_limit))
    body = b'{"records": [' + b"1," * 10_000 + b"1]}"
    resp = httpx.post(f"{base}/v1/datasets/x/records", content=body,
                      headers={"Authorization": f"Bearer {small_limit.admin_key}",
                               "content-type": "application/json"})
    assert resp.status_code == 413
    assert resp.headers["content-type"] == "application/problem+json"
    problem = resp.json()
    assert problem["code"] == "request.too_large" and problem["limit"] == 4096
    assert "BUS_MAX_REQUEST_BYTES" in problem["detail"]


def test_r14_chunked_body_over_the_limit_is_413(small_limit: BusContext, serve_app) -> None:
    """A body without Content-Length is counted as it streams; the route never answers it."""
    base = serve_app(create_app(small_limit))

    def chunks():  # type: ignore[no-untyped-def]
        yield b'{"records": ['
        for _ in range(200):
            yield b'{"licence_no": "' + b"x" * 100 + b'"},'
        yield b"1]}"

    resp = httpx.post(f"{base}/v1/datasets/x/records", content=chunks(),
                      headers={"Authorization": f"Bearer {small_limit.admin_key}",
                               "content-type": "application/json"})
    assert resp.status_code == 413, resp.text
    assert resp.json()["code"] == "request.too_large"


def test_r14_body_under_the_limit_is_served(small_limit: BusContext) -> None:
    client = TestClient(create_app(small_limit))
    resp = client.post("/v1/datasets/nope/records", json={"records": []},
                       headers={"Authorization": f"Bearer {small_limit.admin_key}"})
    assert resp.status_code != 413


def test_r14_default_limit_is_32_mib(ctx: BusContext) -> None:
    assert ctx.settings.max_request_bytes == 32 * 1024 * 1024


def _raw(p: str) -> str:
    return base64.urlsafe_b64encode(p.encode()).decode().rstrip("=")


BAD_CURSORS = [
    "!!!not-base64!!!",
    "abc",  # decodes to bytes that are not "p:o"
    _raw("0:-1"),  # negative offset
    _raw("-1:0"),
    _raw("0:" + "9" * 22),  # 22-digit offset: 500 before
    _raw("99999999999:0"),  # partition beyond int32
    _raw("0:1,"),
    _raw("0:+1"),
    _raw("0: 1"),
    "é",
    "A" * 4001,
]


@pytest.mark.parametrize("cursor", BAD_CURSORS)
def test_r14_bad_cursor_is_422_request_invalid(ctx, agency_factory, dataset_factory, cursor: str) -> None:
    owner, _ = agency_factory()
    psb, psb_key = agency_factory()
    ds = dataset_factory(owner)
    client = TestClient(create_app(ctx))
    auth = {"Authorization": f"Bearer {psb_key}"}
    grant = client.post("/v1/grants", json=grant_body(ds, ["licence_no"]), headers=auth).json()
    resp = client.get(f"/v1/grants/{grant['id']}/records", params={"after": cursor, "wait": 0}, headers=auth)
    assert resp.status_code == 422, resp.text
    assert resp.json()["code"] == "request.invalid"
    if len(cursor) <= 4000 and cursor.isascii():  # the SSE stream's Last-Event-ID goes through the same check
        sse = client.get(f"/v1/grants/{grant['id']}/stream", headers={**auth, "Last-Event-ID": cursor})
        assert sse.status_code == 422 and sse.json()["code"] == "request.invalid"


def test_r14_good_cursor_still_reads(ctx, agency_factory, dataset_factory) -> None:
    owner, _ = agency_factory()
    psb, psb_key = agency_factory()
    ds = dataset_factory(owner)
    client = TestClient(create_app(ctx))
    auth = {"Authorization": f"Bearer {psb_key}"}
    grant = client.post("/v1/grants", json=grant_body(ds, ["licence_no"]), headers=auth).json()
    resp = client.get(f"/v1/grants/{grant['id']}/records",
                      params={"after": encode_cursor({0: 0, 1: 0}), "wait": 0, "limit": 0}, headers=auth)
    assert resp.status_code == 200, resp.text


def test_r14_every_integer_parameter_is_bounded(ctx: BusContext) -> None:
    """Every integer or number in a path or query has both a minimum and a maximum in the contract."""
    spec = create_app(ctx).openapi()
    unbounded = []
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            for p in op.get("parameters", []):
                schema = p.get("schema", {})
                options = schema.get("anyOf", [schema])
                for s in options:
                    if s.get("type") in ("integer", "number") and (
                        "maximum" not in s or ("minimum" not in s and "exclusiveMinimum" not in s)
                    ):
                        unbounded.append(f"{method.upper()} {path} {p['name']}")
    assert unbounded == []


def test_r14_busy_port_fails_at_once_naming_it(ctx: BusContext) -> None:
    from bus.embedded import EmbeddedError
    from bus.stack import Stack

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        stack = Stack(ctx.settings, port=port, workers=False)
        with pytest.raises(EmbeddedError, match=str(port)):
            stack.start()
