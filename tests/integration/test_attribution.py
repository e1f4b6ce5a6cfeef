"""R8: a leaked copy is attributed to the grant its pseudonyms were issued to (and to no other)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from bus.cli import app as cli
from bus.context import BusContext
from bus.gateway import problems, routes_attribution
from bus.policy.projection import pseudonymiser
from bus.policy.pseudonyms import grant_key, grant_tag
from bus.store.models import AuditEvent, DeliveryLineage, Grant
from tests.helpers import licence_record

pytestmark = pytest.mark.integration
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def http(ctx: BusContext) -> TestClient:
    app = FastAPI()
    app.state.ctx = ctx
    problems.install(app)
    app.include_router(routes_attribution.router)
    return TestClient(app)


@pytest.fixture
def world(ctx: BusContext, agency_factory: Any, dataset_factory: Any) -> dict[str, Any]:
    """Two grants on market-licences (health and tax), each with deliveries on record."""
    keys = {a: agency_factory(a)[1] for a in ("market", "health", "tax")}
    keys["auditor"] = agency_factory("audit-office", roles=("auditor",))[1]
    dataset_factory("market", dataset_id="market-licences")
    with ctx.store.session() as s:
        for gid, agency, scenario in (("g-health", "health", "H-INSPECT"), ("g-tax", "tax", "T-AUDIT")):
            s.add(
                Grant(
                    id=gid,
                    dataset_id="market-licences",
                    agency_id=agency,
                    fields=["credit_code", "legal_rep_id"],
                    scenario_code=scenario,
                    scenario_description=f"{scenario} duty",
                    legal_basis="law",
                    status="active",
                    valid_until=T0 + timedelta(days=365),
                )
            )
        s.flush()
        for i, gid in enumerate(("g-health", "g-tax")):
            s.add_all(
                DeliveryLineage(
                    record_id=f"r{k}",
                    grant_id=gid,
                    dataset_id="market-licences",
                    agency_id=gid[2:],
                    scenario_code="x",
                    delivered_at=T0 + timedelta(hours=k + i),
                )
                for k in range(3)
            )
    return keys


def delivered(ctx: BusContext, grant_id: str, i: int) -> dict[str, Any]:
    """Record i as delivered under a grant: the sensitive id pseudonymised with the grant's key."""
    ps = pseudonymiser(grant_key(ctx.master_secret, grant_id), grant_tag(ctx.master_secret, grant_id))
    rec = licence_record(i)
    return {"credit_code": rec["credit_code"], "legal_rep_id": ps(rec["legal_rep_id"])}


def post(http: TestClient, key: str, content: str | bytes, ctype: str = "application/json") -> Any:
    return http.post(
        "/v1/audit/attribute",
        content=content,
        headers={"Authorization": f"Bearer {key}", "Content-Type": ctype},
    )


def test_r8_a_leaked_record_is_attributed_to_the_right_one_of_two_grants(
    ctx: BusContext, http: TestClient, world: dict
) -> None:
    leak = [delivered(ctx, "g-tax", i) for i in range(4)]
    r = post(http, world["auditor"], json.dumps(leak))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["attributed"] is True and body["pseudonyms_found"] == 4 and body["records"] == 4
    [g] = body["grants"]
    assert (g["grant_id"], g["agency_id"], g["dataset_id"]) == ("g-tax", "tax", "market-licences")
    assert g["scenario"] == {"code": "T-AUDIT", "description": "T-AUDIT duty"}
    assert g["fields"] == ["legal_rep_id"] and g["pseudonyms"] == 4 and g["verified"] is None
    assert g["deliveries"]["count"] == 3
    assert g["deliveries"]["first_at"].startswith("2026-03-01T10:00") and g["valid_until"].startswith(
        "2027-03-01"
    )
    assert "grant g-tax (agency tax" in body["summary"]
    with ctx.store.session() as s:
        ev = s.scalar(select(AuditEvent).where(AuditEvent.action == "leak.attributed"))
    assert ev is not None and ev.actor == "audit-office" and ev.data["grants"] == ["g-tax"]


