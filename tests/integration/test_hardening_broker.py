"""R14 (issue 13, item 2): a broker that lost its topics is reported, and nothing acknowledged before is
silently answered or skipped: /healthz 503 with the reason and an incident, replays of an
Idempotency-Key publish again, cursors past the end answer ``cursor.stale`` (409) with a new start.

These tests run their own broker (restarted on the same port mid-test); Redis is the session one.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer
from fastapi.testclient import TestClient

from bus.context import BusContext
from bus.embedded import EmbeddedKafka
from bus.exchange import broker_identity
from bus.exchange.kafka import ensure_topics
from bus.gateway.app import create_app
from bus.gateway.routes_subscribe import decode_cursor, encode_cursor
from bus.settings import Settings
from tests.helpers import licence_record, poll_until
from tests.integration.dataplane_helpers import grant_body


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[EmbeddedKafka]:
    broker = EmbeddedKafka(tmp_path / "broker")
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def bctx(settings: Settings, own_broker: EmbeddedKafka) -> Iterator[BusContext]:
    s = settings.model_copy(update={"kafka_bootstrap": own_broker.bootstrap})
    c = BusContext.create(s, bootstrap=own_broker.bootstrap, redis_url=s.redis_url or "").start()
    yield c
    c.close()


def _restart(broker: EmbeddedKafka, ctx: BusContext) -> EmbeddedKafka:
    """Stop the broker and start an empty one on the same port (what a crashed `databus up` does)."""
    if ctx._producer is not None:
        ctx._producer.flush(5)
        ctx._producer = None
    broker.stop()
    again = EmbeddedKafka(broker.data_dir, port=broker.port)
    again.start()
    return again


def test_r14_broker_loss_is_reported_and_replays_publish_again(
    bctx: BusContext, own_broker: EmbeddedKafka, agency_factory, dataset_factory
) -> None:
    owner, owner_key = agency_factory()
    ds = dataset_factory(owner)
    client = TestClient(create_app(bctx))
    auth = {"Authorization": f"Bearer {owner_key}", "Idempotency-Key": "batch-1"}
    body = {"records": [licence_record(i) for i in range(3)]}
    assert client.get("/healthz").status_code == 200  # first sight: the broker is adopted
    first = client.post(f"/v1/datasets/{ds}/records", json=body, headers=auth).json()
    again = client.post(f"/v1/datasets/{ds}/records", json=body, headers=auth).json()
    assert again.get("replayed") and again["record_ids"] == first["record_ids"]

    broker = _restart(own_broker, bctx)
    try:
        def degraded() -> dict | None:
            r = client.get("/healthz")
            return r.json() if r.status_code == 503 else None

        body_h = poll_until(degraded, timeout=10, what="loss reported")
        assert body_h["failing"] == ["broker"]
        broker_part = body_h["parts"]["broker"]
        assert "lost its topics" in broker_part["error"] and ds in broker_part["lost"]
        incident = client.get(f"/v1/incidents/{broker_part['incident']}",
                              headers={"Authorization": f"Bearer {bctx.admin_key}"}).json()
        assert incident["kind"] == "broker_lost" and incident["severity"] == "critical"
        assert ds in incident["evidence"]["last_detail"]

        # the same Idempotency-Key publishes again: the first answer's ids do not exist any more
        replay = client.post(f"/v1/datasets/{ds}/records", json=body, headers=auth).json()
        assert not replay.get("replayed") and replay["accepted"] == 3
        assert set(replay["record_ids"]).isdisjoint(first["record_ids"])

        # resolving the incident clears the 503
        admin = {"Authorization": f"Bearer {bctx.admin_key}"}
        resolved = client.post(f"/v1/incidents/{incident['id']}/resolve", json={"note": "re-sent"},
                               headers=admin)
        assert resolved.status_code == 200, resolved.text
        assert client.get("/healthz").status_code == 200
    finally:
        broker.stop()


def test_r14_loss_is_recorded_once_across_checks(bctx: BusContext, own_broker: EmbeddedKafka) -> None:
    assert broker_identity.check(bctx) is None
    broker = _restart(own_broker, bctx)
    try:
        first = broker_identity.check(bctx)
        second = broker_identity.check(bctx)
        assert first is not None and second is not None and first.incident_id == second.incident_id
    finally:
        broker.stop()


def test_r14_clean_stop_of_the_embedded_broker_is_not_a_loss(bctx: BusContext, own_broker) -> None:
    assert broker_identity.check(bctx) is None
    broker_identity.forget(bctx)
    broker = _restart(own_broker, bctx)
    try:
        assert broker_identity.check(bctx) is None
    finally:
        broker.stop()


def _grant(ctx: BusContext, agency_factory, dataset_factory) -> tuple[TestClient, str, dict[str, str]]:
    owner, _ = agency_factory()
    _, psb_key = agency_factory()
    ds = dataset_factory(owner)
    client = TestClient(create_app(ctx))
    auth = {"Authorization": f"Bearer {psb_key}"}
    grant = client.post("/v1/grants", json=grant_body(ds, ["licence_no"]), headers=auth).json()
    ensure_topics(ctx.bootstrap, [ctx.topics.deliver(grant["id"])])
    return client, grant["id"], auth


def test_r14_cursor_past_the_end_is_409_cursor_stale(bctx, agency_factory, dataset_factory) -> None:
    client, grant, auth = _grant(bctx, agency_factory, dataset_factory)
    cursor = encode_cursor({0: 5000, 1: 3, 2: 0, 3: 0})
    for path in ("records", "stream"):
        resp = client.get(f"/v1/grants/{grant}/{path}", params={"after": cursor, "wait": 0}, headers=auth)
        assert resp.status_code == 409, resp.text
        problem = resp.json()
        assert problem["code"] == "cursor.stale" and problem["stale"] == {"0": 5000, "1": 3}
        assert decode_cursor(problem["start"]) == {0: 0, 1: 0, 2: 0, 3: 0}
    ok = client.get(f"/v1/grants/{grant}/records", params={"after": problem["start"], "wait": 0, "limit": 0},
                    headers=auth)
    assert ok.status_code == 200


def test_r14_cursor_at_the_end_of_a_multi_record_batch_is_not_stale(
    bctx, agency_factory, dataset_factory
) -> None:
    """The embedded broker's ListOffsets answers the last batch's base offset + 1 (1 here, for one batch
    of 10): a cursor at 10 is at the end, not past it."""
    client, grant, auth = _grant(bctx, agency_factory, dataset_factory)
    p = Producer({"bootstrap.servers": bctx.bootstrap, "linger.ms": 50})
    for i in range(10):
        p.produce(bctx.topics.deliver(grant), b"x%d" % i, partition=0)
    assert p.flush(10) == 0
    for at, status in ((10, 200), (11, 409)):
        resp = client.get(f"/v1/grants/{grant}/records",
                          params={"after": encode_cursor({0: at}), "wait": 0, "limit": 0}, headers=auth)
        assert resp.status_code == status, resp.text


def test_r14_cursor_into_a_restarted_broker_is_stale(
    bctx, own_broker, agency_factory, dataset_factory
) -> None:
    client, grant, auth = _grant(bctx, agency_factory, dataset_factory)
    p = Producer({"bootstrap.servers": bctx.bootstrap})
    for _ in range(5):
        p.produce(bctx.topics.deliver(grant), b"x", partition=1)
    assert p.flush(10) == 0
    cursor = encode_cursor({1: 5})
    path = f"/v1/grants/{grant}/records"
    ok = client.get(path, params={"after": cursor, "wait": 0, "limit": 0}, headers=auth)
    assert ok.status_code == 200
    broker = _restart(own_broker, bctx)
    try:
        deadline = time.monotonic() + 10
        resp = client.get(path, params={"after": cursor, "wait": 0}, headers=auth)
        while resp.status_code == 503 and time.monotonic() < deadline:  # the admin client reconnecting
            resp = client.get(path, params={"after": cursor, "wait": 0}, headers=auth)
        assert resp.status_code == 409 and resp.json()["code"] == "cursor.stale", resp.text
    finally:
        broker.stop()
