"""R11 over HTTP: analysis rules, operation requests and their refusals, decisions, lifecycle, dry runs."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from bus.gateway.app import create_app
from bus.lineage.audit import verify
from bus.store.models import AuditEvent, Dataset, Grant
from tests.integration.operations_helpers import approved_operation, operation_body, rule_body


@pytest.fixture
def settings(settings):  # type: ignore[no-untyped-def]
    """The tests' rules use k=3: the bus floor is lowered to 2 here."""
    return settings.model_copy(update={"min_group_size": 2})


@pytest.fixture
def parties(ctx, agency_factory, dataset_factory) -> dict[str, Any]:
    market, market_key = agency_factory("market")
    _, oper_key = agency_factory("oper", roles=("operator",))
    _, psb_key = agency_factory("psb")
    source = dataset_factory(market, attribute="none")
    app = create_app(ctx)

    def client(key: str) -> TestClient:
        return TestClient(app, headers={"Authorization": f"Bearer {key}"})

    return {"source": source, "market": client(market_key), "oper": client(oper_key), "psb": client(psb_key)}


def test_r11_rule_put_by_owner_versioned_visible_and_audited(ctx, parties) -> None:
    market, oper, psb, source = parties["market"], parties["oper"], parties["psb"], parties["source"]
    assert oper.get(f"/v1/datasets/{source}/analysis-rule").json()["code"] == "operation.no_rule"
    first = market.put(f"/v1/datasets/{source}/analysis-rule", json=rule_body())
    assert first.status_code == 200, first.text
    second = market.put(f"/v1/datasets/{source}/analysis-rule", json=rule_body(min_group_size=5))
    assert (first.json()["version"], second.json()["version"]) == (1, 2)
    shown = oper.get(f"/v1/datasets/{source}/analysis-rule").json()
    assert shown["min_group_size"] == 5 and shown["subject_field"] == "credit_code"
    assert psb.get(f"/v1/datasets/{source}/analysis-rule").json()["code"] == "auth.forbidden"
    assert (
        oper.put(f"/v1/datasets/{source}/analysis-rule", json=rule_body()).json()["code"] == "auth.forbidden"
    )
    with ctx.store.session() as s:
        actions = [e.action for e in s.query(AuditEvent).filter(AuditEvent.subject_id == source)]
    assert actions.count("analysis_rule.put") == 2 and "analysis_rule.refused" in actions


@pytest.mark.parametrize(
    "change,code",
    [
        ({"dimensions": ["region_code", "legal_rep_id"]}, "analysis_rule.sensitive_field"),
        ({"dimensions": ["credit_code"]}, "analysis_rule.subject_in_dimensions"),
        ({"min_group_size": 1}, "analysis_rule.k_below_floor"),
        ({"dimensions": ["county"]}, "analysis_rule.unknown_field"),
        ({"measures": []}, "analysis_rule.invalid"),
        ({"min_group_size": 0}, "request.invalid"),
    ],
)
def test_r11_rule_refusals_over_http(parties, change: dict[str, Any], code: str) -> None:
    resp = parties["market"].put(f"/v1/datasets/{parties['source']}/analysis-rule", json=rule_body(**change))
    assert resp.status_code in (409, 422) and resp.json()["code"] == code, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize(
    "change,code",
    [
        ({"group_by": ["credit_code"]}, "operation.subject_output"),
        ({"k": 1}, "operation.k_too_small"),
        ({"group_by": ["phone"]}, "operation.field_not_allowed"),
        ({"measures": [{"field": "registered_capital", "fn": "count"}]}, "operation.field_not_allowed"),
        ({"window_seconds": 60}, "operation.window_not_allowed"),
        ({"epsilon": 5.0}, "operation.invalid"),
        ({"legal_basis": None}, "grant.legal_basis_required"),
        ({"scenario": None}, "grant.scenario_required"),
    ],
)
def test_r11_operation_refusals_over_http(parties, change: dict[str, Any], code: str) -> None:
    parties["market"].put(f"/v1/datasets/{parties['source']}/analysis-rule", json=rule_body())
    resp = parties["oper"].post("/v1/operations", json=operation_body(parties["source"], **change))
    assert resp.status_code in (403, 409, 422) and resp.json()["code"] == code, resp.text