def test_r8_original_values_prove_the_attribution(ctx: BusContext, http: TestClient, world: dict) -> None:
    leak = {
        "records": [delivered(ctx, "g-health", 1), delivered(ctx, "g-health", 2)],
        "originals": [licence_record(1)["legal_rep_id"], "some unrelated value"],
    }
    g = post(http, world["auditor"], json.dumps(leak)).json()["grants"][0]
    assert g["grant_id"] == "g-health" and g["verified"] is True and g["verified_pseudonyms"] == 1
    wrong = {"records": leak["records"], "originals": ["140900000000000000"]}
    g = post(http, world["auditor"], json.dumps(wrong)).json()["grants"][0]
    assert g["verified"] is False and g["verified_pseudonyms"] == 0


def test_r8_a_mixed_leak_names_both_grants(ctx: BusContext, http: TestClient, world: dict) -> None:
    lines = "\n".join(
        json.dumps(r)
        for r in (delivered(ctx, "g-health", 1), delivered(ctx, "g-tax", 1), delivered(ctx, "g-tax", 2))
    )
    body = post(http, world["auditor"], lines, "application/x-ndjson").json()
    assert [(g["grant_id"], g["pseudonyms"]) for g in body["grants"]] == [("g-tax", 2), ("g-health", 1)]


def test_r8_plain_text_exports_are_scanned_too(ctx: BusContext, http: TestClient, world: dict) -> None:
    rec = delivered(ctx, "g-health", 7)
    csv = f"credit_code,legal_rep_id\n{rec['credit_code']},{rec['legal_rep_id']}\n"
    body = post(http, world["auditor"], csv, "text/csv").json()
    assert [g["grant_id"] for g in body["grants"]] == ["g-health"]


@pytest.mark.parametrize(
    ("content", "summary"),
    [
        (json.dumps(licence_record(1)), "no bus pseudonym"),
        (json.dumps({"x": "ps-aaaaaaaa-aaaaaaaaaaaaaaaaaaaa"}), "none was issued by this bus"),
    ],
)
def test_r8_data_without_our_pseudonyms_is_not_attributed(
    http: TestClient, world: dict, content: str, summary: str
) -> None:
    body = post(http, world["auditor"], content).json()
    assert body["attributed"] is False and body["grants"] == [] and summary in body["summary"]


def test_r8_attribution_is_for_auditors(ctx: BusContext, http: TestClient, world: dict) -> None:
    r = post(http, world["health"], json.dumps(delivered(ctx, "g-health", 1)))
    assert r.status_code == 403 and r.json()["code"] == "auth.forbidden"
    assert post(http, ctx.admin_key, json.dumps(delivered(ctx, "g-health", 1))).status_code == 200
    r = post(http, world["auditor"], "   ")
    assert r.status_code == 422 and r.json()["code"] == "request.invalid"
    r = post(http, world["auditor"], json.dumps({"records": [], "originals": "x"}))
    assert r.status_code == 422


def test_r8_cli_attributes_a_leaked_file(
    ctx: BusContext, http: TestClient, world: dict, serve_app: Any, tmp_path: Path
) -> None:
    url = serve_app(http.app)
    leak = tmp_path / "leak.jsonl"
    leak.write_text("".join(json.dumps(delivered(ctx, "g-health", i)) + "\n" for i in range(3)))
    runner = CliRunner()
    auth = ["--url", url, "--key", world["auditor"]]
    r = runner.invoke(cli, ["attribute", str(leak), "--json", *auth])
    assert r.exit_code == 0, r.output
    assert [g["grant_id"] for g in json.loads(r.stdout)["grants"]] == ["g-health"]
    r = runner.invoke(
        cli, ["attribute", str(leak), "--original", licence_record(2)["legal_rep_id"], "--json", *auth]
    )
    assert json.loads(r.stdout)["grants"][0]["verified"] is True
    r = runner.invoke(cli, ["attribute", str(leak), *auth])
    assert r.exit_code == 0 and "g-health" in r.stdout and "H-INSPECT" in r.stdout
    clean = tmp_path / "clean.json"
    clean.write_text(json.dumps(licence_record(1)))
    r = runner.invoke(cli, ["attribute", str(clean), *auth])
    assert r.exit_code == 1 and "no bus pseudonym" in r.stdout
    assert runner.invoke(cli, ["attribute", str(tmp_path / "missing.json"), *auth]).exit_code == 2
