"""The catalogue API (R1-R6, R13, R14, R16) against the real gateway app, on SQLite and PostgreSQL."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from bus.catalog import events, overlap
from bus.context import BusContext
from bus.errors import RecollectionOverlap
from bus.exchange.kafka import assign_from_committed, new_consumer
from bus.exchange.keyring import signing_secret_of
from bus.gateway.app import create_app
from bus.keys import hash_key, signing_secret_for
from bus.schemas import load_schema
from bus.store.models import Agency, AuditEvent, SchemaVersion
from tests.helpers import licence_schema, poll_until

pytestmark = pytest.mark.integration
PROBLEM = "application/problem+json"
REASON, LEGAL = "contains personal data", "Personal Information Protection Law, Art. 13"


class Bus:
    """The gateway as agencies see it: one TestClient, a key per agency."""

    def __init__(self, ctx: BusContext) -> None:
        self.ctx = ctx
        self.http = TestClient(create_app(ctx))
        self.keys: dict[str, str] = {"admin": ctx.admin_key}

    def h(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who]}"}

    def call(self, who: str | None, method: str, path: str, **kw: Any) -> Any:
        return self.http.request(method, path, headers=self.h(who) if who else {}, **kw)

    def agency(self, agency_id: str, *roles: str, region: str = "140900") -> dict[str, Any]:
        r = self.call(
            "admin",
            "POST",
            "/v1/agencies",
            json={
                "id": agency_id,
                "name": f"{agency_id} bureau",
                "region": region,
                "roles": list(roles or ("agency",)),
            },
        )
        assert r.status_code == 201, r.text
        self.keys[agency_id] = r.json()["api_key"]
        return dict(r.json())

    def create(self, who: str, body: dict[str, Any]) -> Any:
        return self.call(who, "POST", "/v1/datasets", json=body)

    def approved(self, who: str, body: dict[str, Any], reviewer: str = "dmd") -> dict[str, Any]:
        assert self.create(who, body).status_code == 201
        assert self.call(who, "POST", f"/v1/datasets/{body['id']}/submit").status_code == 200
        r = self.call(reviewer, "POST", f"/v1/datasets/{body['id']}/review", json={"decision": "approve"})
        assert r.status_code == 200, r.text
        return dict(r.json())


def entry(dataset_id: str = "market-licences", **over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": dataset_id,
        "title": "Business licences",
        "description": "every licence issued",
        "category": "basic",
        "grade": "general",
        "tags": ["enterprise"],
        "domestic_only": True,
        "sharing": {"attribute": "unconditional"},
        "schema": licence_schema(),
    }
    body.update(over)
    return body


def conditional(**sharing: Any) -> dict[str, Any]:
    return {"attribute": "conditional", "reason": REASON, "legal_basis": LEGAL, **sharing}


@pytest.fixture
def bus(ctx: BusContext) -> Iterator[Bus]:
    b = Bus(ctx)
    b.agency("market")
    b.agency("psb")
    b.agency("health")
    b.agency("dmd", "reviewer")
    b.agency("audit-office", "auditor")
    yield b
    b.http.close()


def problem(r: Any, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    body = r.json()
    assert (
        body["code"] == code and body["status"] == status and body["detail"] and body["type"].endswith(code)
    )
    return dict(body)


# --- identity -------------------------------------------------------------------------------------
def test_r14_agency_gets_a_key_once_stored_only_as_a_hash(bus: Bus, ctx: BusContext) -> None:
    created = bus.agency("tax", "agency", "operator", region="140902")
    assert set(created) == {"id", "name", "region", "level", "roles", "api_key", "created_at"}
    assert created["roles"] == ["agency", "operator"] and created["level"] == "city"
    key = created["api_key"]
    with ctx.store.session() as s:
        row = s.get(Agency, "tax")
        assert (
            row is not None
            and row.key_hash == hash_key(key)
            and key not in (row.key_hash, row.signing_secret)
        )
        # stored wrapped under the bus's master secret (sealed records), never the secret itself
        assert signing_secret_for(key).hex() not in row.signing_secret
        assert signing_secret_of(ctx.master_secret, row.id, row.signing_secret) == signing_secret_for(key)
    shown = bus.call("admin", "GET", "/v1/agencies/tax").json()
    assert "api_key" not in shown and shown["key_prefix"] == key[:10]
    assert bus.call("tax", "GET", "/v1/agencies/tax").status_code == 200  # the key works


def test_r14_agency_creation_refusals(bus: Bus) -> None:
    body = {"id": "tax", "name": "Tax bureau", "region": "140900", "roles": ["agency"]}
    problem(bus.call(None, "POST", "/v1/agencies", json=body), 401, "auth.missing")
    problem(
        bus.http.post("/v1/agencies", json=body, headers={"Authorization": "Bearer nope"}),
        401,
        "auth.invalid",
    )
    problem(
        bus.http.post("/v1/agencies", json=body, headers={"Authorization": "Basic x"}), 401, "auth.invalid"
    )
    problem(bus.call("market", "POST", "/v1/agencies", json=body), 403, "auth.forbidden")
    problem(bus.call("dmd", "POST", "/v1/agencies", json=body), 403, "auth.forbidden")
    problem(bus.call("admin", "POST", "/v1/agencies", json={**body, "id": "market"}), 409, "agency.exists")
    for bad in (
        {"roles": ["admin"]},
        {"roles": []},
        {"id": "Tax Bureau"},
        {"region": ""},
        {"level": "galaxy"},
        {"name": ""},
        {"extra": 1},
    ):
        problem(bus.call("admin", "POST", "/v1/agencies", json={**body, **bad}), 422, "request.invalid")


def test_r14_who_may_read_agencies(bus: Bus) -> None:
    for who in ("admin", "audit-office"):
        r = bus.call(who, "GET", "/v1/agencies")
        assert r.status_code == 200
        assert {a["id"] for a in r.json()} == {"market", "psb", "health", "dmd", "audit-office"}
        assert all("api_key" not in a for a in r.json())
    problem(bus.call("market", "GET", "/v1/agencies"), 403, "auth.forbidden")
    problem(bus.call("market", "GET", "/v1/agencies/psb"), 403, "auth.forbidden")
    assert bus.call("audit-office", "GET", "/v1/agencies/psb").json()["roles"] == ["agency"]
    problem(bus.call("admin", "GET", "/v1/agencies/nobody"), 404, "agency.not_found")


ENDPOINTS = [
    ("POST", "/v1/agencies"),
    ("GET", "/v1/agencies"),
    ("GET", "/v1/agencies/market"),
    ("POST", "/v1/datasets"),
    ("GET", "/v1/datasets"),
    ("GET", "/v1/datasets/x"),
    ("POST", "/v1/datasets/x/submit"),
    ("POST", "/v1/datasets/x/review"),
    ("POST", "/v1/datasets/x/retire"),
    ("PUT", "/v1/datasets/x/schema"),
    ("GET", "/v1/datasets/x/schema"),
    ("GET", "/v1/datasets/x/schemas"),
    ("GET", "/v1/catalog/stats"),
    ("GET", "/v1/audit/verify"),
    ("GET", "/v1/audit/events"),
]


@pytest.mark.parametrize(("method", "path"), ENDPOINTS, ids=[f"{m} {p}" for m, p in ENDPOINTS])
def test_r14_every_catalogue_endpoint_authenticates(bus: Bus, method: str, path: str) -> None:
    problem(bus.http.request(method, path, json={}), 401, "auth.missing")
    problem(
        bus.http.request(method, path, json={}, headers={"Authorization": "Bearer dbk_wrong"}),
        401,
        "auth.invalid",
    )


# --- entries and validation -----------------------------------------------------------------------
def test_r1_entry_is_created_as_a_draft_owned_by_the_caller(bus: Bus) -> None:
    r = bus.create("market", entry())
    assert r.status_code == 201, r.text
    d = r.json()
    assert d["owner"] == "market" and d["status"] == "draft" and d["schema_version"] == 1
    assert d["schema"] == licence_schema() and d["domestic_only"] is True and d["tags"] == ["enterprise"]
    assert d["sharing"] == {
        "attribute": "unconditional",
        "reason": None,
        "legal_basis": None,
        "shareable_fields": None,
        "eligible_agencies": None,
    }
    for key in ("created_at", "submitted_at", "reviewed_at", "reviewed_by", "review_comment", "overlap"):
        assert key in d
    assert bus.call("market", "GET", "/v1/datasets/market-licences").json() == d
    problem(bus.create("market", entry()), 409, "catalog.exists")


def _bad_sensitivity() -> dict[str, Any]:
    s = licence_schema()
    s["fields"][0]["sensitivity"] = "top-secret"
    return s


# (rule id, case, changes to the entry, expected status, expected code, words in the detail)
VALIDATION: list[tuple[str, str, dict[str, Any], int, str, str]] = [
    (
        "r3",
        "unparsable schema text",
        {"schema": '{"type": "record"'},
        422,
        "catalog.invalid_schema",
        "not valid JSON",
    ),
    (
        "r3",
        "schema that is not a record",
        {"schema": {"type": "array", "items": "string"}},
        422,
        "catalog.invalid_schema",
        "must be an Avro record",
    ),
    (
        "r3",
        "schema with an unknown type",
        {"schema": {"type": "record", "name": "R", "fields": [{"name": "a", "type": "varchar"}]}},
        422,
        "catalog.invalid_schema",
        "not a valid Avro schema",
    ),
    (
        "r3",
        "unknown sensitivity value",
        {"schema": _bad_sensitivity()},
        422,
        "catalog.invalid_schema",
        'unknown sensitivity "top-secret"',
    ),
    (
        "r6",
        "conditional without reason",
        {"sharing": conditional(reason=None, shareable_fields=["status"])},
        422,
        "catalog.reason_required",
        "sharing.reason",
    ),
    (
        "r6",
        "conditional without legal basis",
        {"sharing": conditional(legal_basis=" ", eligible_agencies=["psb"])},
        422,
        "catalog.reason_required",
        "sharing.legal_basis",
    ),
    (
        "r6",
        "not shared without reason and basis",
        {"sharing": {"attribute": "none"}},
        422,
        "catalog.reason_required",
        "sharing.reason and sharing.legal_basis",
    ),
    (
        "r3",
        "core grade unconditional",
        {"grade": "core"},
        422,
        "catalog.core_not_unconditional",
        "core-grade data cannot be shared unconditionally",
    ),
    (
        "r5",
        "conditional without conditions",
        {"sharing": conditional()},
        422,
        "catalog.conditions_required",
        "shareable_fields",
    ),
    (
        "r5",
        "shareable field not in the schema",
        {"sharing": conditional(shareable_fields=["status", "salary"])},
        422,
        "catalog.unknown_field",
        "'salary'",
    ),
    (
        "r5",
        "eligible agency unknown",
        {"sharing": conditional(eligible_agencies=["psb", "mars"])},
        422,
        "catalog.unknown_agency",
        "mars",
    ),
    (
        "r5",
        "unconditional with eligible agencies",
        {"sharing": {"attribute": "unconditional", "eligible_agencies": ["psb"]}},
        422,
        "catalog.invalid_sharing",
        "mark it conditional",
    ),
    ("r4", "unknown category", {"category": "misc"}, 422, "request.invalid", "category"),
    ("r3", "unknown grade", {"grade": "secret"}, 422, "request.invalid", "grade"),
    (
        "r5",
        "unknown sharing attribute",
        {"sharing": {"attribute": "sometimes"}},
        422,
        "request.invalid",
        "sharing.attribute",
    ),
    (
        "r1",
        "misspelt key",
        {"sharing": {"attribute": "none", "reason": REASON, "legalbasis": LEGAL}},
        422,
        "request.invalid",
        "legalbasis",
    ),
    ("r1", "bad id", {"id": "Market Licences!"}, 422, "request.invalid", "id"),
    ("r1", "missing schema", {"schema": None}, 422, "catalog.invalid_schema", "Avro record"),
]


@pytest.mark.parametrize(
    ("rule", "case", "change", "status", "code", "says"),
    VALIDATION,
    ids=[f"{v[0]}-{v[1]}" for v in VALIDATION],
)
def test_r6_r5_r3_catalogue_validation_over_http(
    bus: Bus, rule: str, case: str, change: dict[str, Any], status: int, code: str, says: str
) -> None:
    body = problem(bus.create("market", entry(**change)), status, code)
    assert says in body["detail"], body
    problem(bus.call("market", "GET", "/v1/datasets/market-licences"), 404, "catalog.not_found")


def test_r1_only_agencies_catalogue_datasets(bus: Bus) -> None:
    problem(bus.create("dmd", entry()), 403, "auth.forbidden")
    problem(bus.create("audit-office", entry()), 403, "auth.forbidden")
    problem(bus.create("admin", entry()), 403, "auth.forbidden")


# --- lifecycle ------------------------------------------------------------------------------------
def test_r1_draft_submit_approve_retire(bus: Bus, ctx: BusContext) -> None:
    bus.create("market", entry())
    sub = bus.call("market", "POST", "/v1/datasets/market-licences/submit")
    assert sub.status_code == 200 and sub.json()["status"] == "submitted" and sub.json()["submitted_at"]
    assert "overlap" in sub.json()
    rev = bus.call(
        "dmd",
        "POST",
        "/v1/datasets/market-licences/review",
        json={"decision": "approve", "comment": "complete and accurate"},
    ).json()
    assert (rev["status"], rev["reviewed_by"], rev["review_comment"]) == (
        "approved",
        "dmd",
        "complete and accurate",
    )
    ret = bus.call("market", "POST", "/v1/datasets/market-licences/retire").json()
    assert ret["status"] == "retired" and ret["retired_at"]
    with ctx.store.session() as s:
        actions = [
            (e.actor, e.action)
            for e in s.scalars(
                select(AuditEvent).where(AuditEvent.subject_id == "market-licences").order_by(AuditEvent.seq)
            )
        ]
    assert actions == [
        ("market", "dataset.created"),
        ("market", "dataset.submitted"),
        ("dmd", "dataset.reviewed"),
        ("market", "dataset.retired"),
    ]


def test_r1_review_needs_a_reviewer_who_is_not_the_owner(bus: Bus) -> None:
    bus.agency("dmd2", "reviewer", "agency")
    bus.create("dmd2", entry("dmd-directory"))
    bus.call("dmd2", "POST", "/v1/datasets/dmd-directory/submit")
    approve = {"decision": "approve"}
    for who in ("market", "psb", "audit-office", "admin"):
        problem(
            bus.call(who, "POST", "/v1/datasets/dmd-directory/review", json=approve), 403, "auth.forbidden"
        )
    body = problem(
        bus.call("dmd2", "POST", "/v1/datasets/dmd-directory/review", json=approve), 403, "auth.forbidden"
    )
    assert "own entry" in body["detail"]
    assert (
        bus.call("dmd", "POST", "/v1/datasets/dmd-directory/review", json=approve).json()["status"]
        == "approved"
    )


def test_r1_wrong_owner_and_wrong_state_are_refused(bus: Bus) -> None:
    bus.create("market", entry())
    url = "/v1/datasets/market-licences"
    problem(bus.call("psb", "POST", f"{url}/submit"), 403, "auth.forbidden")
    problem(bus.call("admin", "POST", f"{url}/submit"), 403, "auth.forbidden")
    problem(bus.call("dmd", "POST", f"{url}/review", json={"decision": "approve"}), 409, "catalog.bad_state")
    problem(bus.call("market", "POST", f"{url}/retire"), 409, "catalog.bad_state")
    bus.call("market", "POST", f"{url}/submit")
    body = problem(bus.call("market", "POST", f"{url}/submit"), 409, "catalog.bad_state")
    assert body["current_status"] == "submitted" and "waiting for review" in body["detail"]
    problem(bus.call("dmd", "POST", f"{url}/review", json={"decision": "maybe"}), 422, "request.invalid")
    problem(
        bus.call("dmd", "POST", f"{url}/review", json={"decision": "reject"}), 422, "catalog.comment_required"
    )
    rejected = bus.call(
        "dmd", "POST", f"{url}/review", json={"decision": "reject", "comment": "add the legal rep"}
    )
    assert rejected.json()["status"] == "rejected"
    problem(bus.call("dmd", "POST", f"{url}/review", json={"decision": "approve"}), 409, "catalog.bad_state")
    assert (
        bus.call("market", "POST", f"{url}/submit").json()["status"] == "submitted"
    )  # fixed and resubmitted
    bus.call("dmd", "POST", f"{url}/review", json={"decision": "approve"})
    problem(bus.call("psb", "POST", f"{url}/retire"), 403, "auth.forbidden")
    assert bus.call("admin", "POST", f"{url}/retire").json()["status"] == "retired"
    problem(bus.call("market", "POST", f"{url}/retire"), 409, "catalog.bad_state")
    problem(bus.call("market", "POST", "/v1/datasets/nothing/submit"), 404, "catalog.not_found")


def test_r9_submit_reports_the_overlap_to_the_reviewer(bus: Bus, monkeypatch: pytest.MonkeyPatch) -> None:
    """The R9 hook: a partial overlap report is stored and shown; a full overlap keeps the entry a draft."""
    report = {"overlaps": [{"dataset": "psb-residents", "semantics": ["person.id_number"]}]}
    monkeypatch.setattr(overlap, "check_on_submit", lambda s, ds, schema: report)
    bus.create("market", entry())
    assert bus.call("market", "POST", "/v1/datasets/market-licences/submit").json()["overlap"] == report
    assert bus.call("dmd", "GET", "/v1/datasets/market-licences").json()["overlap"] == report

    def refuse(s: Any, ds: Any, schema: Any) -> None:
        raise RecollectionOverlap(
            "every field is available from psb-residents; request it instead", dataset="psb-residents"
        )

    monkeypatch.setattr(overlap, "check_on_submit", refuse)
    bus.create("health", entry("health-people"))
    body = problem(
        bus.call("health", "POST", "/v1/datasets/health-people/submit"), 409, "recollection.overlap"
    )
    assert body["dataset"] == "psb-residents"
    assert bus.call("health", "GET", "/v1/datasets/health-people").json()["status"] == "draft"
    events_ = bus.call("admin", "GET", "/v1/audit/events", params={"subject": "health-people"}).json()[
        "events"
    ]
    assert [e["action"] for e in events_] == ["dataset.created", "dataset.submit_refused"]


# --- schema versions ------------------------------------------------------------------------------
def test_r2_schema_versions_are_checked_stored_and_fetchable(bus: Bus, ctx: BusContext) -> None:
    bus.approved("market", entry())
    url = "/v1/datasets/market-licences/schema"
    v2 = licence_schema()
    v2["fields"].append(
        {
            "name": "email",
            "type": ["null", "string"],
            "default": None,
            "sensitivity": "personal",
            "semantic": "person.email",
        }
    )
    r = bus.call("market", "PUT", url, json=v2)
    assert r.status_code == 201 and r.json() == {
        "dataset": "market-licences",
        "version": 2,
        "schema": v2,
        "overlap": None,  # R9 re-checked: nobody else shares an e-mail address
    }
    assert (
        bus.call("market", "PUT", url, json={"schema": v2}).status_code == 200
    )  # the same again: no new version
    v3 = copy.deepcopy(v2)
    v3["fields"].append({"name": "fax", "type": "string"})
    body = problem(bus.call("market", "PUT", url, json=v3), 409, "schema.incompatible")
    assert body["fields"] == ["fax"] and "'fax'" in body["detail"] and "default" in body["detail"]
    v3 = copy.deepcopy(v2)
    next(f for f in v3["fields"] if f["name"] == "registered_capital")["type"] = "string"
    assert problem(bus.call("market", "PUT", url, json=v3), 409, "schema.incompatible")["fields"] == [
        "registered_capital"
    ]
    problem(bus.call("psb", "PUT", url, json=v2), 403, "auth.forbidden")
    problem(bus.call("market", "PUT", url, json={"type": "record"}), 422, "catalog.invalid_schema")
    assert bus.call("psb", "GET", url, params={"version": 1}).json()["schema"] == licence_schema()
    assert bus.call("psb", "GET", url).json()["version"] == 2
    problem(bus.call("psb", "GET", url, params={"version": 9}), 404, "catalog.not_found")
    got = bus.call("psb", "GET", "/v1/datasets/market-licences").json()
    assert got["schema_version"] == 2 and got["schema"] == v2
    versions = bus.call("psb", "GET", "/v1/datasets/market-licences/schemas").json()
    assert [v["version"] for v in versions["versions"]] == [1, 2] and versions["current"] == 2
    with ctx.store.session() as s:
        assert [
            sv.version
            for sv in s.scalars(select(SchemaVersion).where(SchemaVersion.dataset_id == "market-licences"))
        ] == [1, 2]
    actions = [
        e["action"]
        for e in bus.call("admin", "GET", "/v1/audit/events", params={"subject": "market-licences"}).json()[
            "events"
        ]
    ]
    assert actions.count("dataset.schema_added") == 1


def _people(name: str, *fields: tuple[str, str | None]) -> dict[str, Any]:
    """``(field, semantic)`` -> a catalogue schema of strings."""
    out: list[dict[str, Any]] = []
    for fname, sem in fields:
        out.append({"name": fname, "type": "string", "sensitivity": "personal"})
        if sem:
            out[-1]["semantic"] = sem
    return {"type": "record", "name": name, "namespace": "gov.test", "fields": out}


PSB_PEOPLE = _people("People", ("id_number", "person.id_number"), ("name", "person.name"))
# market's register, approved as collecting nothing comparable (no semantics declared yet)
MARKET_V1 = _people("Holders", ("holder_id", None), ("holder_name", None))


def _recollection_world(bus: Bus) -> str:
    bus.approved("psb", entry("psb-people", schema=PSB_PEOPLE))
    approved = bus.approved("market", entry("market-holders", schema=MARKET_V1))
    assert approved["overlap"] is None
    return "/v1/datasets/market-holders/schema"


def test_r9_a_schema_version_that_evolves_into_recollection_is_refused_and_nothing_is_stored(
    bus: Bus, ctx: BusContext
) -> None:
    """R9 holds for the entry's lifetime: a new version of an approved dataset whose every field is
    obtainable from another agency is refused like a submit (409, audited, an incident); v1 stays."""
    url = _recollection_world(bus)
    v2 = _people("Holders", ("holder_id", "person.id_number"), ("holder_name", "person.name"))
    body = problem(bus.call("market", "PUT", url, json=v2), 409, "recollection.overlap")
    assert "schema version 2 of dataset market-holders would collect nothing new" in body["detail"]
    assert "psb-people" in body["detail"] and "holder_id, holder_name" in body["detail"]
    assert body["fields"] == ["holder_id", "holder_name"] and body["version"] == 2
    assert body["request_instead"] == [
        {
            "dataset": "psb-people",
            "owner": "psb",
            "attribute": "unconditional",
            "fields": ["holder_id", "holder_name"],
            "source_fields": ["id_number", "name"],
        }
    ]
    # nothing changed: the stored versions, the current one, the entry
    with ctx.store.session() as s:
        stored = s.scalars(select(SchemaVersion).where(SchemaVersion.dataset_id == "market-holders")).all()
        assert [(sv.version, sv.schema) for sv in stored] == [(1, MARKET_V1)]
    got = bus.call("market", "GET", "/v1/datasets/market-holders").json()
    assert (got["schema_version"], got["schema"], got["status"], got["overlap"]) == (
        1,
        MARKET_V1,
        "approved",
        None,
    )
    # on the record, like a refused submit
    events_ = bus.call("admin", "GET", "/v1/audit/events", params={"subject": "market-holders"}).json()[
        "events"
    ]
    assert [e["action"] for e in events_][-1] == "dataset.schema_refused"
    assert events_[-1]["actor"] == "market" and events_[-1]["data"]["code"] == "recollection.overlap"
    assert "dataset.schema_added" not in [e["action"] for e in events_]
    # the same incident the submit path opens (kind recollection, high), grown by a repeat
    assert bus.call("market", "PUT", url, json=v2).status_code == 409
    found = [
        i
        for i in bus.call("admin", "GET", "/v1/incidents").json()["incidents"]
        if i["dataset_id"] == "market-holders"
    ]
    assert [(i["kind"], i["agency_id"], i["severity"], i["status"], i["count"]) for i in found] == [
        ("recollection", "market", "high", "open", 2)
    ]
    assert "recollection.overlap" in found[0]["evidence"]["codes"]
    assert "psb-people" in found[0]["evidence"]["last_detail"]


def test_r9_a_harmless_schema_version_passes_and_a_partial_overlap_is_reported_as_at_submit(
    bus: Bus,
) -> None:
    url = _recollection_world(bus)
    v2 = copy.deepcopy(MARKET_V1)
    v2["fields"].append({"name": "licence_class", "type": ["null", "string"], "default": None})
    r = bus.call("market", "PUT", url, json=v2)
    assert r.status_code == 201, r.text
    assert (r.json()["version"], r.json()["overlap"]) == (2, None)
    v3 = copy.deepcopy(v2)
    v3["fields"][0]["semantic"] = "person.id_number"  # one field now obtainable from psb: partial
    r = bus.call("market", "PUT", url, json=v3)
    assert r.status_code == 201, r.text
    report = r.json()["overlap"]
    assert report["kind"] == "partial" and report["new_fields"] == ["holder_name", "licence_class"]
    assert [c["field"] for c in report["covered_fields"]] == ["holder_id"]
    assert report["request_instead"][0]["dataset"] == "psb-people"
    # shown to the reviewers on the entry and kept in the audit event, as at submit
    assert bus.call("dmd", "GET", "/v1/datasets/market-holders").json()["overlap"] == report
    assert bus.call("psb", "GET", "/v1/datasets/market-holders").json()["overlap"] is None  # not to others
    events_ = bus.call(
        "admin",
        "GET",
        "/v1/audit/events",
        params={"subject": "market-holders", "action": "dataset.schema_added"},
    ).json()["events"]
    assert [(e["data"]["version"], e["data"]["overlap"]) for e in events_] == [(2, None), (3, report)]
    assert bus.call("market", "GET", "/v1/datasets/market-holders").json()["schema_version"] == 3


def test_r9_a_draft_schema_is_checked_at_submit_not_at_each_edit(bus: Bus) -> None:
    """Drafts are work in progress: a new draft version is not refused, the submit is."""
    bus.approved("psb", entry("psb-people", schema=PSB_PEOPLE))
    assert bus.create("market", entry("market-holders", schema=MARKET_V1)).status_code == 201
    v2 = _people("Holders", ("holder_id", "person.id_number"), ("holder_name", "person.name"))
    r = bus.call("market", "PUT", "/v1/datasets/market-holders/schema", json=v2)
    assert r.status_code == 201 and "overlap" not in r.json()
    problem(bus.call("market", "POST", "/v1/datasets/market-holders/submit"), 409, "recollection.overlap")


def test_r2_schema_changes_respect_state_and_sharing(bus: Bus) -> None:
    bus.create(
        "health",
        entry(
            "health-clinics",
            schema=load_schema("examples/clinic"),
            sharing=conditional(shareable_fields=["clinic_id", "clinic_name", "beds"]),
        ),
    )
    url = "/v1/datasets/health-clinics/schema"
    draft2 = load_schema("examples/clinic")
    draft2["fields"] = [
        f for f in draft2["fields"] if f["name"] != "director_phone"
    ]  # a draft may drop fields
    assert bus.call("health", "PUT", url, json=draft2).status_code == 201
    no_beds = copy.deepcopy(draft2)
    no_beds["fields"] = [f for f in no_beds["fields"] if f["name"] != "beds"]
    body = problem(bus.call("health", "PUT", url, json=no_beds), 422, "catalog.unknown_field")
    assert "'beds'" in body["detail"]
    bus.call("health", "POST", "/v1/datasets/health-clinics/submit")
    problem(bus.call("health", "PUT", url, json=load_schema("examples/clinic")), 409, "catalog.bad_state")


# --- reads ----------------------------------------------------------------------------------------
def _catalogue(bus: Bus) -> None:
    bus.approved("market", entry())
    bus.approved(
        "health",
        entry(
            "health-clinics",
            title="Clinics",
            category="industry",
            grade="important",
            schema=load_schema("examples/clinic"),
            sharing=conditional(shareable_fields=["clinic_id", "clinic_name"], eligible_agencies=["psb"]),
        ),
    )
    bus.approved(
        "psb",
        entry(
            "psb-residents",
            title="Residents",
            grade="core",
            schema=load_schema("examples/resident"),
            sharing={"attribute": "none", "reason": REASON, "legal_basis": LEGAL},
        ),
    )
    assert bus.create("psb", entry("psb-draft", title="Work in progress")).status_code == 201


def test_r5_catalogue_lists_and_filters(bus: Bus) -> None:
    _catalogue(bus)

    def ids(who: str, **params: Any) -> list[str]:
        r = bus.call(who, "GET", "/v1/datasets", params=params)
        assert r.status_code == 200, r.text
        return [d["id"] for d in r.json()["datasets"]]

    assert ids("market") == [
        "health-clinics",
        "market-licences",
        "psb-residents",
    ]  # others' drafts are private
    assert ids("psb") == ["health-clinics", "market-licences", "psb-draft", "psb-residents"]
    assert ids("audit-office", status="draft") == ["psb-draft"]
    assert ids("market", owner="health") == ["health-clinics"]
    assert ids("market", category="industry") == ["health-clinics"]
    assert ids("market", grade="core") == ["psb-residents"]
    assert ids("market", attribute="conditional") == ["health-clinics"]
    assert ids("market", attribute="none", status="approved") == ["psb-residents"]
    assert ids("market", limit=1, offset=1) == ["market-licences"]
    assert bus.call("market", "GET", "/v1/datasets", params={"limit": 1}).json()["total"] == 3
    problem(bus.call("market", "GET", "/v1/datasets", params={"grade": "secret"}), 422, "request.invalid")
    problem(bus.call("market", "GET", "/v1/datasets/psb-draft"), 404, "catalog.not_found")
    assert bus.call("audit-office", "GET", "/v1/datasets/psb-draft").status_code == 200


def test_r5_not_shared_entries_show_metadata_but_not_sensitive_schema_details(bus: Bus) -> None:
    _catalogue(bus)
    seen = bus.call("market", "GET", "/v1/datasets/psb-residents").json()
    assert (
        seen["title"] == "Residents" and seen["sharing"]["attribute"] == "none" and seen["sharing"]["reason"]
    )
    names = {f["name"] for f in seen["schema"]["fields"]}
    assert names == {"region_code", "registered_on"} and seen["schema"]["redacted_fields"] == 8
    assert "id_number" not in json.dumps(seen)
    listed = next(
        d for d in bus.call("market", "GET", "/v1/datasets").json()["datasets"] if d["id"] == "psb-residents"
    )
    assert listed["schema"] == seen["schema"]
    assert bus.call("market", "GET", "/v1/datasets/psb-residents/schema").json()["schema"] == seen["schema"]
    for who in ("psb", "dmd", "audit-office", "admin"):
        assert bus.call(who, "GET", "/v1/datasets/psb-residents").json()["schema"] == load_schema(
            "examples/resident"
        )
    clinics = bus.call("market", "GET", "/v1/datasets/health-clinics").json()  # conditional: schema visible
    assert clinics["schema"] == load_schema("examples/clinic")


def test_r2_catalogue_statistics(bus: Bus) -> None:
    _catalogue(bus)
    bus.create("market", entry("market-pending"))
    bus.call("market", "POST", "/v1/datasets/market-pending/submit")
    st_ = bus.call("health", "GET", "/v1/catalog/stats").json()
    assert st_["total"] == 5
    assert st_["by_agency"] == {"health": 1, "market": 2, "psb": 2}
    assert st_["by_category"] == {"basic": 4, "industry": 1}
    assert st_["by_grade"] == {"core": 1, "general": 3, "important": 1}
    assert st_["by_attribute"] == {"conditional": 1, "none": 1, "unconditional": 3}
    assert st_["by_status"] == {"approved": 3, "draft": 1, "submitted": 1}
    assert st_["review_times"]["count"] == 3 and st_["review_times"]["max_seconds"] >= 0
    assert st_["pending_reviews"]["count"] == 1 and st_["pending_reviews"]["oldest_seconds"] >= 0


# --- events ---------------------------------------------------------------------------------------
def test_r2_every_catalogue_change_is_an_avro_event_on_bus_catalog(bus: Bus, ctx: BusContext) -> None:
    bus.approved("market", entry())
    v2 = licence_schema()
    v2["fields"].append({"name": "email", "type": ["null", "string"], "default": None})
    bus.call("market", "PUT", "/v1/datasets/market-licences/schema", json=v2)
    bus.call("market", "POST", "/v1/datasets/market-licences/retire")
    assert ctx.producer.flush(10) == 0
    consumer = new_consumer(ctx.bootstrap, f"{ctx.topics.prefix}follower", ctx.settings)
    try:
        poll_until(
            lambda: assign_from_committed(consumer, [ctx.topics.catalog]), what="bus.catalog partitions"
        )
        got: list[dict[str, Any]] = []

        def five() -> bool:
            got.extend(events.decode(m.value()) for m in consumer.consume(100, 0.1) if m.error() is None)
            return len(got) >= 5

        poll_until(five, timeout=15, what="five catalogue events")
    finally:
        consumer.close()
    mine = [e for e in got if e["dataset"] == "market-licences"]
    assert [(e["action"], e["status"], e["schema_version"]) for e in mine] == [
        ("dataset.created", "draft", 1),
        ("dataset.submitted", "submitted", 1),
        ("dataset.reviewed", "approved", 1),
        ("dataset.schema_added", "approved", 2),
        ("dataset.retired", "retired", 2),
    ]
    assert mine[2]["decision"] == "approve" and mine[2]["actor"] == "dmd"
    assert all(e["audit_seq"] for e in mine)


# --- never a 500 ----------------------------------------------------------------------------------
json_leaf = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10)
)
json_any = st.recursive(
    json_leaf,
    lambda k: st.lists(k, max_size=3) | st.dictionaries(st.text(max_size=8), k, max_size=3),
    max_leaves=12,
)
field_st = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["a", "b", "licence_no", "1x", ""]),
        "type": st.sampled_from(["string", "int", "x"]) | json_any,
    },
    optional={
        "sensitivity": st.sampled_from(["public", "personal", "sensitive", "secret"]) | json_any,
        "semantic": st.sampled_from(["person.name", "bad"]) | json_any,
        "default": json_any,
    },
)
schema_st = json_any | st.builds(
    lambda f, n: {"type": "record", "name": n, "fields": f},
    st.lists(field_st, max_size=4),
    st.sampled_from(["R", "", "9"]),
)
body_st = st.fixed_dictionaries(
    {},
    optional={
        "id": st.sampled_from(["ds-a", "ds-b", "X", "a" * 70, "\x00"]) | json_any,
        "title": st.text(max_size=5) | json_any,
        "description": st.text(max_size=5),
        "category": st.sampled_from(["basic", "misc"]),
        "grade": st.sampled_from(["general", "core", "x"]),
        "tags": st.lists(st.text(max_size=4), max_size=3) | json_any,
        "domestic_only": json_any,
        "sharing": st.fixed_dictionaries(
            {},
            optional={
                "attribute": st.sampled_from(["unconditional", "conditional", "none", "x"]),
                "reason": st.text(max_size=4) | json_any,
                "legal_basis": st.text(max_size=4),
                "shareable_fields": st.lists(st.sampled_from(["a", "b", "licence_no", "\x00"]), max_size=3)
                | json_any,
                "eligible_agencies": st.lists(st.sampled_from(["psb", "mars"]), max_size=2) | json_any,
            },
        )
        | json_any,
        "schema": schema_st,
    },
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=body_st, schema=schema_st, review=json_any)
def test_r14_random_entries_schemas_and_reviews_never_cause_a_500(
    bus: Bus, body: Any, schema: Any, review: Any
) -> None:
    r = bus.create("market", body)
    assert r.status_code < 500, r.text
    if r.status_code == 201:
        assert r.json()["status"] == "draft"
    target = body.get("id") if isinstance(body.get("id"), str) and r.status_code == 201 else "market-x"
    for resp in (
        bus.call("market", "PUT", f"/v1/datasets/{target}/schema", json=schema),
        bus.call("dmd", "POST", f"/v1/datasets/{target}/review", json=review),
        bus.call("admin", "POST", "/v1/agencies", json=review),
        bus.http.post("/v1/datasets", content=json.dumps(body).encode()[:-1], headers=bus.h("market")),
    ):
        assert resp.status_code < 500, resp.text
        if resp.status_code >= 400:
            assert resp.headers["content-type"].startswith(PROBLEM) and resp.json()["code"]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    params=st.dictionaries(
        st.sampled_from(
            [
                "owner",
                "category",
                "grade",
                "attribute",
                "status",
                "limit",
                "offset",
                "actor",
                "action",
                "subject",
                "since",
                "until",
                "after",
                "version",
            ]
        ),
        st.text(max_size=12) | st.integers().map(str),
        max_size=5,
    ),
    path=st.text(max_size=12),
)
def test_r14_random_queries_and_paths_never_cause_a_500(bus: Bus, params: dict[str, str], path: str) -> None:
    path = quote(path, safe="")
    for method, url in (
        ("GET", "/v1/datasets"),
        ("GET", "/v1/audit/events"),
        ("GET", f"/v1/datasets/{path}"),
        ("GET", f"/v1/datasets/{path}/schema"),
        ("POST", f"/v1/datasets/{path}/submit"),
        ("GET", f"/v1/agencies/{path}"),
    ):
        r = bus.call("admin", method, url, params=params)
        assert r.status_code < 500, (url, params, r.text)
