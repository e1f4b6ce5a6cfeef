"""Grants over HTTP (R5, R7, R10, R12, R13): decisions, refusals with stable codes, lifecycle, audit."""

from __future__ import annotations

import pytest

from bus.lineage.audit import verify
from bus.store.models import AuditEvent
from tests.integration.dataplane_helpers import ALL_FIELDS, api, grant_body


@pytest.fixture
def parties(ctx, agency_factory, dataset_factory):
    market, market_key = agency_factory("market")
    health, health_key = agency_factory("health")
    psb, psb_key = agency_factory("psb")
    tax, tax_key = agency_factory("tax")
    return {
        "keys": {"market": market_key, "health": health_key, "psb": psb_key, "tax": tax_key},
        "open": dataset_factory(market),
        "conditional": dataset_factory(
            health,
            attribute="conditional",
            eligible_agencies=["psb"],
            shareable_fields=["licence_no", "enterprise_name", "phone", "legal_rep_id"],
        ),
        "closed": dataset_factory(market, attribute="none"),
        "draft": dataset_factory(market, status="draft"),
    }


def test_r10_unconditional_request_is_active_at_once_and_audited(ctx, bus_stack, parties) -> None:
    with api(bus_stack, parties["keys"]["psb"]) as psb:
        resp = psb.post("/v1/grants", json=grant_body(parties["open"], ["licence_no", "phone"]))
        assert resp.status_code == 201, resp.text
        g = resp.json()
        assert g["status"] == "active" and g["fields"] == ["licence_no", "phone"]
        assert g["scenario"]["code"] == "licence-check" and g["agency"] == "psb"
        assert psb.get(f"/v1/grants/{g['id']}").json()["status"] == "active"
        assert [x["id"] for x in psb.get("/v1/grants").json()["grants"]] == [g["id"]]
    with ctx.store.session() as s:
        actions = [e.action for e in s.query(AuditEvent).filter(AuditEvent.subject_id == g["id"])]
    assert actions == ["grant.requested"]
    assert verify(ctx.store)["ok"]


def test_r10_conditional_request_waits_for_the_owner_then_is_approved(ctx, bus_stack, parties) -> None:
    with api(bus_stack, parties["keys"]["psb"]) as psb, api(bus_stack, parties["keys"]["health"]) as health:
        g = psb.post("/v1/grants", json=grant_body(parties["conditional"], ["licence_no", "phone"])).json()
        assert g["status"] == "pending"
        # only the owner decides (R10)
        forbidden = psb.post(f"/v1/grants/{g['id']}/decision", json={"decision": "approve"})
        assert forbidden.status_code == 403 and forbidden.json()["code"] == "auth.forbidden"
        ok = health.post(f"/v1/grants/{g['id']}/decision", json={"decision": "approve", "reason": "duty ok"})
        assert ok.status_code == 200 and ok.json()["status"] == "active"
        again = health.post(f"/v1/grants/{g['id']}/decision", json={"decision": "deny"})
        assert again.status_code == 409 and again.json()["code"] == "catalog.bad_state"
        assert [x["id"] for x in health.get("/v1/grants", params={"role": "owner"}).json()["grants"]] == [
            g["id"]
        ]


REFUSALS = [
    ("R5 not shared", "closed", {}, "psb", 403, "sharing.not_shared"),
    ("R7 no scenario", "open", {"scenario": None}, "psb", 422, "grant.scenario_required"),
    (
        "R7 scenario without description",
        "open",
        {"scenario": {"code": "x"}},
        "psb",
        422,
        "grant.scenario_required",
    ),
    ("R7 no legal basis", "open", {"legal_basis": None}, "psb", 422, "grant.legal_basis_required"),
    (
        "R5 fields outside the shareable set",
        "conditional",
        {"fields": ["licence_no", "address"]},
        "psb",
        403,
        "sharing.fields_not_shareable",
    ),
    (
        "R5 requester not eligible",
        "conditional",
        {"fields": ["licence_no"]},
        "tax",
        403,
        "sharing.not_eligible",
    ),
    ("R13 dataset not approved", "draft", {}, "psb", 409, "dataset.not_approved"),
]


@pytest.mark.parametrize(
    ("rule", "dataset", "change", "who", "status", "code"), REFUSALS, ids=[r[0] for r in REFUSALS]
)
def test_refused_requests_carry_stable_codes_and_are_audited(
    ctx, bus_stack, parties, rule, dataset, change, who, status, code
) -> None:
    with api(bus_stack, parties["keys"][who]) as client:
        body = {**grant_body(parties[dataset]), **change}
        resp = client.post("/v1/grants", json=body)
    assert resp.status_code == status, resp.text
    problem = resp.json()
    assert problem["code"] == code and problem["detail"]
    assert resp.headers["content-type"].startswith("application/problem+json")
    with ctx.store.session() as s:
        refused = [e.data["code"] for e in s.query(AuditEvent).filter(AuditEvent.action == "grant.refused")]
    assert refused == [code]


def test_r12_unmasked_fields_always_need_the_owner(bus_stack, parties) -> None:
    with api(bus_stack, parties["keys"]["psb"]) as psb:
        g = psb.post(
            "/v1/grants", json=grant_body(parties["open"], ALL_FIELDS, unmasked_fields=["legal_rep_id"])
        ).json()
    assert g["status"] == "pending" and g["unmasked_fields"] == ["legal_rep_id"]


def test_revocation_by_owner_or_admin_only_and_view_schema_for_the_grantee(ctx, bus_stack, parties) -> None:
    with (
        api(bus_stack, parties["keys"]["psb"]) as psb,
        api(bus_stack, parties["keys"]["tax"]) as tax,
        api(bus_stack, ctx.admin_key) as admin,
    ):
        g = psb.post("/v1/grants", json=grant_body(parties["open"], ["licence_no", "legal_rep_id"])).json()
        view = psb.get(f"/v1/grants/{g['id']}/schema").json()["schema"]
        assert [(f["name"], f["masking"]) for f in view["fields"]] == [
            ("licence_no", "raw"),
            ("legal_rep_id", "pseudonym"),
        ]
        assert tax.get(f"/v1/grants/{g['id']}/schema").status_code == 403
        assert psb.post(f"/v1/grants/{g['id']}/revoke", json={}).json()["code"] == "auth.forbidden"
        revoked = admin.post(f"/v1/grants/{g['id']}/revoke", json={"reason": "audit finding"})
        assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
        read = psb.get(f"/v1/grants/{g['id']}/records")
        assert read.status_code == 409 and read.json()["code"] == "grant.not_active"


def test_grants_expire_at_valid_until(ctx, bus_stack, parties) -> None:
    from datetime import UTC, datetime, timedelta

    from bus.grants.service import expire_due
    from bus.store.models import Grant

    with api(bus_stack, parties["keys"]["psb"]) as psb:
        g = psb.post("/v1/grants", json=grant_body(parties["open"], ["licence_no"])).json()
        with ctx.store.session() as s:
            s.get(Grant, g["id"]).valid_until = datetime.now(UTC) - timedelta(seconds=1)
        # even before the sweep marks it expired, it is not readable
        assert psb.get(f"/v1/grants/{g['id']}/records").json()["code"] == "grant.not_active"
        expire_due(ctx)
        assert psb.get(f"/v1/grants/{g['id']}").json()["status"] == "expired"
    with ctx.store.session() as s:
        assert (
            s.query(AuditEvent)
            .filter(AuditEvent.action == "grant.expired", AuditEvent.subject_id == g["id"])
            .count()
            == 1
        )
