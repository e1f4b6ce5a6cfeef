"""R15: violations open incidents, repeats are grouped, anomalies are detected, monitors follow a topic."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fastavro
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from fastavro.validation import validate
from sqlalchemy import select
from typer.testing import CliRunner

from bus.cli import app as cli
from bus.context import BusContext
from bus.exchange.kafka import assign_from_committed, new_consumer
from bus.gateway import problems, routes_incidents
from bus.lineage import audit
from bus.lineage.incidents import IncidentPolicy, record_violations
from bus.settings import Settings
from bus.store.models import AuditEvent, Incident
from tests.helpers import ROOT, poll_until

pytestmark = pytest.mark.integration
SCHEMA = fastavro.parse_schema(json.loads(Path(ROOT / "schemas" / "incident.avsc").read_text()))


def violation(
    kind: str | None = "forwarding",
    code: str = "forwarding.detected",
    agency: str = "health",
    dataset: str | None = "health-enterprises",
    grant: str | None = "g-1",
    n: int = 1,
    start: int = 0,
) -> dict[str, Any]:
    return {
        "kind": kind,
        "code": code,
        "agency_id": agency,
        "dataset_id": dataset,
        "grant_id": grant,
        "record_ids": [f"r{start + i}" for i in range(n)],
        "trace_ids": [f"t{start + i}" for i in range(n)],
        "detail": f"record copies market-licences ({start})",
    }


def incidents(ctx: BusContext) -> list[Incident]:
    with ctx.store.session() as s:
        return list(s.scalars(select(Incident).order_by(Incident.id)))


def test_r15_repeated_violations_are_grouped_into_one_incident(ctx: BusContext) -> None:
    now = datetime.now(UTC)
    policy = IncidentPolicy(evidence_cap=5)
    opened = record_violations(ctx, [violation(n=3)], policy=policy, now=now)
    assert [o["event"] for o in opened] == ["opened"]
    for k in range(1, 5):
        record_violations(ctx, [violation(n=2, start=10 * k)], policy=policy, now=now + timedelta(minutes=k))
    rows = incidents(ctx)
    assert len(rows) == 1
    inc = rows[0]
    assert (inc.kind, inc.severity, inc.agency_id, inc.dataset_id, inc.grant_id) == (
        "forwarding",
        "critical",
        "health",
        "health-enterprises",
        "g-1",
    )
    assert inc.count == 3 + 4 * 2
    assert inc.evidence["record_ids"] == ["r0", "r1", "r2", "r10", "r11"]  # capped
    assert inc.evidence["codes"] == {"forwarding.detected": 11}
    assert inc.last_at - inc.first_at == timedelta(minutes=4)


def test_r15_groups_are_per_agency_kind_and_dataset_and_end_after_a_quiet_window(ctx: BusContext) -> None:
    now = datetime.now(UTC)
    record_violations(
        ctx,
        [
            violation(),
            violation(agency="tax"),
            violation(dataset="other"),
            violation(kind=None, code="recollection.detected"),
        ],
        now=now,
    )
    assert [(i.agency_id, i.kind, i.dataset_id) for i in incidents(ctx)] == [
        ("health", "forwarding", "health-enterprises"),
        ("tax", "forwarding", "health-enterprises"),
        ("health", "forwarding", "other"),
        ("health", "recollection", "health-enterprises"),
    ]
    later = now + timedelta(seconds=IncidentPolicy().window_seconds + 1)
    record_violations(ctx, [violation()], now=later)
    assert len(incidents(ctx)) == 5  # the quiet window passed: a new incident


@pytest.mark.parametrize(
    ("code", "kind", "severity"),
    [
        ("forwarding.detected", "forwarding", "critical"),
        ("recollection.detected", "recollection", "high"),
        ("egress.refused", "egress", "high"),
        ("auth.forbidden", "access_refused", "medium"),
        ("sharing.not_eligible", "access_refused", "medium"),
        ("grant.not_active", "access_refused", "medium"),
        ("suspended", "suspended", "low"),
        ("record.unauthenticated", "bad_signature", "low"),
    ],
)
def test_r15_kind_and_severity_follow_the_code(ctx: BusContext, code: str, kind: str, severity: str) -> None:
    out = record_violations(ctx, [violation(kind=None, code=code)])
    assert (out[0]["kind"], out[0]["severity"]) == (kind, severity)
    out = record_violations(ctx, [violation(kind=code, code=code, agency="other")])  # the code given as kind
    assert (out[0]["kind"], out[0]["severity"]) == (kind, severity)


def test_r15_opening_is_audited_in_the_hash_chain(ctx: BusContext) -> None:
    out = record_violations(ctx, [violation(n=2)])
    record_violations(ctx, [violation(n=2)])  # an update is not a new audit event
    with ctx.store.session() as s:
        events = list(s.scalars(select(AuditEvent).where(AuditEvent.action == "incident.opened")))
    assert len(events) == 1
    assert events[0].subject_id == str(out[0]["id"]) and events[0].data["grant_id"] == "g-1"
    assert audit.verify(ctx.store)["ok"]


def test_r15_bad_signature_burst_raises_its_own_incident(ctx: BusContext) -> None:
    policy = IncidentPolicy(burst_bad_signatures=20)
    bad = violation(kind=None, code="record.unauthenticated", agency="rogue", grant=None)
    record_violations(ctx, [{**bad, "record_ids": [f"x{i}" for i in range(10)]}], policy=policy)
    assert {i.kind for i in incidents(ctx)} == {"bad_signature"}
    record_violations(ctx, [{**bad, "record_ids": [f"y{i}" for i in range(15)]}], policy=policy)
    burst = [i for i in incidents(ctx) if i.kind == "bad_signature_burst"]
    assert len(burst) == 1 and burst[0].severity == "high" and burst[0].agency_id == "rogue"
    assert "25 records with a bad signature" in burst[0].evidence["last_detail"]


def test_r15_the_signature_burst_threshold_is_a_setting(
    ctx: BusContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``BUS_INCIDENT_SIGNATURE_BURST`` is read when the policy is built (default 20)."""
    monkeypatch.setenv("BUS_INCIDENT_SIGNATURE_BURST", "5")
    base = ctx.settings
    ctx.settings = Settings(
        data_dir=base.data_dir,
        kafka_bootstrap=base.kafka_bootstrap,
        redis_url=base.redis_url,
        database_url=base.database_url,
        topic_prefix=base.topic_prefix,
        kafka_profile=base.kafka_profile,
    )
    assert ctx.settings.incident_signature_burst == 5
    assert IncidentPolicy.from_settings(ctx.settings).burst_bad_signatures == 5
    bad = violation(kind=None, code="record.unauthenticated", agency="rogue", grant=None)
    record_violations(ctx, [{**bad, "record_ids": [f"x{i}" for i in range(6)]}])  # no policy given
    burst = [i for i in incidents(ctx) if i.kind == "bad_signature_burst"]
    assert [(i.agency_id, i.severity) for i in burst] == [("rogue", "high")]


