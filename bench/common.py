"""Shared pieces of the benchmarks: the embedded broker, sample records, raw pipelines as baselines.

Baselines run the same topology as the bus on the same broker in the same run:
(a) raw bytes: consume -> produce at each hop, nothing decoded;
(b) the Python floor: the same hops doing only fastavro decode + encode where the bus must decode.
Hops run in their own processes, as the bus's validator and router do.
"""

from __future__ import annotations

import io
import multiprocessing as mp
import time
from collections.abc import Callable
from typing import Any

import fastavro

from bus.exchange.kafka import consumer_config, ensure_topics, new_producer
from bus.samples import licence_record, licence_schema
from bus.settings import Settings

FAST = Settings(kafka_profile="embedded")


def encoded_records(n: int) -> list[bytes]:
    parsed = fastavro.parse_schema(licence_schema())
    out = []
    for i in range(n):
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, parsed, licence_record(i))
        out.append(buf.getvalue())
    return out


def _consumer(bootstrap: str, group: str, topic: str | list[str]) -> Any:
    from confluent_kafka import Consumer

    from bus.exchange.kafka import assign_from_committed

    c = Consumer(consumer_config(bootstrap, group, FAST))
    assign_from_committed(c, topic if isinstance(topic, list) else [topic])
    return c


def _hop(bootstrap: str, src: str, dst: str | list[str], n: int, mode: str, ready: Any) -> None:
    """One middle hop: consume ``src``, (decode + encode,) produce to ``dst`` (each topic of a list)
    until ``n`` records moved."""
    dsts = dst if isinstance(dst, list) else [dst]
    consumer = _consumer(bootstrap, f"hop-{src}", src)
    producer = new_producer(bootstrap, FAST, **{"enable.idempotence": False, "acks": "1"})
    parsed = fastavro.parse_schema(licence_schema())
    reader, writer = fastavro.schemaless_reader, fastavro.schemaless_writer
    ready.set()
    moved = 0
    while moved < n:
        msgs = consumer.consume(1000, 0.05)
        for m in msgs:
            if m.error() is not None:
                continue
            value = m.value()
            if mode == "floor":
                rec = reader(io.BytesIO(value), parsed)
                buf = io.BytesIO()
                writer(buf, parsed, rec)
                value = buf.getvalue()
            for d in dsts:
                while True:
                    try:
                        producer.produce(d, value, key=m.key(), headers=m.headers())
                        break
                    except BufferError:
                        producer.poll(0.01)
            moved += 1
        producer.poll(0)
    producer.flush(30)
    consumer.close()


def run_pipeline(
    bootstrap: str,
    prefix: str,
    n: int,
    hops: int,
    mode: str,
    progress: Callable[[str], None] | None = None,
    fanout: int = 1,
) -> dict[str, float]:
    """Producer -> ``hops`` middle processes -> consumer; records/s from first produce to last receipt.

    With ``fanout`` > 1 the last hop writes every record to that many topics and the consumer reads
    them all (``records_per_s`` then counts deliveries, as the bus's fan-out figure does).
    """
    topics: list[Any] = [f"{prefix}{mode}.{i}" for i in range(hops + 1)]
    outs = [f"{topics[-1]}.{k}" for k in range(fanout)] if fanout > 1 and hops else [topics[-1]]
    if fanout > 1 and hops:
        topics[-1] = outs
    ensure_topics(bootstrap, [t for t in topics if isinstance(t, str)] + outs)
    values = encoded_records(min(n, 10_000))
    dicts = [licence_record(i) for i in range(min(n, 10_000))]
    ctx = mp.get_context("spawn")
    procs, events = [], []
    for i in range(hops):
        ev = ctx.Event()
        p = ctx.Process(target=_hop, args=(bootstrap, topics[i], topics[i + 1], n, mode, ev), daemon=True)
        p.start()
        procs.append(p)
        events.append(ev)
    for ev in events:
        ev.wait(60)
    sink = _consumer(bootstrap, f"sink-{prefix}{mode}", outs)
    producer = new_producer(bootstrap, FAST)
    parsed = fastavro.parse_schema(licence_schema())
    start = time.perf_counter()
    for i in range(n):
        if mode == "floor":  # the publisher must encode too
            buf = io.BytesIO()
            fastavro.schemaless_writer(buf, parsed, dicts[i % len(dicts)])
            value = buf.getvalue()
        else:
            value = values[i % len(values)]
        while True:
            try:
                producer.produce(topics[0], value, key=str(i).encode())
                break
            except BufferError:
                producer.poll(0.01)
    producer.flush(60)
    got = 0
    expected = n * len(outs)
    deadline = time.monotonic() + 300
    while got < expected and time.monotonic() < deadline:
        for m in sink.consume(1000, 0.05):
            if m.error() is None:
                if mode == "floor":
                    fastavro.schemaless_reader(io.BytesIO(m.value()), parsed)
                got += 1
    elapsed = time.perf_counter() - start
    sink.close()
    for p in procs:
        p.join(10)
        if p.is_alive():
            p.kill()
    if progress:
        progress(f"  {mode} x{hops} hops -> {len(outs)} topic(s): {got}/{expected} in {elapsed:.2f}s")
    return {"records": got, "seconds": elapsed, "records_per_s": got / elapsed if elapsed else 0.0}


