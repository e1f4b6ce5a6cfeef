"""R8/R9: re-collection refused at submit (catalogue overlap) and at publish (record fingerprints in Redis).

Submit-time tests go through the catalogue API; record-level tests drive ``FingerprintGuard`` against the
real embedded Redis with datasets and grants in the real store.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from bus.context import BusContext
from bus.errors import ForwardingDetected, RecollectionDetected
from bus.exchange.fingerprints import FingerprintGuard
from bus.exchange.policy_events import announce
from bus.gateway import problems
from bus.policy.pseudonyms import grant_key, grant_tag, pseudonym
from bus.store.models import Grant, Incident, RecordLineage
from tests.helpers import catalog_entry, licence_record, licence_schema, poll_until
from tests.integration.dataplane_helpers import api as client_of
from tests.integration.dataplane_helpers import grant, grant_body, publisher, receive, subscriber

pytestmark = pytest.mark.integration
PROBLEM = "application/problem+json"


def gateway(ctx: BusContext, *names: str) -> TestClient:
    app = FastAPI()
    app.state.ctx = ctx
    problems.install(app)
    for name in names:
        app.include_router(importlib.import_module(f"bus.gateway.{name}").router)
    return TestClient(app)


def schema(name: str, *fields: tuple[str, str, str | None, str]) -> dict[str, Any]:
    """``(name, type, semantic, sensitivity)`` -> a catalogue schema."""
    out = []
    for fname, ftype, sem, sens in fields:
        f: dict[str, Any] = {"name": fname, "type": ftype, "sensitivity": sens}
        if sem:
            f["semantic"] = sem
        out.append(f)
    return {"type": "record", "name": name, "namespace": "gov.test", "fields": out}


# A tax register that copies the licence register's enterprise fields: every field obtainable by sharing.
COPY = schema(
    "TaxCopy",
    ("cc", "string", "enterprise.credit_code", "public"),
    ("name", "string", "enterprise.name", "public"),
    ("addr", "string", "enterprise.address", "internal"),
)
# The same plus a field of its own: a partial overlap.
TAX = schema(
    "TaxRegister",
    ("cc", "string", "enterprise.credit_code", "public"),
    ("name", "string", "enterprise.name", "public"),
    ("addr", "string", "enterprise.address", "internal"),
    ("phone", "string", "person.phone", "personal"),
    ("tax_due", "long", "tax.amount_due", "internal"),
)


def tax_record(i: int, **over: Any) -> dict[str, Any]:
    lic = licence_record(i)
    rec = {
        "cc": lic["credit_code"],
        "name": lic["enterprise_name"],
        "addr": lic["address"],
        "phone": lic["phone"],
        "tax_due": 1000 + i,
    }
    rec.update(over)
    return rec


class Api:
    def __init__(self, ctx: BusContext) -> None:
        self.http = gateway(ctx, "routes_agencies", "routes_catalog")
        self.keys = {"admin": ctx.admin_key}

    def call(self, who: str, method: str, path: str, **kw: Any) -> Any:
        return self.http.request(method, path, headers={"Authorization": f"Bearer {self.keys[who]}"}, **kw)

    def agency(self, agency_id: str, *roles: str) -> None:
        r = self.call(
            "admin",
            "POST",
            "/v1/agencies",
            json={
                "id": agency_id,
                "name": agency_id,
                "region": "140900",
                "roles": list(roles or ("agency",)),
            },
        )
        assert r.status_code == 201, r.text
        self.keys[agency_id] = r.json()["api_key"]

    def create(
        self, who: str, dataset_id: str, sch: dict[str, Any], sharing: dict[str, Any] | None = None
    ) -> None:
        body = catalog_entry(dataset_id, sch, sharing)
        r = self.call(who, "POST", "/v1/datasets", json=body)
        assert r.status_code == 201, r.text


@pytest.fixture
def api(ctx: BusContext) -> Iterator[Api]:
    a = Api(ctx)
    for agency in ("market", "tax", "health"):
        a.agency(agency)
    a.agency("dmd", "reviewer")
    yield a
    a.http.close()


def _approve(
    api: Api, who: str, dataset_id: str, sch: dict[str, Any], sharing: dict[str, Any] | None = None
) -> None:
    api.create(who, dataset_id, sch, sharing)
    assert api.call(who, "POST", f"/v1/datasets/{dataset_id}/submit").status_code == 200
    r = api.call("dmd", "POST", f"/v1/datasets/{dataset_id}/review", json={"decision": "approve"})
    assert r.status_code == 200, r.text


# --- submit time ------------------------------------------------------------------------------------------
def test_r9_entry_that_only_recollects_is_refused_naming_the_dataset_to_request(api: Api) -> None:
    _approve(api, "market", "market-licences", licence_schema())
    api.create("tax", "tax-copy", COPY)
    r = api.call("tax", "POST", "/v1/datasets/tax-copy/submit")
    assert r.status_code == 409 and r.headers["content-type"].startswith(PROBLEM)
    body = r.json()
    assert body["code"] == "recollection.overlap"
    assert "market-licences" in body["detail"] and "request" in body["detail"].lower()
    assert body["request_instead"] == [
        {
            "dataset": "market-licences",
            "owner": "market",
            "attribute": "unconditional",
            "fields": ["cc", "name", "addr"],
            "source_fields": ["credit_code", "enterprise_name", "address"],
        }
    ]
    assert body["fields"] == ["cc", "name", "addr"]
    assert api.call("tax", "GET", "/v1/datasets/tax-copy").json()["status"] == "draft"


def test_r9_r15_a_submit_refused_as_recollection_opens_an_incident(ctx: BusContext, api: Api) -> None:
    _approve(api, "market", "market-licences", licence_schema())
    api.create("tax", "tax-copy", COPY)
    for _ in range(2):  # a repeat grows the same incident
        assert api.call("tax", "POST", "/v1/datasets/tax-copy/submit").status_code == 409
    http = gateway(ctx, "routes_incidents")
    r = http.get("/v1/incidents", headers={"Authorization": f"Bearer {ctx.admin_key}"})
    http.close()
    assert r.status_code == 200, r.text
    found = [i for i in r.json()["incidents"] if i["dataset_id"] == "tax-copy"]
    assert len(found) == 1, r.json()
    inc = found[0]
    assert (inc["kind"], inc["agency_id"], inc["status"], inc["count"]) == ("recollection", "tax", "open", 2)
    assert inc["severity"] == "high"
    assert "recollection.overlap" in inc["evidence"]["codes"]
    assert "market-licences" in inc["evidence"]["last_detail"]


def test_r9_partial_overlap_is_accepted_and_shown_to_the_reviewer(api: Api) -> None:
    _approve(api, "market", "market-licences", licence_schema())
    api.create("tax", "tax-register", TAX)
    r = api.call("tax", "POST", "/v1/datasets/tax-register/submit")
    assert r.status_code == 200, r.text
    report = r.json()["overlap"]
    assert report["kind"] == "partial"
    assert report["new_fields"] == ["tax_due"]
    assert [c["field"] for c in report["covered_fields"]] == ["cc", "name", "addr", "phone"]
    assert report["request_instead"][0]["dataset"] == "market-licences"
    assert api.call("dmd", "GET", "/v1/datasets/tax-register").json()["overlap"] == report


@pytest.mark.parametrize(
    ("sharing", "expect"),
    [
        ({"attribute": "none", "reason": "r", "legal_basis": "l"}, 200),
        (
            {"attribute": "conditional", "reason": "r", "legal_basis": "l", "eligible_agencies": ["health"]},
            200,
        ),
        ({"attribute": "conditional", "reason": "r", "legal_basis": "l", "eligible_agencies": ["tax"]}, 409),
        (
            {
                "attribute": "conditional",
                "reason": "r",
                "legal_basis": "l",
                "shareable_fields": ["credit_code"],
            },
            200,
        ),
    ],
    ids=["not-shared", "not-eligible", "eligible", "only-credit-code-shareable"],
)
def test_r9_only_data_obtainable_by_sharing_counts(api: Api, sharing: dict[str, Any], expect: int) -> None:
    _approve(api, "market", "market-licences", licence_schema(), sharing)
    api.create("tax", "tax-copy", COPY)
    r = api.call("tax", "POST", "/v1/datasets/tax-copy/submit")
    assert r.status_code == expect, r.text


def test_r9_an_agency_may_recatalogue_its_own_data(api: Api) -> None:
    _approve(api, "market", "market-licences", licence_schema())
    api.create("market", "market-enterprises", COPY)
    assert api.call("market", "POST", "/v1/datasets/market-enterprises/submit").status_code == 200


# --- publish time: record fingerprints ----------------------------------------------------------------------
@pytest.fixture
def world(ctx: BusContext, agency_factory: Any, dataset_factory: Any) -> dict[str, Any]:
    """market-licences (unconditional) with 50 remembered records; tax and health registers approved."""
    for a in ("market", "tax", "health"):
        agency_factory(a)
    dataset_factory("market", dataset_id="market-licences", schema=licence_schema())
    dataset_factory("tax", dataset_id="tax-register", schema=TAX)
    dataset_factory("health", dataset_id="health-enterprises", schema=TAX)
    guard = FingerprintGuard(ctx)
    records = [licence_record(i) for i in range(50)]
    guard.remember_batch("market-licences", "market", records, [f"{i:032x}" for i in range(50)])
    return {"guard": guard}


def _grant(
    ctx: BusContext, grant_id: str, agency: str, dataset: str, fields: list[str], status: str = "active"
) -> None:
    with ctx.store.session() as s:
        s.add(
            Grant(
                id=grant_id,
                dataset_id=dataset,
                agency_id=agency,
                fields=fields,
                scenario_code="S-1",
                scenario_description="licence checks",
                legal_basis="law",
                status=status,
            )
        )


def test_r9_record_copying_another_agencys_record_is_refused_as_recollection(
    ctx: BusContext, world: dict
) -> None:
    guard: FingerprintGuard = world["guard"]
    batch = [tax_record(3), tax_record(10_000), tax_record(7)]
    out = guard.check_batch("tax-register", "tax", batch)
    assert isinstance(out[0], RecollectionDetected) and isinstance(out[2], RecollectionDetected)
    assert out[1] is None  # an enterprise the licence register does not hold
    err = out[0]
    assert err.code == "recollection.detected"
    assert err.extra["dataset"] == "market-licences" and err.extra["owner"] == "market"
    assert err.extra["matched_record_id"] == f"{3:032x}"
    assert set(err.extra["fields"]) == {"cc", "name", "addr", "phone"}
    assert "request a grant on market-licences" in err.detail


def test_r8_republishing_received_records_is_refused_as_forwarding_naming_the_grant(
    ctx: BusContext, world: dict
) -> None:
    _grant(
        ctx, "g-health-1", "health", "market-licences", ["credit_code", "enterprise_name", "address", "phone"]
    )
    guard = FingerprintGuard(ctx)
    received = tax_record(5, phone="*******" + licence_record(5)["phone"][-4:])  # masked on delivery
    out = guard.check_batch("health-enterprises", "health", [received])
    assert isinstance(out[0], ForwardingDetected)
    assert out[0].extra["grant"] == "g-health-1" and out[0].extra["dataset"] == "market-licences"
    assert "grant g-health-1" in out[0].detail and "R8" in out[0].detail


@pytest.mark.parametrize("status", ["revoked", "suspended", "expired"])
def test_r8_a_grant_once_held_still_makes_it_forwarding(ctx: BusContext, world: dict, status: str) -> None:
    _grant(ctx, "g-old", "health", "market-licences", ["credit_code", "enterprise_name", "address"], status)
    out = FingerprintGuard(ctx).check_batch("health-enterprises", "health", [tax_record(5)])
    assert isinstance(out[0], ForwardingDetected) and out[0].extra["grant"] == "g-old"


@pytest.mark.parametrize("status", ["pending", "denied"])
def test_r9_a_grant_never_held_leaves_it_recollection(ctx: BusContext, world: dict, status: str) -> None:
    _grant(ctx, "g-no", "health", "market-licences", ["credit_code", "enterprise_name", "address"], status)
    out = FingerprintGuard(ctx).check_batch("health-enterprises", "health", [tax_record(5)])
    assert isinstance(out[0], RecollectionDetected)


@pytest.mark.parametrize(
    "record",
    [
        {"cc": licence_record(3)["credit_code"], "name": "", "addr": "", "phone": "", "tax_due": 5},
        tax_record(3, addr="99 Other Road", phone="13911110000"),  # same enterprise, new attributes
        {
            "cc": licence_record(3)["credit_code"],
            "name": licence_record(3)["enterprise_name"],
            "addr": None,
            "phone": None,
            "tax_due": 7,
        },  # names the enterprise, nothing else
        tax_record(3, cc="91140900MA99999999"),  # the attributes without the identifier: no lookup key
    ],
    ids=["identifier-only", "new-attributes", "names-only", "other-identifier"],
)
def test_r9_no_false_positive_on_records_that_only_name_the_same_enterprise(
    world: dict, record: dict
) -> None:
    assert world["guard"].check_batch("tax-register", "tax", [record]) == [None]


def test_r9_own_records_and_not_shared_datasets_are_not_compared(
    ctx: BusContext, world: dict, dataset_factory: Any
) -> None:
    dataset_factory("market", dataset_id="market-archive", schema=TAX)
    guard = FingerprintGuard(ctx)
    assert guard.check_batch("market-archive", "market", [tax_record(3)]) == [None]  # its own data
    dataset_factory("health", dataset_id="health-secret", schema=licence_schema(), attribute="none")
    guard.refresh()
    guard.remember_batch("health-secret", "health", [licence_record(500)], ["r500"])
    assert guard.check_batch("tax-register", "tax", [tax_record(500)]) == [None]  # never obtainable


def test_r8_a_bus_pseudonym_inside_a_published_record_is_forwarding(ctx: BusContext, world: dict) -> None:
    _grant(ctx, "g-health-ps", "health", "market-licences", ["credit_code", "legal_rep_id"])
    ps = pseudonym(
        grant_key(ctx.master_secret, "g-health-ps"),
        grant_tag(ctx.master_secret, "g-health-ps"),
        licence_record(9)["legal_rep_id"],
    )
    out = FingerprintGuard(ctx).check_batch("tax-register", "tax", [tax_record(20_000, name=f"rep {ps}")])
    assert isinstance(out[0], ForwardingDetected)
    assert out[0].extra["grant"] == "g-health-ps" and out[0].extra["grantee"] == "health"


def test_r8_a_new_grant_is_seen_at_once_through_the_policy_version(ctx: BusContext, world: dict) -> None:
    guard = FingerprintGuard(ctx, ttl=3600)
    assert isinstance(
        guard.check_batch("health-enterprises", "health", [tax_record(1)])[0], RecollectionDetected
    )
    _grant(ctx, "g-new", "health", "market-licences", ["credit_code", "enterprise_name", "address"])
    announce(ctx, "grant", "g-new")
    out = guard.check_batch("health-enterprises", "health", [tax_record(1)])
    assert isinstance(out[0], ForwardingDetected) and out[0].extra["grant"] == "g-new"


def test_r9_a_dataset_approved_later_is_checked_against_records_published_before(
    ctx: BusContext, world: dict, dataset_factory: Any, agency_factory: Any
) -> None:
    """Fingerprints do not depend on which datasets share fields, so history is covered."""
    agency_factory("civil")
    dataset_factory("civil", dataset_id="civil-late", schema=COPY)
    guard = world["guard"]
    guard.refresh()
    out = guard.check_batch(
        "civil-late",
        "civil",
        [
            {
                "cc": licence_record(42)["credit_code"],
                "name": licence_record(42)["enterprise_name"],
                "addr": licence_record(42)["address"],
            }
        ],
    )
    assert isinstance(out[0], RecollectionDetected)


def test_r9_checks_are_one_redis_round_trip_per_batch(ctx: BusContext, world: dict) -> None:
    guard: FingerprintGuard = world["guard"]
    calls: list[int] = []
    real = ctx.redis.pipeline

    def counting(*a: Any, **kw: Any) -> Any:
        calls.append(1)
        return real(*a, **kw)

    ctx.redis.pipeline = counting  # type: ignore[method-assign]
    try:
        guard.check_batch("tax-register", "tax", [tax_record(i) for i in range(200)])
        guard.remember_batch(
            "tax-register",
            "tax",
            [tax_record(i, tax_due=1) for i in range(200)],
            [f"t{i}" for i in range(200)],
        )
    finally:
        ctx.redis.pipeline = real  # type: ignore[method-assign]
    assert len(calls) == 2


def _fp_keys(ctx: BusContext, dataset: str) -> list[Any]:
    return list(ctx.redis.scan_iter(match=ctx.rkey("fp", dataset, "*"), count=1000))


def test_r9_retiring_a_dataset_drops_its_fingerprints(ctx: BusContext, world: dict) -> None:
    """R9: a retired dataset's records leave Redis, and copies of them are no longer refused."""
    guard: FingerprintGuard = world["guard"]
    assert isinstance(guard.check_batch("tax-register", "tax", [tax_record(3)])[0], RecollectionDetected)
    assert _fp_keys(ctx, "market-licences") and _fp_keys(ctx, "tax-register") == []
    guard.remember_batch("tax-register", "tax", [tax_record(10_001)], ["t1"])
    http = gateway(ctx, "routes_catalog")
    r = http.post("/v1/datasets/market-licences/retire", headers={"Authorization": f"Bearer {ctx.admin_key}"})
    assert r.status_code == 200 and r.json()["status"] == "retired", r.text
    http.close()
    assert _fp_keys(ctx, "market-licences") == []
    assert _fp_keys(ctx, "tax-register") != []  # other datasets keep theirs
    guard.refresh()
    assert guard.check_batch("tax-register", "tax", [tax_record(3)]) == [None]