def test_r15_the_grouping_window_is_a_setting(ctx: BusContext) -> None:
    ctx.settings = ctx.settings.model_copy(update={"incident_window_seconds": 30.0})
    now = datetime.now(UTC)
    record_violations(ctx, [violation()], now=now)
    record_violations(ctx, [violation()], now=now + timedelta(seconds=20))  # within 30 s: grouped
    assert [i.count for i in incidents(ctx)] == [2]
    record_violations(ctx, [violation()], now=now + timedelta(seconds=51))  # 31 s quiet: a new one
    assert [i.count for i in incidents(ctx)] == [2, 1]


def test_incident_settings_default_to_the_policy_defaults() -> None:
    s = Settings()
    assert IncidentPolicy.from_settings(s) == IncidentPolicy()


def test_r15_a_sudden_rise_in_refusals_is_detected_but_a_steady_rate_is_not(ctx: BusContext) -> None:
    policy = IncidentPolicy(spike_min_refusals=30, spike_factor=5, baseline_minutes=5)
    now = datetime.now(UTC).replace(second=30)
    refused = violation(kind=None, code="sharing.not_eligible", agency="steady", grant=None)
    for k in range(5, 0, -1):  # 25 a minute for five minutes: the usual rate
        record_violations(
            ctx, [{**refused, "record_ids": [], "count": 25}], policy=policy, now=now - timedelta(minutes=k)
        )
    record_violations(ctx, [{**refused, "record_ids": [], "count": 45}], policy=policy, now=now)  # < 5 x 25
    assert not [i for i in incidents(ctx) if i.kind == "refusal_spike"]
    spiky = {**refused, "agency_id": "spiky"}
    record_violations(
        ctx, [{**spiky, "record_ids": [], "count": 2}], policy=policy, now=now - timedelta(minutes=3)
    )
    record_violations(ctx, [{**spiky, "record_ids": [], "count": 35}], policy=policy, now=now)
    spikes = [i for i in incidents(ctx) if i.kind == "refusal_spike"]
    assert [(i.agency_id, i.severity) for i in spikes] == [("spiky", "high")]


