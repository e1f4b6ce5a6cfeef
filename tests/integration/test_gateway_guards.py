"""R14: bad input anywhere in the gateway gets a clear problem+json answer, never a 500."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from bus.context import BusContext
from bus.gateway.app import create_app


@pytest.mark.parametrize("path", [
    "/v1/datasets/abc%00def",
    "/v1/grants/g%00/records",
    "/v1/lineage/records/r%00",
    "/v1/audit/events?actor=a%00b",
    "/v1/incidents?agency=%00",
])
def test_r14_nul_in_path_or_query_is_refused_on_every_store(ctx: BusContext, path: str) -> None:
    client = TestClient(create_app(ctx))
    resp = client.get(path, headers={"Authorization": f"Bearer {ctx.admin_key}"})
    assert resp.status_code == 422
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.json()["code"] == "request.invalid"


def test_r14_unknown_route_is_problem_json(ctx: BusContext) -> None:
    resp = TestClient(create_app(ctx)).get("/v1/nothing-here")
    assert resp.status_code == 404
    assert resp.json()["code"] == "not_found"
