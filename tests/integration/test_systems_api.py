"""R8/R16: admins register receiving systems; the egress check uses them and the grant's dataset."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from bus.context import BusContext
from bus.errors import EgressRefused
from bus.gateway import problems, routes_systems
from bus.store.models import AuditEvent, Grant

pytestmark = pytest.mark.integration


@pytest.fixture
def http(ctx: BusContext) -> TestClient:
    app = FastAPI()
    app.state.ctx = ctx
    problems.install(app)
    app.include_router(routes_systems.router)
    return TestClient(app)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_r8_admin_registers_and_lists_receiving_systems(
    ctx: BusContext, http: TestClient, agency_factory: Any
) -> None:
    agency_factory("health")
    admin = auth(ctx.admin_key)
    r = http.post(
        "/v1/agencies/health/systems",
        headers=admin,
        json={
            "name": "clinic warehouse",
            "url": "postgresql://etl@DB.health.example:5432/w",
            "in_jurisdiction": True,
        },
    )
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["host"] == "db.health.example" and created["address"].startswith("postgresql://")
    r = http.post(
        "/v1/agencies/health/systems",
        headers=admin,
        json={"name": "cloud analytics", "host": "analytics.cloud.example", "in_jurisdiction": False},
    )
    assert r.status_code == 201
    listed = http.get("/v1/agencies/health/systems", headers=admin).json()
    assert [(s["name"], s["host"], s["in_jurisdiction"]) for s in listed["systems"]] == [
        ("clinic warehouse", "db.health.example", True),
        ("cloud analytics", "analytics.cloud.example", False),
    ]
    with ctx.store.session() as s:
        actions = list(s.scalars(select(AuditEvent.action).where(AuditEvent.subject_id == "health")))
    assert actions == ["system.registered", "system.registered"]
    r = http.delete(f"/v1/agencies/health/systems/{created['id']}", headers=admin)
    assert r.status_code == 200
    assert [s["name"] for s in http.get("/v1/agencies/health/systems", headers=admin).json()["systems"]] == [
        "cloud analytics"
    ]


def test_r8_systems_api_refusals(ctx: BusContext, http: TestClient, agency_factory: Any) -> None:
    _, health = agency_factory("health")
    _, market = agency_factory("market")
    _, auditor = agency_factory("audit-office", roles=("auditor",))
    admin = auth(ctx.admin_key)
    body = {"name": "warehouse", "url": "https://w.health.example/in", "in_jurisdiction": True}
    assert (
        http.post("/v1/agencies/health/systems", headers=auth(health), json=body).json()["code"]
        == "auth.forbidden"
    )
    assert (
        http.post("/v1/agencies/nobody/systems", headers=admin, json=body).json()["code"]
        == "agency.not_found"
    )
    assert http.post("/v1/agencies/health/systems", headers=admin, json=body).status_code == 201
    r = http.post("/v1/agencies/health/systems", headers=admin, json=body)
    assert r.status_code == 409 and r.json()["code"] == "system.exists"
    for bad in (
        {"url": None},
        {"url": "http:///nohost", "name": "x"},
        {"in_jurisdiction": None},
        {"name": ""},
    ):
        r = http.post("/v1/agencies/health/systems", headers=admin, json={**body, **bad})
        assert r.status_code == 422 and r.json()["code"] == "request.invalid", (bad, r.text)
    assert http.get("/v1/agencies/health/systems", headers=auth(health)).status_code == 200  # its own
    assert http.get("/v1/agencies/health/systems", headers=auth(auditor)).status_code == 200
    assert http.get("/v1/agencies/health/systems", headers=auth(market)).json()["code"] == "auth.forbidden"
    assert http.delete("/v1/agencies/health/systems/999", headers=admin).json()["code"] == "system.not_found"


def test_r8_r16_check_egress_uses_the_grantee_systems_and_the_datasets_domestic_flag(
    ctx: BusContext, http: TestClient, agency_factory: Any, dataset_factory: Any
) -> None:
    for a in ("market", "health", "tax"):
        agency_factory(a)
    dataset_factory("market", dataset_id="domestic", domestic_only=True)
    dataset_factory("market", dataset_id="open")
    admin = auth(ctx.admin_key)
    for name, host, inside in (
        ("warehouse", "db.health.example", True),
        ("abroad", "eu.cloud.example", False),
    ):
        http.post(
            "/v1/agencies/health/systems",
            headers=admin,
            json={"name": name, "host": host, "in_jurisdiction": inside},
        )
    http.post(
        "/v1/agencies/tax/systems",
        headers=admin,
        json={"name": "tax db", "host": "db.tax.example", "in_jurisdiction": True},
    )
    with ctx.store.session() as s:
        for gid, ds in (("g-dom", "domestic"), ("g-open", "open")):
            s.add(
                Grant(
                    id=gid,
                    dataset_id=ds,
                    agency_id="health",
                    fields=["licence_no"],
                    scenario_code="S",
                    scenario_description="d",
                    legal_basis="l",
                    status="active",
                )
            )
    with ctx.store.session() as s:
        assert routes_systems.check_egress(s, "postgresql://u@db.health.example/x", "g-dom").allowed
        assert routes_systems.check_egress(s, "https://eu.cloud.example/in", "g-open").allowed
        with pytest.raises(EgressRefused, match="domestic-only") as exc:
            routes_systems.check_egress(s, "https://eu.cloud.example/in", "g-dom")
        assert exc.value.extra["grantee"] == "health"
        with pytest.raises(EgressRefused, match="not of the grantee health"):
            routes_systems.check_egress(s, "postgresql://u@db.tax.example/x", "g-open")
        with pytest.raises(EgressRefused, match="does not exist"):
            routes_systems.check_egress(s, "postgresql://u@db.health.example/x", "g-missing")
