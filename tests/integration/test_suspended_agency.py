"""R15: a suspended agency cannot act on the bus until the admin resumes it; it can still read what
concerns it. Against the whole gateway app, on SQLite and PostgreSQL.

Every call that may change state (any method but GET, HEAD, OPTIONS) by a suspended agency is refused
with ``suspended`` (the data plane's code and status) naming why and who lifts it; the admin's resume
makes the same calls work again at once.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from bus.context import BusContext
from bus.errors import Suspended
from bus.gateway.app import ROUTERS, create_app
from bus.schemas import load_schema
from tests.helpers import catalog_entry, licence_record, licence_schema, poll_until

pytestmark = pytest.mark.integration
PROBLEM = "application/problem+json"
REASON = "suspected leak of licence data"
# the status of the one `suspended` code (bus.errors.Suspended), the same on the data plane
SUSPENDED_STATUS = 423


class Bus:
    """The gateway as agencies see it: one TestClient over the whole app, a key per agency."""

    def __init__(self, ctx: BusContext) -> None:
        self.ctx = ctx
        self.app = create_app(ctx)
        self.http = TestClient(self.app)
        self.keys: dict[str, str] = {"admin": ctx.admin_key}
        self.grants: dict[str, str] = {}  # name -> grant id

    def call(self, who: str, method: str, path: str, **kw: Any) -> Any:
        return self.http.request(method, path, headers={"Authorization": f"Bearer {self.keys[who]}"}, **kw)

    def ok(self, who: str, method: str, path: str, **kw: Any) -> dict[str, Any]:
        r = self.call(who, method, path, **kw)
        assert r.status_code in (200, 201), r.text
        return dict(r.json())

    def agency(self, agency_id: str, *roles: str) -> None:
        body = {"id": agency_id, "name": agency_id, "region": "140900", "roles": list(roles or ("agency",))}
        self.keys[agency_id] = self.ok("admin", "POST", "/v1/agencies", json=body)["api_key"]

    def approved(self, who: str, body: dict[str, Any]) -> None:
        self.ok(who, "POST", "/v1/datasets", json=body)
        self.ok(who, "POST", f"/v1/datasets/{body['id']}/submit")
        self.ok("dmd", "POST", f"/v1/datasets/{body['id']}/review", json={"decision": "approve"})

    def switch(self, action: str, agency_id: str) -> None:
        body = {"kind": "agency", "id": agency_id, "reason": REASON}
        assert self.ok("admin", "POST", f"/v1/emergency/{action}", json=body)["changed"] is True

    def close(self) -> None:
        plane = getattr(self.app.state, "data_plane", None)
        if plane is not None:  # created by the first HTTP publish
            plane.ledger.stop()
            plane.cache.stop()
        self.http.close()


def entry(dataset_id: str, schema: dict[str, Any] | None = None, **sharing: Any) -> dict[str, Any]:
    return catalog_entry(dataset_id, schema, sharing or None)


def grant_body(dataset: str, fields: list[str]) -> dict[str, Any]:
    return {
        "dataset": dataset,
        "fields": fields,
        "scenario": {"code": "check", "description": "verify on inspection"},
        "legal_basis": "Administrative Licensing Law art. 61",
    }


CONDITIONAL = {
    "attribute": "conditional",
    "reason": "personal data",
    "legal_basis": "PIPL art. 13",
    "eligible_agencies": ["psb"],
}


@pytest.fixture
def bus(ctx: BusContext) -> Iterator[Bus]:
    """market owns an approved unconditional and an approved conditional dataset and a draft; psb owns an
    approved dataset, holds an active grant on market-licences and waits for one on market-inspections."""
    b = Bus(ctx)
    b.agency("market")
    b.agency("psb")
    b.agency("dmd", "reviewer")
    b.agency("audit-office", "auditor")
    b.approved("market", entry("market-licences"))
    b.approved("market", entry("market-inspections", **CONDITIONAL))
    b.ok("market", "POST", "/v1/datasets", json=entry("market-draft"))
    b.approved("psb", entry("psb-residents", load_schema("examples/resident")))
    for name, dataset in (("active", "market-licences"), ("pending", "market-inspections")):
        b.grants[name] = b.ok("psb", "POST", "/v1/grants", json=grant_body(dataset, ["licence_no"]))["id"]
    yield b
    b.close()


def refused(r: Any, agency_id: str) -> dict[str, Any]:
    """``suspended``, with why (the recorded reason) and who lifts it (the admin's resume)."""
    assert r.status_code == SUSPENDED_STATUS == Suspended.status, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    body = dict(r.json())
    assert body["code"] == "suspended" and body["status"] == SUSPENDED_STATUS
    assert body["agency"] == agency_id and body["reason"] == REASON and body["lifted_by"] == "admin"
    assert body["suspended_since"]
    assert f"agency {agency_id} is suspended" in body["detail"] and REASON in body["detail"]
    assert "administrator resumes it" in body["detail"] and "/v1/emergency/resume" in body["detail"]
    return body


def v2_schema() -> dict[str, Any]:
    v2 = licence_schema()
    v2["fields"].append({"name": "fax", "type": ["null", "string"], "default": None})
    return v2


def owner_writes(bus: Bus) -> list[tuple[str, str, dict[str, Any]]]:
    """Everything market, as a dataset owner and a consumer, may ordinarily do (retire last)."""
    return [
        ("POST", "/v1/datasets", {"json": entry("market-new")}),
        ("POST", "/v1/datasets/market-draft/submit", {}),
        ("PUT", "/v1/datasets/market-licences/schema", {"json": v2_schema()}),
        ("POST", "/v1/grants", {"json": grant_body("psb-residents", ["id_number", "name"])}),
        ("POST", f"/v1/grants/{bus.grants['pending']}/decision", {"json": {"decision": "approve"}}),
        ("POST", f"/v1/grants/{bus.grants['active']}/revoke", {"json": {"reason": "no longer needed"}}),
        ("POST", "/v1/datasets/market-licences/records", {"json": {"records": [licence_record(1)]}}),
        ("POST", "/v1/datasets/market-inspections/retire", {}),
    ]


def snapshot(bus: Bus) -> dict[str, Any]:
    """What the writes would change, as the admin sees it."""
    datasets = bus.ok("admin", "GET", "/v1/datasets", params={"owner": "market"})["datasets"]
    grants = bus.ok("admin", "GET", "/v1/grants")["grants"]
    return {
        "datasets": sorted((d["id"], d["status"], d["schema_version"]) for d in datasets),
        "grants": sorted((g["id"], g["agency"], g["dataset"], g["status"]) for g in grants),
    }


def test_r15_suspended_agency_cannot_publish_catalogue_submit_grant_or_revoke_until_resumed(
    bus: Bus,
) -> None:
    before = snapshot(bus)
    bus.switch("suspend", "market")
    for method, path, kw in owner_writes(bus):  # refused at once: no waiting for the announcement
        refused(bus.call("market", method, path, **kw), "market")
    assert snapshot(bus) == before  # nothing changed

    # the HTTP publish attempt is an incident too, as on the SDK path
    def publish_incident() -> list[dict[str, Any]]:
        found = bus.ok("admin", "GET", "/v1/incidents")["incidents"]
        return [i for i in found if (i["kind"], i["agency_id"]) == ("suspended", "market")]

    assert (
        poll_until(publish_incident, what="suspended-publish incident")[0]["dataset_id"] == "market-licences"
    )

    bus.switch("resume", "market")
    statuses = [bus.call("market", method, path, **kw).status_code for method, path, kw in owner_writes(bus)]
    assert statuses == [201, 200, 201, 201, 200, 200, 200, 200]
    after = snapshot(bus)
    assert ("market-new", "draft", 1) in after["datasets"] and ("market-draft", "submitted", 1) in after[
        "datasets"
    ]
    assert ("market-licences", "approved", 2) in after["datasets"]
    assert ("market-inspections", "retired", 1) in after["datasets"]


def test_r15_suspended_agency_still_reads_what_concerns_it_but_receives_no_data(bus: Bus) -> None:
    """Reads of its entries, grants and their schemas stay open (to answer the suspension); the data does
    not: a suspended grantee reads no records (the data plane's rule)."""
    bus.switch("suspend", "psb")
    assert bus.ok("psb", "GET", "/v1/datasets/psb-residents")["status"] == "approved"
    assert {d["id"] for d in bus.ok("psb", "GET", "/v1/datasets", params={"owner": "psb"})["datasets"]} == {
        "psb-residents"
    }
    assert bus.ok("psb", "GET", "/v1/datasets/psb-residents/schemas")["current"] == 1
    assert len(bus.ok("psb", "GET", "/v1/grants")["grants"]) == 2
    active = bus.grants["active"]
    assert bus.ok("psb", "GET", f"/v1/grants/{active}")["status"] == "active"
    assert bus.ok("psb", "GET", f"/v1/grants/{active}/schema")["schema"]["type"] == "record"
    r = bus.call("psb", "GET", f"/v1/grants/{active}/records")
    assert r.status_code == SUSPENDED_STATUS and r.json()["code"] == "suspended", r.text
    refused(bus.call("psb", "POST", "/v1/grants", json=grant_body("market-licences", ["status"])), "psb")


def test_r15_suspended_reviewer_and_auditor_cannot_act_but_the_auditor_reads_audit_trail(
    bus: Bus,
) -> None:
    bus.ok("market", "POST", "/v1/datasets/market-draft/submit")
    bus.switch("suspend", "dmd")
    bus.switch("suspend", "audit-office")
    refused(bus.call("dmd", "POST", "/v1/datasets/market-draft/review", json={"decision": "approve"}), "dmd")
    assert bus.ok("admin", "GET", "/v1/datasets/market-draft")["status"] == "submitted"
    refused(bus.call("audit-office", "POST", "/v1/audit/attribute", content=b"ps-abc-def"), "audit-office")
    events = bus.ok("audit-office", "GET", "/v1/audit/events", params={"action": "emergency.*"})["events"]
    assert [(e["action"], e["subject_id"]) for e in events] == [
        ("emergency.suspended", "dmd"),
        ("emergency.suspended", "audit-office"),
    ]
    assert bus.ok("audit-office", "GET", "/v1/audit/verify")["ok"] is True
    assert bus.ok("audit-office", "GET", "/v1/emergency/suspensions")["agencies"] == ["audit-office", "dmd"]
    bus.ok("audit-office", "GET", "/v1/incidents")
    bus.switch("resume", "dmd")
    assert (
        bus.ok("dmd", "POST", "/v1/datasets/market-draft/review", json={"decision": "approve"})["status"]
        == "approved"
    )


def test_r15_every_state_changing_endpoint_refuses_a_suspended_agency(bus: Bus) -> None:
    """Fail closed for every write route of the app, present and future: each non-read route refuses a
    suspended agency (holding every agency role) before anything else is looked at."""
    bus.agency("all-roles", "agency", "reviewer", "auditor", "operator")
    bus.approved("all-roles", entry("all-roles-data", load_schema("examples/clinic")))
    bus.switch("suspend", "all-roles")
    writes = [
        (method, route.path)
        for module in ROUTERS
        for route in importlib.import_module(module).router.routes
        if isinstance(route, APIRoute)
        for method in sorted(route.methods)
        if method not in ("GET", "HEAD", "OPTIONS")
    ]
    assert len(writes) >= 20, writes
    fill = {"dataset_id": "all-roles-data", "incident_id": "1", "agency_id": "all-roles"}
    for method, template in writes:
        path = re.sub(r"{(\w+)}", lambda m: fill.get(m.group(1), "x"), template)
        refused(bus.call("all-roles", method, path, json={"records": []}), "all-roles")
