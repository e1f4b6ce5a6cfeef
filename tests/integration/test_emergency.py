"""R15: the emergency switch suspends and resumes an agency, a dataset or a grant, audited and announced."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from bus.cli import app as cli
from bus.context import BusContext
from bus.exchange.policy_events import channel, current_version
from bus.gateway import problems, routes_emergency
from bus.lineage import audit
from bus.store.models import Agency, AuditEvent, Dataset, Grant
from tests.helpers import licence_record, poll_until
from tests.integration.dataplane_helpers import grant, publisher, receive, subscriber

pytestmark = pytest.mark.integration
POLL = 0.1  # the subscriber's poll interval: a delivery can be seen this much after it happened


@pytest.fixture
def http(ctx: BusContext) -> TestClient:
    app = FastAPI()
    app.state.ctx = ctx
    problems.install(app)
    app.include_router(routes_emergency.router)
    return TestClient(app)


@pytest.fixture
def world(ctx: BusContext, agency_factory: Any, dataset_factory: Any) -> dict[str, str]:
    keys = {a: agency_factory(a)[1] for a in ("market", "health")}
    keys["auditor"] = agency_factory("audit-office", roles=("auditor",))[1]
    dataset_factory("market", dataset_id="market-licences")
    with ctx.store.session() as s:
        for gid, status in (("g-active", "active"), ("g-revoked", "revoked"), ("g-pending", "pending")):
            s.add(
                Grant(
                    id=gid,
                    dataset_id="market-licences",
                    agency_id="health",
                    fields=["licence_no"],
                    scenario_code="S",
                    scenario_description="d",
                    legal_basis="l",
                    status=status,
                )
            )
    return keys


def admin(ctx: BusContext) -> dict[str, str]:
    return {"Authorization": f"Bearer {ctx.admin_key}"}


@pytest.mark.parametrize("kind", ["agency", "dataset", "grant"])
def test_r15_suspend_and_resume_set_the_flag_audit_and_announce(
    ctx: BusContext, http: TestClient, world: dict, kind: str
) -> None:
    target = {"agency": "health", "dataset": "market-licences", "grant": "g-active"}[kind]
    pubsub = ctx.redis.pubsub()
    pubsub.subscribe(channel(ctx))
    poll_until(lambda: pubsub.get_message(timeout=0.1), what="subscription confirmed")
    before = current_version(ctx)
    r = http.post(
        "/v1/emergency/suspend",
        headers=admin(ctx),
        json={"kind": kind, "id": target, "reason": "suspected leak"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["suspended"] is True and r.json()["changed"] is True
    assert r.json()["policy_version"] == current_version(ctx) > before
    msg = poll_until(lambda: pubsub.get_message(timeout=0.1), what="announcement")
    assert json.loads(msg["data"]) == {"kind": kind, "id": target, "version": r.json()["policy_version"]}

    def state() -> Any:
        with ctx.store.session() as s:
            if kind == "agency":
                return s.get(Agency, target).suspended  # type: ignore[union-attr]
            if kind == "dataset":
                return s.get(Dataset, target).suspended  # type: ignore[union-attr]
            g = s.get(Grant, target)
            assert g is not None
            return g.status, g.version

    assert state() in (True, ("suspended", 2))
    listed = http.get(
        "/v1/emergency/suspensions", headers={"Authorization": f"Bearer {world['auditor']}"}
    ).json()
    assert target in listed[{"agency": "agencies", "dataset": "datasets", "grant": "grants"}[kind]]
    again = http.post(
        "/v1/emergency/suspend", headers=admin(ctx), json={"kind": kind, "id": target, "reason": "x"}
    )
    assert again.json()["changed"] is False  # idempotent
    r = http.post(
        "/v1/emergency/resume", headers=admin(ctx), json={"kind": kind, "id": target, "reason": "cleared"}
    )
    assert r.status_code == 200 and r.json()["changed"] is True
    assert state() in (False, ("active", 3))
    with ctx.store.session() as s:
        events = list(
            s.scalars(
                select(AuditEvent).where(
                    AuditEvent.subject_id == target, AuditEvent.action.like("emergency.%")
                )
            )
        )
    assert [(e.action, e.actor, e.data["reason"]) for e in events] == [
        ("emergency.suspended", "admin", "suspected leak"),
        ("emergency.resumed", "admin", "cleared"),
    ]
    assert audit.verify(ctx.store)["ok"]
    pubsub.close()


def test_r15_switch_refusals(ctx: BusContext, http: TestClient, world: dict) -> None:
    def post(path: str, body: dict, headers: dict | None = None) -> Any:
        return http.post(f"/v1/emergency/{path}", headers=headers or admin(ctx), json=body)

    r = post(
        "suspend",
        {"kind": "grant", "id": "g-active", "reason": "x"},
        {"Authorization": f"Bearer {world['market']}"},
    )
    assert r.status_code == 403 and r.json()["code"] == "auth.forbidden"
    r = post(
        "suspend",
        {"kind": "grant", "id": "g-active", "reason": "x"},
        {"Authorization": f"Bearer {world['auditor']}"},
    )
    assert r.status_code == 403
    assert (
        post("suspend", {"kind": "grant", "id": "g-revoked", "reason": "x"}).json()["code"]
        == "grant.not_active"
    )
    assert (
        post("suspend", {"kind": "grant", "id": "g-pending", "reason": "x"}).json()["code"]
        == "grant.not_active"
    )
    assert (
        post("resume", {"kind": "grant", "id": "g-revoked", "reason": "x"}).json()["code"]
        == "grant.not_active"
    )
    assert post("suspend", {"kind": "grant", "id": "nope", "reason": "x"}).json()["code"] == "grant.not_found"
    assert (
        post("suspend", {"kind": "dataset", "id": "nope", "reason": "x"}).json()["code"]
        == "catalog.not_found"
    )
    assert (
        post("suspend", {"kind": "agency", "id": "nope", "reason": "x"}).json()["code"] == "agency.not_found"
    )
    for bad in (
        {"kind": "planet", "id": "x", "reason": "x"},
        {"kind": "grant", "id": "g-active"},
        {"kind": "grant", "id": "g-active", "reason": ""},
    ):
        r = post("suspend", bad)
        assert r.status_code == 422 and r.json()["code"] == "request.invalid"
    with ctx.store.session() as s:
        assert s.get(Grant, "g-active").status == "active"  # type: ignore[union-attr]


# --- on a steady stream, through the real validator and router ------------------------------------------
class SteadyPublisher(threading.Thread):
    """Publishes licence records one every ~10 ms, remembering when each was sent."""

    def __init__(self, pub: Any) -> None:
        super().__init__(daemon=True)
        self.pub = pub
        self.sent_at: dict[str, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            rec = licence_record(i)
            self.pub.publish(rec)
            self.sent_at[rec["licence_no"]] = time.monotonic()
            self.pub.producer.poll(0)
            i += 1
            self.stop.wait(0.01)
        self.pub.flush()


@pytest.mark.parametrize("kind", ["grant", "dataset"])
def test_r15_suspension_stops_a_steady_stream_within_one_second(
    ctx: BusContext, http: TestClient, kind: str, agency_factory: Any, dataset_factory: Any, data_plane: Any
) -> None:
    market, market_key = agency_factory("market")
    health, health_key = agency_factory("health")
    ds = dataset_factory(market, dataset_id="market-licences")
    g = grant(ctx, health, ds)
    target = g["id"] if kind == "grant" else ds
    with publisher(ctx, market, market_key, ds) as pub, subscriber(ctx, health, health_key, g["id"]) as sub:
        stream = SteadyPublisher(pub)
        stream.start()
        try:
            receive(sub, 20)  # the stream flows
            r = http.post(
                "/v1/emergency/suspend",
                headers=admin(ctx),
                json={"kind": kind, "id": target, "reason": "drill"},
            )
            assert r.status_code == 200, r.text
            suspended_at = time.monotonic()
            delivered: list[str] = []
            while time.monotonic() < suspended_at + 2.2:  # keep reading while the publisher keeps going
                delivered.extend(d.value["licence_no"] for d in sub.poll(1000, 0.1))
        finally:
            stream.stop.set()
            stream.join(10)
        late = [n for n, t in stream.sent_at.items() if t > suspended_at + 1.0]
        assert len(late) > 30, "the stream did not keep flowing after the suspension"
        delivered_late = [n for n in delivered if stream.sent_at[n] > suspended_at + 1.0 + POLL]
        assert delivered_late == [], (
            f"{len(delivered_late)} records published >1 s after the suspension arrived"
        )
        http.post(
            "/v1/emergency/resume", headers=admin(ctx), json={"kind": kind, "id": target, "reason": "over"}
        )
        after = [pub.publish(licence_record(100_000 + i)) for i in range(5)]
        pub.flush()
        got = poll_until(
            lambda: [d for d in sub.poll(1000, 0.1) if d.record_id in after],
            timeout=10,
            what="deliveries after the resume",
        )
        assert got


def test_r15_cli_suspend_and_resume(ctx: BusContext, http: TestClient, world: dict, serve_app: Any) -> None:
    url = serve_app(http.app)
    runner = CliRunner()
    common = ["--url", url, "--key", ctx.admin_key]
    r = runner.invoke(cli, ["suspend", "grant", "g-active", "--reason", "drill", *common])
    assert r.exit_code == 0, r.output
    assert "grant g-active suspended" in r.output
    with ctx.store.session() as s:
        assert s.get(Grant, "g-active").status == "suspended"  # type: ignore[union-attr]
    r = runner.invoke(cli, ["resume", "grant", "g-active", "--reason", "drill over", "--json", *common])
    assert r.exit_code == 0 and json.loads(r.stdout)["suspended"] is False
    r = runner.invoke(cli, ["suspend", "grant", "g-revoked", "--reason", "x", *common])
    assert r.exit_code == 1 and "grant.not_active" in r.output
    r = runner.invoke(cli, ["suspend", "planet", "x", "--reason", "x", *common])
    assert r.exit_code == 2  # usage error: the kind is one of agency, dataset, grant