def test_r15_incidents_are_published_for_monitoring(ctx: BusContext) -> None:
    out = record_violations(ctx, [violation(n=1)])
    for _ in range(3):  # counts 2, 3, 4: published at 2 and 4 (powers of two), not at 3
        record_violations(ctx, [violation(n=1)])
    ctx.producer.flush(10)
    consumer = new_consumer(ctx.bootstrap, f"{ctx.topics.prefix}monitor", ctx.settings)
    got: list[dict[str, Any]] = []

    def read() -> bool:
        if not consumer.assignment():
            assign_from_committed(consumer, [ctx.topics.incidents])
        got.extend(json.loads(m.value()) for m in consumer.consume(100, 0.2) if m.error() is None)
        return len(got) >= 3

    try:
        poll_until(read, timeout=15, what="three incident messages")
    finally:
        consumer.close()
    assert [(m["event"], m["count"]) for m in got] == [("opened", 1), ("updated", 2), ("updated", 4)]
    assert all(m["id"] == out[0]["id"] for m in got)
    for m in got:
        assert validate(m, SCHEMA, raise_errors=True)


# --- the API --------------------------------------------------------------------------------------------
@pytest.fixture
def http(ctx: BusContext) -> TestClient:
    app = FastAPI()
    app.state.ctx = ctx
    problems.install(app)
    app.include_router(routes_incidents.router)
    return TestClient(app)


def test_r15_incidents_api_filters_and_roles(ctx: BusContext, http: TestClient, agency_factory: Any) -> None:
    _, auditor = agency_factory("audit-office", roles=("auditor",))
    _, agency = agency_factory("health")
    record_violations(
        ctx,
        [violation(), violation(kind=None, code="auth.forbidden", agency="tax", dataset=None, grant=None)],
    )
    admin = {"Authorization": f"Bearer {ctx.admin_key}"}
    aud = {"Authorization": f"Bearer {auditor}"}
    body = http.get("/v1/incidents", headers=aud).json()
    assert body["total"] == 2 and {i["kind"] for i in body["incidents"]} == {"forwarding", "access_refused"}
    assert [
        i["agency_id"]
        for i in http.get("/v1/incidents", params={"agency": "tax"}, headers=aud).json()["incidents"]
    ] == ["tax"]
    high = http.get("/v1/incidents", params={"severity": "high"}, headers=aud).json()["incidents"]
    assert [i["severity"] for i in high] == ["critical"]  # "high" means high or worse
    assert (
        http.get(
            "/v1/incidents", params={"kind": "forwarding", "dataset": "health-enterprises"}, headers=aud
        ).json()["total"]
        == 1
    )
    assert (
        http.get("/v1/incidents", params={"severity": "extreme"}, headers=aud).json()["code"]
        == "request.invalid"
    )
    r = http.get("/v1/incidents", headers={"Authorization": f"Bearer {agency}"})
    assert r.status_code == 403 and r.json()["code"] == "auth.forbidden"
    one = http.get(f"/v1/incidents/{high[0]['id']}", headers=aud).json()
    assert one["evidence"]["record_ids"] == ["r0"] and one["evidence"]["trace_ids"] == ["t0"]
    assert http.get("/v1/incidents/999999", headers=aud).json()["code"] == "incident.not_found"
    r = http.post(f"/v1/incidents/{one['id']}/resolve", json={"note": "reported to the owner"}, headers=aud)
    assert r.status_code == 403
    r = http.post(f"/v1/incidents/{one['id']}/resolve", json={"note": "reported to the owner"}, headers=admin)
    assert r.status_code == 200 and r.json()["status"] == "resolved"
    assert http.get("/v1/incidents", params={"status": "open"}, headers=aud).json()["total"] == 1
    record_violations(ctx, [violation()])  # a resolved incident is not reopened: a new one starts
    assert http.get("/v1/incidents", params={"kind": "forwarding"}, headers=aud).json()["total"] == 2


def test_r15_cli_lists_shows_and_resolves_incidents(
    ctx: BusContext, http: TestClient, serve_app: Any, agency_factory: Any
) -> None:
    _, auditor = agency_factory("audit-office", roles=("auditor",))
    record_violations(
        ctx, [violation(n=2), violation(kind=None, code="auth.forbidden", agency="tax", grant=None)]
    )
    url = serve_app(http.app)
    runner = CliRunner()
    r = runner.invoke(cli, ["incidents", "--severity", "critical", "--json", "--url", url, "--key", auditor])
    assert r.exit_code == 0, r.output
    listed = json.loads(r.stdout)["incidents"]
    assert [(i["kind"], i["agency_id"], i["count"]) for i in listed] == [("forwarding", "health", 2)]
    r = runner.invoke(cli, ["incidents", "show", str(listed[0]["id"]), "--url", url, "--key", auditor])
    assert r.exit_code == 0 and json.loads(r.stdout)["evidence"]["record_ids"] == ["r0", "r1"]
    r = runner.invoke(cli, ["incidents", "--url", url, "--key", auditor])  # the table for people
    assert r.exit_code == 0 and "incidents (2)" in r.stdout
    r = runner.invoke(
        cli,
        [
            "incidents",
            "resolve",
            str(listed[0]["id"]),
            "--note",
            "owner informed",
            "--url",
            url,
            "--key",
            ctx.admin_key,
        ],
    )
    assert r.exit_code == 0 and "resolved" in r.stdout
