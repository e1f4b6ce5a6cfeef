"""How many lineage rows per second the lineage store takes, as the data plane writes them.

Each write is one ``LineageRecorder`` call per batch, exactly what the validator, router and receipts
worker do: the rows, one hash-chained audit event per group (with the rows' digest) and the hourly
usage upsert, in one transaction. Measured for record, delivery and consumption rows on SQLite (temp
file) and PostgreSQL (a throwaway schema, dropped afterwards).

    python -m bench.lineage_rate [--rows 100000] [--batch 1000] [--postgres URL | --no-postgres]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bus.lineage.recorder import LineageRecorder
from bus.store import Store

PG_URL = os.environ.get("BUS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _rows(kind: str, start: int, n: int) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    out: list[dict[str, Any]] = []
    for i in range(start, start + n):
        rid = f"{i:032x}"
        if kind == "records":
            out.append(
                {
                    "record_id": rid,
                    "dataset_id": "market-licences",
                    "publisher_id": "market",
                    "published_at": now,
                    "trace_id": "ab" * 16,
                    "outcome": "accepted",
                    "schema_version": 1,
                    "size": 312,
                    "partition": i % 4,
                    "offset": i,
                }
            )
        elif kind == "deliveries":
            out.append(
                {
                    "record_id": rid,
                    "grant_id": f"g{i % 2}",
                    "dataset_id": "market-licences",
                    "agency_id": f"agency{i % 2}",
                    "scenario_code": "licence-check",
                    "delivered_at": now,
                    "partition": i % 4,
                    "offset": i,
                    "size": 200,
                    "trace_id": "ab" * 16,
                }
            )
        else:
            out.append(
                {
                    "record_id": rid,
                    "grant_id": "g0",
                    "agency_id": "agency0",
                    "via": "sdk",
                    "consumed_at": now,
                    "size": 200,
                    "dataset_id": "market-licences",
                }
            )
    return out


def measure(store: Store, rows: int, batch: int) -> dict[str, float]:
    rec = LineageRecorder(store)
    write = {"records": rec.published, "deliveries": rec.delivered, "consumptions": rec.consumed}
    rates: dict[str, float] = {}
    for kind, fn in write.items():
        batches = [_rows(kind, start, batch) for start in range(0, rows, batch)]
        t0, c0 = time.perf_counter(), time.process_time()
        for b in batches:
            fn(b)
        rates[kind] = rows / (time.perf_counter() - t0)
        rates[f"{kind} (cpu)"] = rows / max(time.process_time() - c0, 1e-9)
    return rates


def _report(label: str, rates: dict[str, float], batch: int) -> None:
    """Wall-clock rows/s, and rows per second of this process's CPU (what a busy machine leaves out)."""
    wall = "  ".join(f"{k} {v:>8,.0f}" for k, v in rates.items() if "(cpu)" not in k)
    cpu = "  ".join(f"{k[:-6]} {v:>8,.0f}" for k, v in rates.items() if "(cpu)" in k)
    print(f"{label:<11} batch {batch:>5}  rows/s wall: {wall}")
    print(f"{'':<11} {'':>11}  rows/s per client CPU second: {cpu}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="rows per table")
    parser.add_argument("--batch", type=int, default=1000, help="rows per recorder call (a data-plane batch)")
    parser.add_argument("--postgres", default=PG_URL, help="PostgreSQL URL (a throwaway schema is used)")
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-lineage-") as tmp:
        store = Store(f"sqlite:///{Path(tmp) / 'bus.db'}").start()
        try:
            _report("sqlite", measure(store, args.rows, args.batch), args.batch)
        finally:
            store.close()
    if args.no_postgres:
        return
    import sqlalchemy as sa

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(args.postgres)
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:
        print(f"postgresql: not measured ({type(exc).__name__}: {str(exc).splitlines()[0]})")
        return
    try:
        store = Store(f"{args.postgres}?options=-csearch_path%3D{schema}").start()
        try:
            _report("postgresql", measure(store, args.rows, args.batch), args.batch)
        finally:
            store.close()
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


if __name__ == "__main__":
    main()