def test_r11_no_rule_no_operation_and_only_operators_request(parties) -> None:
    body = operation_body(parties["source"])
    assert parties["oper"].post("/v1/operations", json=body).json()["code"] == "operation.no_rule"
    parties["market"].put(f"/v1/datasets/{parties['source']}/analysis-rule", json=rule_body())
    assert parties["psb"].post("/v1/operations", json=body).json()["code"] == "auth.forbidden"


def test_r11_difference_attack_refused_unless_noise(parties) -> None:
    market, oper, source = parties["market"], parties["oper"], parties["source"]
    market.put(f"/v1/datasets/{source}/analysis-rule", json=rule_body())
    assert oper.post("/v1/operations", json=operation_body(source)).status_code == 201
    narrowed = operation_body(source, filters=[{"field": "status", "op": "in", "value": ["active"]}])
    resp = oper.post("/v1/operations", json=narrowed)
    assert resp.status_code == 409 and resp.json()["code"] == "operation.difference_attack"
    assert oper.post("/v1/operations", json={**narrowed, "epsilon": 0.5}).status_code == 201


def test_r11_approval_catalogues_derived_product_and_grant(ctx, parties) -> None:
    market, oper, source = parties["market"], parties["oper"], parties["source"]
    market.put(f"/v1/datasets/{source}/analysis-rule", json=rule_body())
    pending = oper.post("/v1/operations", json=operation_body(source, sharing="unconditional")).json()
    assert (
        oper.post(f"/v1/operations/{pending['id']}/decision", json={"decision": "approve"}).json()["code"]
        == "auth.forbidden"
    )
    op = approved_operation(market, oper, source)
    assert op["status"] == "active" and op["derived_dataset"] == f"derived-{op['id']}" and op["grant"]
    with ctx.store.session() as s:
        ds = s.get(Dataset, op["derived_dataset"])
        grant = s.get(Grant, op["grant"])
        assert ds.owner_id == "oper" and ds.category == "application" and ds.status == "approved"
        assert ds.sharing_attribute == "none"  # never wider than the not-shared source
        assert f"derived-from:{source}" in ds.tags
        assert grant.agency_id == "oper" and grant.status == "active"
    assert oper.get(f"/v1/operations/{op['id']}").json()["grant"] == op["grant"]
    assert [o["id"] for o in market.get("/v1/operations").json()["operations"]][0] == op["id"]
    assert parties["psb"].get(f"/v1/operations/{op['id']}").json()["code"] == "auth.forbidden"
    schema = oper.get(f"/v1/grants/{op['grant']}/schema").json()["schema"]
    names = [f["name"] for f in schema["fields"]]
    assert names[:3] == ["window_start", "window_end", "region_code"]
    assert "count_licence_no" in names and "credit_code" not in names


def test_r11_lifecycle_suspend_resume_revoke_audited(ctx, parties) -> None:
    market, oper, source = parties["market"], parties["oper"], parties["source"]
    market.put(f"/v1/datasets/{source}/analysis-rule", json=rule_body())
    op = approved_operation(market, oper, source)
    oid = op["id"]
    assert oper.post(f"/v1/operations/{oid}/suspend").json()["code"] == "auth.forbidden"
    assert (
        market.post(f"/v1/operations/{oid}/suspend", json={"reason": "check"}).json()["status"] == "suspended"
    )
    with ctx.store.session() as s:
        assert s.get(Grant, op["grant"]).status == "suspended"
    assert market.post(f"/v1/operations/{oid}/resume").json()["status"] == "active"
    assert oper.post(f"/v1/operations/{oid}/revoke").json()["status"] == "revoked"
    again = market.post(f"/v1/operations/{oid}/revoke")
    assert again.status_code == 409 and again.json()["code"] == "operation.bad_state"
    with ctx.store.session() as s:
        assert s.get(Grant, op["grant"]).status == "revoked"
        actions = [e.action for e in s.query(AuditEvent).filter(AuditEvent.subject_id == oid)]
    assert actions == [
        "operation.requested",
        "operation.approved",
        "operation.suspended",
        "operation.resumed",
        "operation.revoked",
    ]
    assert verify(ctx.store)["ok"]
    assert market.get("/v1/operations/op-nope").json()["code"] == "operation.not_found"


