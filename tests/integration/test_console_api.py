"""The console's server side without a browser: ``GET /v1/lineage/subjects`` fed by the real validator,
``/problems/{code}``, the OpenLineage facet schema, problem ``type`` URIs under ``BUS_PUBLIC_URL``, the
console's static files and headers (SQLite and PostgreSQL)."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from bus.context import BusContext
from bus.errors import all_codes
from bus.gateway.app import create_app
from bus.store.models import SubjectIndex
from tests.helpers import licence_record, poll_until
from tests.integration.dataplane_helpers import grant, publisher

pytestmark = pytest.mark.integration


@pytest.fixture
def http(ctx: BusContext) -> TestClient:
    return TestClient(create_app(ctx))


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def exchange(ctx: BusContext, agency_factory: Any, dataset_factory: Any, data_plane: Any) -> dict[str, Any]:
    """market publishes 3 licences through the SDK; psb and tax hold grants; the router delivered them."""
    market, market_key = agency_factory("market")
    psb, _ = agency_factory("psb")
    tax, _ = agency_factory("tax")
    _, auditor_key = agency_factory("audit-office", roles=("auditor",))
    ds = dataset_factory(market)
    grants = {a: grant(ctx, a, ds, scenario=f"{a}-duties")["id"] for a in (psb, tax)}
    with publisher(ctx, market, market_key, ds) as pub:
        ids = [pub.publish(licence_record(i)) for i in range(3)]
        pub.flush()
    from bus.lineage import queries

    def delivered() -> bool:
        with ctx.store.session() as s:
            try:
                return all(len(queries.record_lineage(s, i)["deliveries"]) == 2 for i in ids)
            except Exception:
                return False

    poll_until(delivered, timeout=20, what="3 records delivered under 2 grants")
    return {"ds": ds, "ids": ids, "grants": grants, "market_key": market_key, "auditor_key": auditor_key}


def test_r14_subjects_answer_which_grants_received_a_persons_records(
    ctx: BusContext, http: TestClient, exchange: dict[str, Any]
) -> None:
    """R14: the validator indexed the accepted records; the lookup names the dataset, both grants with
    their agencies and scenarios, and the record; the index holds no raw value."""
    person = licence_record(1)["legal_rep_id"]
    r = http.get(
        "/v1/lineage/subjects",
        params={"semantic": "person.id_number", "value": person, "reason": "subject access request"},
        headers=bearer(exchange["auditor_key"]),
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["records"] == 1 and body["truncated"] is False
    assert [d["dataset"] for d in body["datasets"]] == [exchange["ds"]]
    got = {x["grant"]: (x["agency"], x["scenario"]["code"], x["records"]) for x in body["recipients"]}
    assert got == {
        exchange["grants"]["psb"]: ("psb", "psb-duties", 1),
        exchange["grants"]["tax"]: ("tax", "tax-duties", 1),
    }
    assert [i["record_id"] for i in body["items"]] == [exchange["ids"][1]]
    with ctx.store.session() as s:
        assert s.scalar(select(func.count()).select_from(SubjectIndex)) == 3 * 3  # 3 identifiers each
        values = s.scalars(select(SubjectIndex.value_key)).all()
    assert person not in values and all(len(v) == 64 for v in values)
    # the question itself is audited with its reason and the keyed value, never the value
    events = http.get(
        "/v1/audit/events", params={"action": "lineage.subject_lookup"}, headers=bearer(ctx.admin_key)
    ).json()["events"]
    assert events[-1]["actor"] == "audit-office"
    assert events[-1]["data"]["reason"] == "subject access request"
    assert events[-1]["data"]["records"] == 1
    assert person not in str(events[-1])


def test_r14_subjects_of_an_unknown_value_is_an_empty_answer(
    ctx: BusContext, http: TestClient, exchange: dict[str, Any]
) -> None:
    r = http.get(
        "/v1/lineage/subjects",
        params={"semantic": "enterprise.credit_code", "value": "nobody", "reason": "check"},
        headers=bearer(ctx.admin_key),
    )
    assert r.status_code == 200
    assert r.json()["records"] == 0 and r.json()["recipients"] == []


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"semantic": "person.id_number", "value": "x"}, "reason"),
        ({"semantic": "person.id_number", "value": "x", "reason": "   "}, "reason"),
        ({"semantic": "person.name", "value": "x", "reason": "why"}, "identifier"),
        ({"semantic": "Person", "value": "x", "reason": "why"}, "semantic"),
        ({"semantic": "person.id_number", "reason": "why"}, "value"),
    ],
)
def test_r14_subjects_need_a_reason_and_an_identifier_semantic(
    ctx: BusContext, http: TestClient, params: dict[str, str], field: str
) -> None:
    r = http.get("/v1/lineage/subjects", params=params, headers=bearer(ctx.admin_key))
    assert r.status_code == 422 and r.json()["code"] == "request.invalid"
    assert field in r.json()["detail"]


def test_r14_an_agency_may_not_ask_who_received_data(
    ctx: BusContext, http: TestClient, exchange: dict[str, Any]
) -> None:
    params = {"semantic": "person.id_number", "value": "x", "reason": "curious"}
    r = http.get("/v1/lineage/subjects", params=params, headers=bearer(exchange["market_key"]))
    assert r.status_code == 403 and r.json()["code"] == "auth.forbidden"
    assert http.get("/v1/lineage/subjects", params=params).status_code == 401


def test_r14_problem_types_point_at_pages_the_gateway_serves(ctx: BusContext, http: TestClient) -> None:
    """Problem ``type`` URIs resolve: /problems/{code} explains the code (same codes as before)."""
    r = http.get("/v1/audit/verify")
    assert r.json()["type"] == "http://testserver/problems/auth.missing"
    page = http.get("/problems/auth.missing")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "Authentication required" in page.text and "401" in page.text
    index = http.get("/problems").text
    assert all(f"/problems/{code}'" in index for code in all_codes())
    missing = http.get("/problems/no.such_code")
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"


def test_r14_problem_types_use_the_configured_public_url(ctx: BusContext) -> None:
    ctx.settings.public_url = "https://bus.example.gov/"
    http = TestClient(create_app(ctx))
    assert http.get("/v1/audit/verify").json()["type"] == "https://bus.example.gov/problems/auth.missing"


def test_r14_openlineage_grant_facet_points_at_its_schema_and_validates(
    ctx: BusContext, http: TestClient, exchange: dict[str, Any]
) -> None:
    """The custom facet's ``_schemaURL`` is served by the gateway, and the facet validates against it."""
    events = http.get(
        f"/v1/lineage/datasets/{exchange['ds']}/openlineage", headers=bearer(ctx.admin_key)
    ).json()["events"]
    facets = [e["run"]["facets"]["databus_grant"] for e in events if "databus_grant" in e["run"]["facets"]]
    assert len(facets) == 2
    url = facets[0]["_schemaURL"]
    assert url == "http://testserver/openlineage/facets/1-0-0/DatabusGrantFacet.json"
    schema = http.get(url.removeprefix("http://testserver")).json()
    for facet in facets:
        jsonschema.validate(facet, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**facets[0], "grantId": 7}, schema)


def test_r14_console_files_are_served_with_a_strict_policy_and_nothing_else(
    ctx: BusContext, http: TestClient
) -> None:
    page = http.get("/console")
    assert page.status_code == 200 and "<title>" in page.text
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe" not in csp and "default-src 'none'" in csp
    assert page.headers["referrer-policy"] == "no-referrer"
    js = http.get("/console/static/js/app.js")
    assert js.headers["content-type"].startswith("text/javascript")
    lib = http.get("/console/static/vendor/cytoscape.min.js")
    assert lib.status_code == 200 and len(lib.content) > 100_000
    for bad in ["../routes.py", "..%2Froutes.py", "js/../../docs.py", "vendor/nothing.js", "/etc/passwd"]:
        r = http.get(f"/console/static/{bad}")
        assert r.status_code == 404, bad
    config = http.get("/console/config.json").json()
    assert set(config) == {"version", "jaeger_url"}


def test_r14_console_links_trace_ids_to_jaeger_when_configured(ctx: BusContext) -> None:
    ctx.settings.jaeger_url = "http://jaeger.internal:16686"
    http = TestClient(create_app(ctx))
    assert http.get("/console/config.json").json()["jaeger_url"] == "http://jaeger.internal:16686"
