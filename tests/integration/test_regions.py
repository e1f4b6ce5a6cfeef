"""R17: agencies carry their administrative region and level (province, city, county)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from bus.context import BusContext
from bus.gateway.app import create_app


@pytest.mark.parametrize("level", ["province", "city", "county"])
def test_r17_agency_keeps_its_region_and_level(ctx: BusContext, level: str) -> None:
    client = TestClient(create_app(ctx), headers={"Authorization": f"Bearer {ctx.admin_key}"})
    body = {"id": f"psb-{level}", "name": "Public Security Bureau", "region": "140902", "roles": ["agency"],
            "level": level}
    created = client.post("/v1/agencies", json=body)
    assert created.status_code == 201, created.text
    shown = client.get(f"/v1/agencies/psb-{level}").json()
    assert (shown["region"], shown["level"]) == ("140902", level)


def test_r17_unknown_level_or_region_is_refused_with_the_field_named(ctx: BusContext) -> None:
    client = TestClient(create_app(ctx), headers={"Authorization": f"Bearer {ctx.admin_key}"})
    bad = client.post("/v1/agencies", json={"id": "x", "name": "X", "region": "14 09", "roles": ["agency"],
                                            "level": "township"})
    assert bad.status_code == 422
    assert bad.headers["content-type"] == "application/problem+json"
    fields = {e["field"] for e in bad.json()["errors"]}
    assert {"region", "level"} <= fields
