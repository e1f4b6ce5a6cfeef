"""R11 executor throughput over ``data.<dataset>`` as a ratio of a raw consume of the same topic, same run.

    python -m bench.operators [--records 50000]

An embedded bus (no gateway, no other workers); the records go into ``data.<dataset>`` through the HTTP
publish path's in-process logic (as the executor's own results do); then a raw confluent-kafka consumer
reads the topic from the beginning, and the operator executor runs one operation (group by county,
count and sum, k=10) over the same records. Both are timed from their start to the last record read.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from bus.exchange.kafka import new_consumer, partitions_of
from bus.gateway.auth import Principal
from bus.keys import hash_key, new_api_key, signing_secret_for
from bus.operations import rulebook, service
from bus.operations.executor import OperatorWorker
from bus.operations.rules import AnalysisRule, MeasureRule
from bus.operations.sink import close_sink, publish_results
from bus.operations.spec import spec_from_json
from bus.samples import licence_record, licence_schema
from bus.settings import Settings
from bus.stack import Stack
from bus.store.models import Agency, Dataset, SchemaVersion
from bus.vocab import MeasureFn


def _setup(ctx) -> str:  # type: ignore[no-untyped-def]
    with ctx.store.session() as s:
        for aid, roles in (("market", ["agency"]), ("oper", ["operator"])):
            key = new_api_key(aid)
            s.add(
                Agency(
                    id=aid,
                    name=aid,
                    region="140900",
                    roles=roles,
                    key_hash=hash_key(key),
                    key_prefix=key[:10],
                    signing_secret=signing_secret_for(key).hex(),
                )
            )
        s.flush()
        s.add(
            Dataset(
                id="bench-licences",
                owner_id="market",
                title="bench",
                category="basic",
                grade="general",
                sharing_attribute="none",
                sharing_reason="bench",
                legal_basis="bench",
                status="approved",
                schema_version=1,
                tags=[],
            )
        )
        s.flush()
        s.add(SchemaVersion(dataset_id="bench-licences", version=1, schema=licence_schema()))
    return "bench-licences"


def _operation(ctx, source: str) -> str:  # type: ignore[no-untyped-def]
    owner, oper = Principal("market", frozenset({"agency"})), Principal("oper", frozenset({"operator"}))
    rule = AnalysisRule(
        ("region_code", "status"),
        (
            MeasureRule("licence_no", (MeasureFn.COUNT,), None),
            MeasureRule("registered_capital", (MeasureFn.SUM,), (0.0, 1e9)),
        ),
        "credit_code",
        10,
        (3600,),
    )
    rulebook.put_rule(ctx, owner, source, rule)
    spec = spec_from_json(
        {
            "dataset": source,
            "group_by": ["region_code"],
            "window_seconds": 3600,
            "k": 10,
            "measures": [
                {"field": "licence_no", "fn": "count"},
                {"field": "registered_capital", "fn": "sum"},
            ],
        }
    )
    op = service.request_operation(ctx, oper, service.OperationRequestIn(spec, "bench", "bench", "bench"))
    service.decide(ctx, owner, op["id"], "approve", None)
    return str(op["id"])


def _raw(ctx, topic: str, n: int) -> float:  # type: ignore[no-untyped-def]
    consumer = new_consumer(ctx.bootstrap, f"bench-raw-{uuid.uuid4().hex[:6]}", ctx.settings)
    started = time.perf_counter()
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions_of(consumer, topic)])
    got = 0
    while got < n:
        got += sum(1 for m in consumer.consume(1000, 0.05) if m.error() is None)
    elapsed = time.perf_counter() - started
    consumer.close()
    return elapsed


def _executor(ctx, op_id: str, n: int) -> float:  # type: ignore[no-untyped-def]
    worker = OperatorWorker(ctx)
    started = time.perf_counter()
    worker.start()
    try:
        while True:
            runner = worker.runners.get(op_id)
            if runner is not None and sum(runner.offsets.values()) >= n:
                return time.perf_counter() - started
            time.sleep(0.005)
    finally:
        worker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=50_000)
    args = parser.parse_args()
    n = args.records
    with tempfile.TemporaryDirectory(prefix="databus-bench-op-") as tmp:
        stack = Stack(Settings(data_dir=Path(tmp)), gateway=False, workers=[]).start()
        try:
            ctx = stack.ctx
            assert ctx is not None
            source = _setup(ctx)
            op_id = _operation(ctx, source)  # approved first: the operation reads what comes after
            records = [dict(licence_record(i), region_code=f"1409{i % 14:02d}") for i in range(n)]
            t0 = time.perf_counter()
            for i in range(0, n, 1000):
                publish_results(ctx, source, "market", records[i : i + 1000])
            print(f"published {n} records into data.{source} in {time.perf_counter() - t0:.1f}s")
            close_sink(ctx)
            raw = _raw(ctx, ctx.topics.data(source), n)
            executor = _executor(ctx, op_id, n)
        finally:
            stack.stop()
    print(f"raw consume:  {n / raw:>10,.0f} rec/s ({raw:.2f}s)")
    print(f"executor:     {n / executor:>10,.0f} rec/s ({executor:.2f}s, start-up included)")
    print(f"ratio executor / raw consume: {raw / executor:.3f}")


if __name__ == "__main__":
    main()
