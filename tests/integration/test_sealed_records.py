"""Sealed records (R8, R12, R14): nothing on the broker is readable without the right key, nothing reaches a
grantee that the bus did not deliver, and only the grantee of an active grant gets its keys.

Against the real embedded broker, Redis and the whole bus in-process (gateway + pipeline).
"""

from __future__ import annotations

import base64

import httpx
import pytest
from confluent_kafka import Consumer, Producer
from sqlalchemy import select

from bus.client import Subscriber
from bus.exchange.envelope import META_HEADER, Meta
from bus.exchange.kafka import assign_from_committed, consumer_config, producer_config
from bus.store.models import Incident
from tests.helpers import licence_record, poll_until
from tests.integration.dataplane_helpers import api, grant_body, publisher, read_topic, receive

SECRETS = ("SECRET-NAME-", "SECRETID", "SECRET-ADDRESS-", "SECRET-PHONE-")


def _secret_record(i: int) -> dict:
    return {
        **licence_record(i),
        "enterprise_name": f"SECRET-NAME-{i:04d}",
        "legal_rep_id": f"SECRETID{i:06d}",
        "address": f"SECRET-ADDRESS-{i:04d}",
        "phone": f"SECRET-PHONE-{i:04d}",
    }


def _read_everything(ctx, prefix: str) -> list:
    """Every message of every topic of this bus that the broker lists, from the start (the eavesdropper)."""
    consumer = Consumer(consumer_config(ctx.bootstrap, "eavesdropper"))
    try:
        topics = [t for t in consumer.list_topics(timeout=5).topics if t.startswith(prefix)]
        assign_from_committed(consumer, topics)
        got: list = []
        while True:
            batch = [m for m in consumer.consume(1000, 1.0) if m.error() is None]
            if not batch:
                return got
            got += batch
    finally:
        consumer.close()


@pytest.fixture
def sealed(ctx, agency_factory, dataset_factory, bus_stack):
    market, market_key = agency_factory("market")
    psb, psb_key = agency_factory("psb")
    tax, tax_key = agency_factory("tax")
    ds = dataset_factory(market)
    with api(bus_stack, psb_key) as a:
        g1 = a.post(
            "/v1/grants", json=grant_body(ds, ["licence_no", "enterprise_name", "legal_rep_id"])
        ).json()
    with api(bus_stack, tax_key) as a:
        g2 = a.post("/v1/grants", json=grant_body(ds, ["licence_no", "status"])).json()
    assert g1["status"] == g2["status"] == "active"
    return {
        "ds": ds,
        "market": market,
        "market_key": market_key,
        "psb": psb,
        "psb_key": psb_key,
        "tax_key": tax_key,
        "g1": g1["id"],
        "g2": g2["id"],
        "stack": bus_stack,
    }


def _sdk(stack, key: str, grant_id: str) -> Subscriber:
    return Subscriber.from_gateway(stack.url, key, grant_id)


