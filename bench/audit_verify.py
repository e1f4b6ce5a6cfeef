"""How long ``databus audit verify`` takes on a large hash chain (R14).

Appends 100k and 1M audit events (shaped like the data plane's per-batch events) to a throwaway
SQLite store, then times the hash-chain check (``verify_chain``) over the whole chain. Target: 1M
events in at most 10 s on SQLite. Then writes lineage rows through ``LineageRecorder`` and times the
lineage part of ``verify`` (each attested batch's digest recomputed from the stored rows).

    python -m bench.audit_verify [--sizes 100000,1000000] [--lineage-rows 100000] [--database-url URL]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, select

from bus.lineage.audit import Event, append_many, verify_chain
from bus.lineage.integrity import verify_lineage
from bus.lineage.recorder import LineageRecorder
from bus.store import Store
from bus.store.models import AuditEvent

BATCH = 10_000


def _event(i: int) -> Event:
    """Roughly what the data plane appends per batch: counts, a record-id range, a digest."""
    return Event(
        actor=f"agency{i % 7}",
        action="bench.batch",  # not a lineage action: the lineage check is timed on its own below
        subject_type="dataset",
        subject_id=f"market-licences-{i % 3}",
        data={
            "count": 500,
            "bytes": 180_000 + i,
            "first_record": f"r{i:012d}a",
            "last_record": f"r{i:012d}z",
            "partition": i % 4,
            "offsets": [i * 500, i * 500 + 499],
            "digest": f"{i:064x}",
        },
    )


def fill(store: Store, total: int) -> float:
    """Extend the chain to ``total`` events; returns the seconds spent appending."""
    with store.engine.connect() as conn:
        have = conn.execute(select(func.count()).select_from(AuditEvent)).scalar_one()
    t0 = time.perf_counter()
    for start in range(have, total, BATCH):
        with store.session() as s:
            append_many(s, (_event(i) for i in range(start, min(start + BATCH, total))))
    return time.perf_counter() - t0


def chain(store: Store, n: int) -> None:
    spent = fill(store, n)
    t0, c0 = time.perf_counter(), time.process_time()
    result = verify_chain(store)
    took, cpu = time.perf_counter() - t0, time.process_time() - c0
    ok = result["ok"] and result["events"] == n
    print(
        f"{n:>9,} events  appended in {spent:6.1f}s  verify {took:6.2f}s wall, {cpu:6.2f}s CPU "
        f"({n / took:,.0f} events/s)  ok={ok}"
    )


def lineage(store: Store, rows: int) -> None:
    rec = LineageRecorder(store)
    now = datetime.now(UTC)
    for start in range(0, rows, 1000):
        rec.delivered(
            [
                {
                    "record_id": f"{i:032x}",
                    "grant_id": f"g{i % 2}",
                    "dataset_id": "market-licences",
                    "agency_id": f"agency{i % 2}",
                    "scenario_code": "licence-check",
                    "delivered_at": now,
                    "partition": i % 4,
                    "offset": i,
                    "size": 200,
                }
                for i in range(start, start + 1000)
            ]
        )
    t0 = time.perf_counter()
    result = verify_lineage(store)
    took = time.perf_counter() - t0
    print(
        f"{result['rows']:>9,} lineage rows checked against their digests in {took:6.2f}s "
        f"({result['rows'] / took:,.0f} rows/s)  ok={result['ok']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000", help="chain lengths to time, ascending")
    parser.add_argument(
        "--lineage-rows", type=int, default=100_000, help="delivery rows for the lineage check"
    )
    parser.add_argument("--database-url", default=None, help="store to use (default: a temp SQLite file)")
    args = parser.parse_args()
    sizes = [int(x) for x in args.sizes.split(",") if x]
    with tempfile.TemporaryDirectory(prefix="bench-audit-") as tmp:
        url = args.database_url or f"sqlite:///{Path(tmp) / 'bus.db'}"
        store = Store(url).start()
        try:
            print(f"store: {store.dialect}")
            for n in sizes:
                chain(store, n)
            if args.lineage_rows:
                lineage(store, args.lineage_rows)
        finally:
            store.close()


if __name__ == "__main__":
    main()
