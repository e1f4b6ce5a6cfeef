"""R14: one poison record costs only itself. Whatever a record on ``ingress.*`` carries — a header of any
bytes, numbers out of any range, no envelope, a topic name Kafka cannot mirror — it becomes that record's
refusal, recorded once; the records after it are delivered and the pipeline never stalls or re-delivers.
(Regression tests of the cases found by the hardening issue.)"""

from __future__ import annotations

import struct

from bus.exchange.envelope import META_HEADER
from bus.exchange.kafka import new_producer
from bus.lineage import queries
from tests.helpers import licence_record, poll_until
from tests.integration.dataplane_helpers import (
    headers_of,
    market_and_psb,
    publisher,
    raw_ingress,
    read_topic,
    receive,
    subscriber,
)


def _meta(record_id: bytes, version: int, texts: list[bytes]) -> bytes:
    out = struct.pack(">B16sIQ", 1, record_id, version, 0)
    for t in texts:
        out += struct.pack(">H", len(t)) + t
    return out


def test_r14_poison_records_are_refused_once_each_and_the_stream_goes_on(
    ctx, agency_factory, dataset_factory, data_plane
) -> None:
    market, market_key, psb, psb_key, ds, g = market_and_psb(ctx, agency_factory, dataset_factory)
    producer = new_producer(ctx.bootstrap)
    topic = ctx.topics.ingress(ds)
    poison = [
        [("bus-schema-version", b"9" * 20), ("bus-record-id", b"\xff\xfe")],  # the old headers, out of range
        [(META_HEADER, _meta(b"\x01" * 16, 2**32 - 1, [market.encode(), ds.encode(), b"", b"", b"i1"]))],
        [(META_HEADER, _meta(b"\x02" * 16, 1, [b"\xff\xfe\xfd", ds.encode(), b"", b"", b"i1"]))],  # not UTF-8
        [(META_HEADER, b"\x01" + b"\x00" * 5)],  # truncated
        [(META_HEADER, b"\x07" * 300)],  # unknown layout
        [(META_HEADER, None)],
    ]
    with publisher(ctx, market, market_key, ds) as pub:
        first = pub.publish(licence_record(0))
        pub.flush()
        for headers in poison:
            producer.produce(topic, b"\x00" * 40, b"k", headers=headers)
        producer.produce(topic, b"no envelope at all", None)
        # a record sealed by the owner but naming a twenty-digit schema version cannot even be packed:
        raw_ingress(ctx, ds, b"\x00", publisher=market, signing_key=market_key, version="9" * 20)
        assert producer.flush(10) == 0
        long_name = ctx.topics.ingress("x" * (249 - len(ctx.topics.ingress(""))))  # rejected.<it> is too long
        producer.produce(long_name, b"\x00" * 40, None, headers=[(META_HEADER, b"\x01")])
        assert producer.flush(10) == 0
        last = pub.publish(licence_record(1))
        pub.flush()
    with subscriber(ctx, psb, psb_key, g["id"]) as sub:
        assert sorted(d.record_id for d in receive(sub, 2)) == sorted([first, last])
    pipeline, _ = data_plane
    expected = len(poison) + 2  # the poison list, the bare record, the sealed one with a bad version
    poll_until(lambda: pipeline.refused >= expected, what="every poison record refused")
    refusals = read_topic(ctx, ctx.topics.rejected(ds), expected, timeout=5)
    codes = [headers_of(m).get("bus-error-code") for m in refusals]
    assert len(refusals) == expected, "each poison record is refused exactly once (no retried batch)"
    assert set(codes) <= {"record.unauthenticated", "record.invalid"}
    assert pipeline.alive() and pipeline.paused_since is None and pipeline.last_error is None
    with ctx.store.session() as s:
        assert queries.record_lineage(s, last)["validation"]["outcome"] == "accepted"


def test_r14_a_batch_whose_evidence_cannot_be_stored_is_not_delivered_twice(
    ctx, agency_factory, dataset_factory, data_plane, monkeypatch
) -> None:
    """R14: the broker took a batch's outputs but the store refused its evidence: the pipeline retries the
    evidence alone (the commit waits), so every grantee gets each record once, not once per retry."""
    market, market_key, psb, psb_key, ds, g = market_and_psb(ctx, agency_factory, dataset_factory)
    pipeline, _ = data_plane
    real = pipeline.ledger.published
    failures = {"left": 3}

    def flaky(batch) -> None:
        if failures["left"] > 0:
            failures["left"] -= 1
            raise OSError("store away")
        real(batch)

    monkeypatch.setattr(pipeline.ledger, "published", flaky)
    with publisher(ctx, market, market_key, ds) as pub:
        ids = [pub.publish(licence_record(i)) for i in range(20)]
        pub.flush()
    with subscriber(ctx, psb, psb_key, g["id"]) as sub:
        got = receive(sub, 20)
    poll_until(lambda: failures["left"] == 0 and pipeline.paused_since is None, what="evidence stored")
    delivered = [headers_of(m)["bus-record-id"] for m in read_topic(ctx, ctx.topics.deliver(g["id"]), 40, 2)]
    assert sorted(delivered) == sorted(ids), "no record produced twice while the evidence was retried"
    assert sorted(d.record_id for d in got) == sorted(ids)