def test_r8_r12_an_eavesdropper_on_the_broker_reads_no_field_value(
    ctx, sealed, dataset_factory, tmp_path
) -> None:
    """R8/R12: after SDK and HTTP publishing, two grants, a conditional grant approved by its owner, a refused
    record and a sink connector, a plain Kafka consumer with no bus key reads every topic of the bus and finds
    none of the published values in any key, value or header; the grantees (and the sink) read all."""
    import json

    s = sealed
    cond = dataset_factory(s["market"], attribute="conditional")
    with api(s["stack"], s["psb_key"]) as psb:
        gc = psb.post("/v1/grants", json=grant_body(cond, ["licence_no", "enterprise_name", "address"]))
        gc = gc.json()
    assert gc["status"] == "pending"
    with api(s["stack"], s["market_key"]) as market:
        decided = market.post(
            f"/v1/grants/{gc['id']}/decision", json={"decision": "approve", "reason": "duty"}
        )
        assert decided.status_code == 200 and decided.json()["status"] == "active", decided.text
    out = tmp_path / "sink"
    with httpx.Client(base_url=s["stack"].url, headers={"Authorization": f"Bearer {ctx.admin_key}"}) as admin:
        system = admin.post(f"/v1/agencies/{s['psb']}/systems", json={
            "name": "psb-archive", "url": f"file://localhost{out}", "in_jurisdiction": True})
        assert system.status_code == 201, system.text
        made = admin.post("/v1/connectors", json={
            "name": "psb-file", "kind": "file-sink", "agency": s["psb"], "grant": gc["id"], "start": True,
            "config": {"directory": str(out), "fsync": False}})
        assert made.status_code == 201, made.text

    with publisher(ctx, s["market"], s["market_key"], s["ds"]) as pub:
        for i in range(20):
            pub.publish(_secret_record(i), key=f"SECRET-NAME-{i:04d}")
        pub.flush()
    with api(s["stack"], s["market_key"]) as market:
        resp = market.post(
            f"/v1/datasets/{s['ds']}/records", json={"records": [_secret_record(i) for i in range(20, 30)]}
        )
        assert resp.status_code == 200 and resp.json()["accepted"] == 10
        resp = market.post(
            f"/v1/datasets/{cond}/records", json={"records": [_secret_record(i) for i in range(30, 40)]}
        )
        assert resp.status_code == 200 and resp.json()["accepted"] == 10
    with publisher(ctx, s["psb"], s["psb_key"], s["ds"]) as intruder:  # refused: psb does not own it
        intruder.publish(_secret_record(99))
        intruder.flush()
    with _sdk(s["stack"], s["psb_key"], s["g1"]) as sub:
        got = receive(sub, 30)
    assert {d.value["enterprise_name"] for d in got} == {f"SECRET-NAME-{i:04d}" for i in range(30)}
    with _sdk(s["stack"], s["tax_key"], s["g2"]) as sub:
        assert len(receive(sub, 30)) == 30

    def sunk() -> set[str]:
        lines = [json.loads(x) for f in out.glob("*.jsonl") for x in f.read_text().splitlines() if x]
        return {r["value"]["address"] for r in lines}

    poll_until(lambda: len(sunk()) == 10, timeout=30, what="the sink connector wrote the conditional view")
    assert sunk() == {f"SECRET-ADDRESS-{i:04d}" for i in range(30, 40)}
    poll_until(
        lambda: len(read_topic(ctx, ctx.topics.rejected(s["ds"]), 1, timeout=0.5)) == 1, what="refusal"
    )
    msgs = _read_everything(ctx, ctx.topics.prefix)
    topics = {m.topic() for m in msgs}
    assert {
        ctx.topics.ingress(s["ds"]),
        ctx.topics.data(s["ds"]),
        ctx.topics.rejected(s["ds"]),
        ctx.topics.deliver(s["g1"]),
        ctx.topics.deliver(s["g2"]),
        ctx.topics.data(cond),
        ctx.topics.deliver(gc["id"]),
    } <= topics
    for m in msgs:
        blob = (
            (m.key() or b"")
            + (m.value() or b"")
            + b"".join(k.encode() + (v or b"") for k, v in m.headers() or ())
        )
        for secret in SECRETS:
            assert secret.encode() not in blob, f"{secret} readable on {m.topic()}"


def test_r8_a_ciphertext_moved_to_another_grant_or_with_a_changed_header_never_opens(ctx, sealed) -> None:
    """R8/R14: a record copied from one grant's topic into another's, or with its record id changed, is
    dropped before the grantee sees it (SDK and HTTP), and the HTTP read opens a forged_delivery incident."""
    s = sealed
    with publisher(ctx, s["market"], s["market_key"], s["ds"]) as pub:
        ids = [pub.publish(licence_record(i)) for i in range(3)]
        pub.flush()
    original = read_topic(ctx, ctx.topics.deliver(s["g1"]), 3)
    assert len(original) == 3, f"{len(original)} of 3 records delivered to the grant's topic"
    producer = Producer(producer_config(ctx.bootstrap))
    moved = original[0]
    producer.produce(ctx.topics.deliver(s["g2"]), moved.value(), moved.key(), headers=moved.headers())
    meta = Meta.unpack(dict(original[1].headers())[META_HEADER])
    changed = Meta(
        ids[2] if meta.record_id != ids[2] else ids[0],
        meta.publisher,
        meta.dataset,
        meta.schema_version,
        meta.published_at_ms,
        meta.grant,
        meta.scenario,
        meta.kid,
    ).pack()
    producer.produce(
        ctx.topics.deliver(s["g1"]), original[1].value(), original[1].key(), headers=[(META_HEADER, changed)]
    )
    assert producer.flush(10) == 0
    with _sdk(s["stack"], s["tax_key"], s["g2"]) as sub:
        got = receive(sub, 3)
        poll_until(lambda: sub.poll(100, 0.2) == [] and sub.dropped >= 1, what="the moved record dropped")
    assert sorted(d.record_id for d in got) == sorted(ids)
    with _sdk(s["stack"], s["psb_key"], s["g1"]) as sub:
        got = receive(sub, 3)
        poll_until(lambda: sub.poll(100, 0.2) == [] and sub.dropped >= 1, what="the changed record dropped")
    assert sorted(d.record_id for d in got) == sorted(ids)
    with api(s["stack"], s["psb_key"]) as psb:
        page = psb.get(f"/v1/grants/{s['g1']}/records", params={"limit": 100}).json()
    assert sorted(r["record_id"] for r in page["records"]) == sorted(ids)

    def forged_incident() -> bool:
        with ctx.store.session() as session:
            rows = session.scalars(select(Incident).where(Incident.kind == "forged_delivery")).all()
            return any(r.grant_id == s["g1"] for r in rows)

    poll_until(forged_incident, what="a forged_delivery incident")