def _latency_hop(bootstrap: str, src: str, dst: str, seconds: float, ready: Any) -> None:
    consumer = _consumer(bootstrap, f"lathop-{src}", src)
    producer = new_producer(bootstrap, FAST)
    ready.set()
    end = time.monotonic() + seconds + 10
    while time.monotonic() < end:
        for m in consumer.consume(500, 0.01):
            if m.error() is None:
                producer.produce(dst, m.value(), key=m.key())
        producer.poll(0)
    producer.flush(10)
    consumer.close()


def raw_latency(bootstrap: str, prefix: str, hops: int, rate: int, seconds: float) -> dict[str, float]:
    """Produce at ``rate`` through ``hops`` pass-through processes; p50/p99/max of send -> receive (ms)."""
    topics = [f"{prefix}{i}" for i in range(hops + 1)]
    ensure_topics(bootstrap, topics)
    ctx = mp.get_context("spawn")
    procs = []
    for i in range(hops):
        ev = ctx.Event()
        p = ctx.Process(
            target=_latency_hop, args=(bootstrap, topics[i], topics[i + 1], seconds, ev), daemon=True
        )
        p.start()
        ev.wait(60)
        procs.append(p)
    sink = _consumer(bootstrap, f"latsink-{prefix}", topics[-1])
    producer = new_producer(bootstrap, FAST)
    value = encoded_records(1)[0]
    warmup = 1.0  # sent but not measured: connections and first fetches
    total = int(rate * (seconds + warmup))
    measured = int(rate * seconds)
    measure_from = time.perf_counter() + 3600.0
    lat: list[float] = []
    import threading

    def receive() -> None:
        deadline = time.monotonic() + seconds + 15
        while len(lat) < measured and time.monotonic() < deadline:
            for m in sink.consume(500, 0.01):
                if m.error() is None and (sent_at := float(m.key())) >= measure_from:
                    lat.append((time.perf_counter() - sent_at) * 1000)

    t = threading.Thread(target=receive)
    t.start()
    start = time.perf_counter()
    measure_from = start + warmup
    for i in range(total):
        target = start + i / rate
        while (now := time.perf_counter()) < target:
            time.sleep(min(0.001, target - now))
        producer.produce(topics[0], value, key=repr(time.perf_counter()).encode())
        producer.poll(0)
    producer.flush(10)
    t.join()
    sink.close()
    for p in procs:
        p.join(15)
        if p.is_alive():
            p.kill()
    lat.sort()

    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, int(round(q / 100 * (len(lat) - 1))))] if lat else float("nan")

    return {
        "received": len(lat),
        "p50_ms": pct(50),
        "p99_ms": pct(99),
        "max_ms": lat[-1] if lat else float("nan"),
    }
