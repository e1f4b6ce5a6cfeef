"""The embedded broker and Redis are real servers: Avro records with headers go through them."""

from __future__ import annotations

import io
import time

import fastavro
import redis
from confluent_kafka import TopicPartition

from bus.embedded import EmbeddedKafka, EmbeddedRedis
from bus.exchange.kafka import assign_from_committed, ensure_topics, new_consumer, new_producer

SCHEMA = fastavro.parse_schema({
    "type": "record", "name": "Licence",
    "fields": [{"name": "id", "type": "string"}, {"name": "holder", "type": "string"},
               {"name": "score", "type": "int"}],
})


def _encode(rec: dict) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, SCHEMA, rec)
    return buf.getvalue()


def _decode(raw: bytes) -> dict:
    return fastavro.schemaless_reader(io.BytesIO(raw), SCHEMA)


def consume_n(consumer, n: int, timeout: float = 10.0) -> list:
    """Poll until ``n`` records arrived or the deadline passed."""
    got: list = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        got.extend(m for m in consumer.consume(500, 0.1) if m.error() is None)
    return got


def test_avro_records_with_headers_round_trip(kafka: EmbeddedKafka, prefix: str) -> None:
    topic = f"{prefix}roundtrip"
    ensure_topics(kafka.bootstrap, [topic])
    producer = new_producer(kafka.bootstrap)
    sent = [{"id": f"L{i}", "holder": f"holder {i}", "score": i} for i in range(50)]
    for rec in sent:
        producer.produce(topic, _encode(rec), key=rec["id"].encode(),
                         headers=[("bus-record-id", rec["id"].encode()), ("bus-dataset", b"licences")])
    assert producer.flush(10) == 0

    consumer = new_consumer(kafka.bootstrap, f"{prefix}g")
    started = time.monotonic()
    assign_from_committed(consumer, [topic])
    msgs = consume_n(consumer, len(sent))
    first_batch_after = time.monotonic() - started
    consumer.close()

    got = sorted((_decode(m.value()) for m in msgs), key=lambda r: r["score"])
    assert got == sent
    headers = {dict(m.headers())["bus-record-id"].decode(): dict(m.headers()) for m in msgs}
    assert headers["L7"]["bus-dataset"] == b"licences"
    # assign() with committed offsets starts at once; a group join would take >1 s on this broker
    assert first_batch_after < 5


def test_committed_offsets_resume_where_the_last_consumer_stopped(kafka: EmbeddedKafka, prefix: str) -> None:
    topic = f"{prefix}resume"
    ensure_topics(kafka.bootstrap, [topic])
    producer = new_producer(kafka.bootstrap)
    for i in range(40):
        producer.produce(topic, str(i).encode(), key=str(i).encode())
    producer.flush(10)

    first = new_consumer(kafka.bootstrap, f"{prefix}g")
    assign_from_committed(first, [topic])
    part = consume_n(first, 15)[:15]
    last: dict[int, int] = {}
    for m in part:
        last[m.partition()] = max(last.get(m.partition(), -1), m.offset())
    first.commit(offsets=[TopicPartition(topic, p, o + 1) for p, o in last.items()], asynchronous=False)
    first.close()

    second = new_consumer(kafka.bootstrap, f"{prefix}g")
    assign_from_committed(second, [topic])
    rest = consume_n(second, 40 - len(part), timeout=5)
    second.close()
    seen = {m.value() for m in part} | {m.value() for m in rest}
    assert len(rest) == 40 - len(part)
    assert seen == {str(i).encode() for i in range(40)}


def test_embedded_redis_is_a_real_server_with_append_only_file(redis_server: EmbeddedRedis) -> None:
    client = redis.Redis.from_url(redis_server.url)
    client.set("probe", "1")
    assert client.get("probe") == b"1"
    assert client.config_get("appendonly")["appendonly"] == "yes"
    client.close()


def test_ensure_topics_creates_once_and_is_idempotent(kafka: EmbeddedKafka, prefix: str) -> None:
    """Creating topics that partly exist keeps the existing ones (no error, no change) and adds the rest
    with the bus's partition count (grants and the receipts worker call this on every start)."""
    from bus.exchange.kafka import admin

    first, second = f"{prefix}a", f"{prefix}b"
    ensure_topics(kafka.bootstrap, [first])
    ensure_topics(kafka.bootstrap, [first, second, second])
    topics = admin(kafka.bootstrap).list_topics(timeout=5).topics
    assert len(topics[first].partitions) == 4 and len(topics[second].partitions) == 4