def test_r11_dry_run_on_generated_data_spends_nothing(ctx, parties) -> None:
    market, oper, source = parties["market"], parties["oper"], parties["source"]
    market.put(f"/v1/datasets/{source}/analysis-rule", json=rule_body())
    op = oper.post("/v1/operations", json=operation_body(source, epsilon=0.5, window_seconds=3600)).json()
    resp = oper.post(f"/v1/operations/{op['id']}/dry-run")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["synthetic"] is True and body["rows"] and body["cost"]["epsilon_per_window"] == 0.5
    assert body["cost"]["epsilon_per_day"] == pytest.approx(0.5 * 24)
    assert {r["region_code"] for r in body["rows"]} <= {"A", "B", "C", "D"}
    for r in body["rows"]:
        assert 0 <= r["max_registered_capital"] <= 2_000_000
    with ctx.store.session() as s:
        assert s.query(AuditEvent).filter(AuditEvent.action == "operation.dry_run").count() == 1
    from bus.store.models import PrivacyBudget

    with ctx.store.session() as s:
        assert s.query(PrivacyBudget).count() == 0


def test_r11_budget_refused_at_request_when_spent(ctx, parties) -> None:
    from bus.operations import budget

    market, oper, source = parties["market"], parties["oper"], parties["source"]
    market.put(f"/v1/datasets/{source}/analysis-rule", json=rule_body())
    with ctx.store.session() as s:
        assert budget.debit(s, "oper", source, 0.9, 1.0)
    resp = oper.post("/v1/operations", json=operation_body(source, epsilon=0.5))
    assert resp.status_code == 409 and resp.json()["code"] == "operation.budget_exhausted"


def test_r11_unauthenticated_calls_refused(parties) -> None:
    anon = TestClient(parties["market"].app)
    assert anon.post("/v1/operations", json={}).json()["code"] == "auth.missing"
    assert (
        anon.put(f"/v1/datasets/{parties['source']}/analysis-rule", json={}).json()["code"] == "auth.missing"
    )


def test_r11_expired_operation_ends_with_its_grant(ctx, parties) -> None:
    from datetime import UTC, datetime, timedelta

    from bus.operations import service
    from bus.store.models import Operation

    market, oper, source = parties["market"], parties["oper"], parties["source"]
    market.put(f"/v1/datasets/{source}/analysis-rule", json=rule_body())
    op = approved_operation(market, oper, source)
    assert service.expire_due(ctx) == []
    with ctx.store.session() as s:
        s.get(Operation, op["id"]).valid_until = datetime.now(UTC) - timedelta(seconds=1)
    assert service.expire_due(ctx) == [op["id"]]
    assert oper.get(f"/v1/operations/{op['id']}").json()["status"] == "expired"
    with ctx.store.session() as s:
        assert s.get(Grant, op["grant"]).status == "expired"
    assert market.post(f"/v1/operations/{op['id']}/resume").json()["code"] == "operation.bad_state"


def test_r11_r10_derived_product_is_itself_shareable(ctx, agency_factory, dataset_factory, parties) -> None:
    """A derived product of an unconditional source may be unconditional: other agencies request it like
    any dataset (R10), and it never names its source's records."""
    market = parties["market"]
    open_source = dataset_factory("market")
    market.put(f"/v1/datasets/{open_source}/analysis-rule", json=rule_body())
    op = approved_operation(market, parties["oper"], open_source)
    fields = ["window_start", "window_end", "region_code", "count_licence_no"]
    body = {
        "dataset": op["derived_dataset"],
        "fields": fields,
        "legal_basis": "Statistics Law art. 7",
        "scenario": {"code": "county-report", "description": "county business report"},
    }
    resp = parties["psb"].post("/v1/grants", json=body)
    assert resp.status_code == 201 and resp.json()["status"] == "active", resp.text