def test_r8_r14_a_record_produced_straight_into_a_delivery_topic_reaches_no_grantee(ctx, sealed) -> None:
    """R8/R14: anyone can write to the broker; a record the bus did not seal for the grant is dropped by the
    SDK, the HTTP cursor and the SSE path alike."""
    s = sealed
    producer = Producer(producer_config(ctx.bootstrap))
    forged = Meta("0" * 32, s["market"], s["ds"], 1, 1, s["g1"], "licence-check", "deadbeef").pack()
    producer.produce(ctx.topics.deliver(s["g1"]), b"\x00" * 64, None, headers=[(META_HEADER, forged)])
    producer.produce(ctx.topics.deliver(s["g1"]), b"plain bytes", None)
    assert producer.flush(10) == 0
    with publisher(ctx, s["market"], s["market_key"], s["ds"]) as pub:
        real = pub.publish(licence_record(1))
        pub.flush()
    with _sdk(s["stack"], s["psb_key"], s["g1"]) as sub:
        assert [d.record_id for d in receive(sub, 1)] == [real]
        poll_until(lambda: sub.dropped >= 2, what="both forged records dropped")
    with api(s["stack"], s["psb_key"]) as psb:
        page = psb.get(f"/v1/grants/{s['g1']}/records", params={"limit": 100}).json()
        assert [r["record_id"] for r in page["records"]] == [real]
        with psb.stream("GET", f"/v1/grants/{s['g1']}/stream", timeout=10) as resp:
            for line in resp.iter_lines():
                if line.startswith("data:") and '"record_id"' in line:
                    assert real in line
                    break


def test_r8_keys_go_only_to_the_grantee_of_an_active_grant_and_every_fetch_is_audited(ctx, sealed) -> None:
    """R8: grantee 200 with A256GCM keys; another agency 403 auth.forbidden; after revocation 409
    grant.not_active; and records published after the revocation open under no key fetched before it."""
    s = sealed
    with api(s["stack"], s["psb_key"]) as psb:
        resp = psb.get(f"/v1/grants/{s['g1']}/keys")
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["grant"] == s["g1"] and body["keys"] and all(k["alg"] == "A256GCM" for k in body["keys"])
        assert all(len(base64.urlsafe_b64decode(k["k"] + "==")) == 32 for k in body["keys"])
    with api(s["stack"], s["tax_key"]) as tax:
        other = tax.get(f"/v1/grants/{s['g1']}/keys")
        assert other.status_code == 403 and other.json()["code"] == "auth.forbidden"
    with api(s["stack"], s["market_key"]) as market:
        assert market.post(f"/v1/grants/{s['g1']}/revoke", json={}).status_code == 200
        market.post(f"/v1/datasets/{s['ds']}/records", json={"records": [licence_record(5)]})
    with api(s["stack"], s["psb_key"]) as psb:
        after = psb.get(f"/v1/grants/{s['g1']}/keys")
        assert after.status_code == 409 and after.json()["code"] == "grant.not_active"
    assert read_topic(ctx, ctx.topics.deliver(s["g1"]), 1, timeout=1.0) == []  # nothing sealed for it after
    with httpx.Client(base_url=s["stack"].url, headers={"Authorization": f"Bearer {ctx.admin_key}"}) as admin:
        events = admin.get("/v1/audit/events", params={"action": "grant.keys_fetched"}).json()
    fetched = [e for e in events["events"] if e["subject_id"] == s["g1"]]
    assert fetched and fetched[0]["data"]["agency"] == s["psb"] and fetched[0]["data"]["scenario"]