def test_r9_retiring_stands_when_redis_cannot_drop_the_fingerprints(
    ctx: BusContext, world: dict, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import redis

    def down(self: FingerprintGuard, dataset_id: str) -> int:
        raise redis.ConnectionError("redis is down")

    monkeypatch.setattr(FingerprintGuard, "forget_dataset", down)
    http = gateway(ctx, "routes_catalog")
    r = http.post("/v1/datasets/market-licences/retire", headers={"Authorization": f"Bearer {ctx.admin_key}"})
    http.close()
    assert r.status_code == 200 and r.json()["status"] == "retired", r.text
    assert "could not be removed from Redis" in caplog.text and "market-licences" in caplog.text


# --- end to end: the SDK path (validator) and the HTTP path check the same way ------------------------------
def _accepted_lineage(ctx: BusContext, dataset: str) -> int:
    with ctx.store.session() as s:
        return len(
            list(
                s.scalars(
                    select(RecordLineage.record_id).where(
                        RecordLineage.dataset_id == dataset, RecordLineage.outcome == "accepted"
                    )
                )
            )
        )


def _incidents(ctx: BusContext) -> dict[tuple[str | None, str], Incident]:
    with ctx.store.session() as s:
        return {(i.agency_id, i.kind): i for i in s.scalars(select(Incident))}


def as_tax(delivered: dict[str, Any], i: int) -> dict[str, Any]:
    """What a grantee's own register would hold after copying a delivered licence view."""
    return {
        "cc": delivered["credit_code"],
        "name": delivered["enterprise_name"],
        "addr": delivered["address"],
        "phone": delivered["phone"],
        "tax_due": i,
    }


def test_r8_r9_sdk_path_refuses_forwarding_and_recollection_and_opens_incidents(
    ctx: BusContext, agency_factory: Any, dataset_factory: Any, data_plane: Any
) -> None:
    keys = {a: agency_factory(a)[1] for a in ("market", "health", "tax")}
    dataset_factory("market", dataset_id="market-licences", schema=licence_schema())
    dataset_factory("health", dataset_id="health-enterprises", schema=TAX)
    dataset_factory("tax", dataset_id="tax-register", schema=TAX)
    g = grant(ctx, "health", "market-licences", ["credit_code", "enterprise_name", "address", "phone"])
    with publisher(ctx, "market", keys["market"], "market-licences") as pub:
        for i in range(20):
            pub.publish(licence_record(i))
        pub.flush()
    poll_until(lambda: _accepted_lineage(ctx, "market-licences") == 20, what="market records accepted")
    with subscriber(ctx, "health", keys["health"], g["id"]) as sub:
        received = receive(sub, 20)
    assert received[0].value["phone"].startswith("***")  # the grantee got the masked view
    with publisher(ctx, "health", keys["health"], "health-enterprises") as pub:
        forwarded = {pub.publish(as_tax(d.value, i)) for i, d in enumerate(received[:5])}
        pub.flush()
        refusals = poll_until(refusals_of(pub, 5), what="forwarding refusals")
    assert {r.record_id for r in refusals} == forwarded
    assert {r.code for r in refusals} == {"forwarding.detected"}
    assert f"grant {g['id']}" in refusals[0].detail
    with publisher(ctx, "tax", keys["tax"], "tax-register") as pub:
        copies = {pub.publish(tax_record(i)) for i in range(3)}
        own = pub.publish(tax_record(50_000))  # an enterprise nobody else holds: accepted
        pub.flush()
        refusals = poll_until(refusals_of(pub, 3), what="re-collection refusals")
    assert {r.record_id for r in refusals} == copies and own not in copies
    assert {r.code for r in refusals} == {"recollection.detected"}
    poll_until(lambda: _accepted_lineage(ctx, "tax-register") == 1, what="the new record accepted")
    found = poll_until(
        lambda: (
            (i := _incidents(ctx)) and ("health", "forwarding") in i and ("tax", "recollection") in i and i
        ),
        what="incidents",
    )
    fwd = found[("health", "forwarding")]
    assert fwd.severity == "critical" and fwd.count == 5 and fwd.dataset_id == "health-enterprises"
    assert fwd.grant_id == g["id"]  # the incident names the grant the forwarded data came under
    assert set(fwd.evidence["record_ids"]) == forwarded
    assert found[("tax", "recollection")].count == 3


def refusals_of(pub: Any, n: int) -> Any:
    """A poll check: the publisher's rejections accumulated across calls, truthy once ``n`` arrived."""
    got: list[Any] = []

    def check() -> list[Any]:
        got.extend(pub.rejections(0.2))
        return got if len(got) >= n else []

    return check


def test_r8_r9_http_and_sdk_paths_see_each_others_records(
    ctx: BusContext, bus_stack: Any, agency_factory: Any, dataset_factory: Any
) -> None:
    keys = {a: agency_factory(a)[1] for a in ("market", "health", "tax")}
    dataset_factory("market", dataset_id="market-licences", schema=licence_schema())
    dataset_factory("health", dataset_id="health-enterprises", schema=TAX)
    dataset_factory("tax", dataset_id="tax-register", schema=TAX)
    with client_of(bus_stack, keys["market"]) as market:  # records 0-9 over HTTP
        r = market.post(
            "/v1/datasets/market-licences/records", json={"records": [licence_record(i) for i in range(10)]}
        )
        assert r.status_code == 200 and r.json()["accepted"] == 10, r.text
    with publisher(ctx, "market", keys["market"], "market-licences") as pub:  # records 10-19 with the SDK
        for i in range(10, 20):
            pub.publish(licence_record(i))
        pub.flush()
    poll_until(lambda: _accepted_lineage(ctx, "market-licences") == 20, what="market records accepted")
    with client_of(bus_stack, keys["health"]) as health:
        g = health.post(
            "/v1/grants", json=grant_body("market-licences", ["credit_code", "enterprise_name", "address"])
        ).json()
        assert g["status"] == "active"
        with client_of(bus_stack, keys["tax"]) as tax:
            body = {"records": [tax_record(12), tax_record(3), tax_record(60_000)]}  # SDK, HTTP, new
            out = tax.post("/v1/datasets/tax-register/records", json=body).json()
            assert out["accepted"] == 1
            assert [(x["index"], x["code"]) for x in out["rejected"]] == [
                (0, "recollection.detected"),
                (1, "recollection.detected"),
            ]
            assert "market-licences" in out["rejected"][0]["detail"]
        out = health.post("/v1/datasets/health-enterprises/records", json={"records": [tax_record(4)]}).json()
        assert out["rejected"][0]["code"] == "forwarding.detected" and g["id"] in out["rejected"][0]["detail"]
    with publisher(
        ctx, "tax", keys["tax"], "tax-register"
    ) as pub:  # an HTTP-published record, copied via SDK
        rid = pub.publish(tax_record(5))
        pub.flush()
        refusals = poll_until(refusals_of(pub, 1), what="refusal on the SDK path")
    assert [(r.record_id, r.code) for r in refusals] == [(rid, "recollection.detected")]
