"""Chapter 1: the embedded broker and Redis are real servers; Avro records with headers go through."""

from __future__ import annotations

import io
import time

import fastavro

from bus.demo import Demo
from bus.exchange.kafka import assign_from_committed, ensure_topics, headers_of, new_consumer, new_producer
from bus.schemas import read_record

SCHEMA = fastavro.parse_schema(
    {
        "type": "record",
        "name": "Ping",
        "fields": [{"name": "seq", "type": "int"}, {"name": "note", "type": "string"}],
    }
)


def run(demo: Demo) -> None:
    demo.chapter("1. The embedded stack: broker, Redis, store")
    ctx = demo.stack.ctx
    assert ctx is not None
    health = demo.client().get("/healthz").json()
    demo.say(f"  /healthz -> {health['parts']}")
    demo.expect(health["status"] == "ok", "gateway reports broker, Redis and store up")

    topic = ctx.topics._t("demo.ping")
    ensure_topics(ctx.bootstrap, [topic])
    producer = new_producer(ctx.bootstrap, ctx.settings)
    for i in range(5):
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, SCHEMA, {"seq": i, "note": f"hello {i}"})
        producer.produce(
            topic, buf.getvalue(), key=str(i).encode(), headers=[("bus-record-id", f"r{i}".encode())]
        )
    producer.flush(10)
    consumer = new_consumer(ctx.bootstrap, "demo-ping", ctx.settings)
    t0 = time.monotonic()
    assign_from_committed(consumer, [topic])
    got: list = []
    while len(got) < 5 and time.monotonic() - t0 < 10:
        got.extend(m for m in consumer.consume(100, 0.1) if m.error() is None)
    consumer.close()
    for m in sorted(got, key=lambda m: m.key()):
        rec = read_record(m.value() or b"", SCHEMA)
        demo.say(f"  consumed {rec} headers={dict(headers_of(m))}")
    demo.expect(len(got) == 5, f"5 Avro records produced and consumed in {time.monotonic() - t0:.2f}s")