def test_r8_key_rotation_during_a_steady_stream_loses_nothing_and_old_deliveries_still_open(
    ctx, sealed, monkeypatch
) -> None:
    """R8: with a new key every second the subscriber follows each new kid and receives every record; a
    fresh process (keys from the store, unwrapped with the master secret) still opens the old ones."""
    s = sealed
    monkeypatch.setattr(ctx.settings, "grant_key_rotate_hours", 1 / 3600)
    for w in s["stack"].workers:
        if getattr(w, "ctx", None) is not None and w.ctx is not ctx:
            monkeypatch.setattr(w.ctx.settings, "grant_key_rotate_hours", 1 / 3600)
    ids: list[str] = []
    got: list = []
    with (
        _sdk(s["stack"], s["psb_key"], s["g1"]) as sub,
        publisher(ctx, s["market"], s["market_key"], s["ds"]) as pub,
    ):
        kids: set[str] = set()

        def step() -> bool:
            ids.append(pub.publish(licence_record(len(ids))))
            pub.flush()
            got.extend(sub.poll(100, 0.1))
            msgs = read_topic(ctx, ctx.topics.deliver(s["g1"]), len(ids), timeout=0.2)
            kids.update(Meta.unpack(dict(m.headers())[META_HEADER]).kid for m in msgs)
            return len(kids) >= 3

        poll_until(step, timeout=30, what="three key versions in use")
        got += receive(sub, len(ids) - len({d.record_id for d in got}))
    assert {d.record_id for d in got} == set(ids) and sub.dropped == 0
    from tests.integration.dataplane_helpers import opened

    assert len(opened(ctx, s["g1"], read_topic(ctx, ctx.topics.deliver(s["g1"]), len(ids)))) == len(ids)


def test_r8_keys_of_an_ended_grant_are_destroyed_after_the_retention_by_the_running_bus(ctx, sealed) -> None:
    """R8: crypto-shredding. The retention worker of the running bus destroys every key of a grant that
    ended more than BUS_GRANT_KEY_RETENTION_DAYS ago (audited per grant); what is still on the broker
    then opens under no key the bus holds, while a live grant's keys are untouched."""
    from datetime import UTC, datetime, timedelta

    from bus.grants.keys import GrantKeys, grantee_keys
    from bus.lineage.retention import RetentionWorker
    from bus.store.models import Grant, GrantKey

    s = sealed
    with publisher(ctx, s["market"], s["market_key"], s["ds"]) as pub:
        for i in range(3):
            pub.publish(licence_record(i))
        pub.flush()
    delivered = read_topic(ctx, ctx.topics.deliver(s["g1"]), 3)
    assert len(delivered) == 3 and grantee_keys(ctx, s["g1"])
    with api(s["stack"], s["market_key"]) as market:
        assert market.post(f"/v1/grants/{s['g1']}/revoke", json={}).status_code == 200
    with ctx.store.session() as session:  # it ended just inside the retention: nothing goes yet
        session.get(Grant, s["g1"]).ended_at = datetime.now(UTC) - timedelta(days=29)
    worker = RetentionWorker(ctx, interval=0.2)
    worker.start()
    try:
        poll_until(lambda: worker.last is not None, what="a retention round")
        assert worker.keys_destroyed == {} and grantee_keys(ctx, s["g1"])
        with ctx.store.session() as session:  # now past it
            session.get(Grant, s["g1"]).ended_at = datetime.now(UTC) - timedelta(days=31)
        poll_until(lambda: not grantee_keys(ctx, s["g1"]), what="the ended grant's keys destroyed")
    finally:
        worker.stop()
    with ctx.store.session() as session:
        rows = session.scalars(select(GrantKey).where(GrantKey.grant_id == s["g1"])).all()
    assert rows and all(r.wrapped is None and r.destroyed_at is not None for r in rows)
    fresh = GrantKeys(ctx)  # a process that never saw the keys: nothing opens any more
    for m in delivered:
        assert fresh.by_kid(s["g1"], Meta.unpack(dict(m.headers())[META_HEADER]).kid) is None
    assert grantee_keys(ctx, s["g2"])  # the live grant keeps its keys
    with httpx.Client(base_url=s["stack"].url, headers={"Authorization": f"Bearer {ctx.admin_key}"}) as admin:
        events = admin.get("/v1/audit/events", params={"action": "grant.keys_destroyed"}).json()["events"]
    assert [e["subject_id"] for e in events] == [s["g1"]] and events[0]["data"]["keys"] == len(rows)
