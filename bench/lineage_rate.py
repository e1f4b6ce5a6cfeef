"""How many lineage records per second the lineage store takes, as the data plane writes them.

Each write is one ``LineageRecorder`` call per batch, exactly what the validator, router and receipts
worker do: the evidence, one hash-chained audit event per group (with its digest) and the hourly
usage upsert, in one transaction. Measured for published, delivered and consumed records on SQLite
(temp file) and PostgreSQL (a throwaway schema, dropped afterwards). Deliveries are measured twice in
the same run: ``deliveries (rows)``, the per-record layout of 0002 (``bench.lineage_legacy``), and
``deliveries (batch)``, the batch layout (``bus.lineage.evidence``), with ``--grants`` grants per batch
and ``--partitions`` partitions per grant topic. Reported: records/s wall, µs of this process's CPU per
record, and stored rows per record.

    python -m bench.lineage_rate [--rows 100000] [--batch 1000] [--grants 2] [--partitions 4]
                                 [--postgres URL | --no-postgres]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench.lineage_legacy import TABLE, create_table
from bench.lineage_legacy import delivered as legacy_delivered
from bus.exchange.record_ids import RecordIds
from bus.lineage.recorder import LineageRecorder
from bus.store import Store

PG_URL = os.environ.get("BUS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _rows(kind: str, start: int, n: int, grants: int = 2, partitions: int = 4) -> list[dict[str, Any]]:
    """One batch as the data plane hands it over: deliveries of ``n // grants`` records to each grant,
    on ``partitions`` partitions, offsets consecutive per partition in produce order."""
    now = datetime.now(UTC)
    out: list[dict[str, Any]] = []
    ids = RecordIds()
    per_grant = max(1, n // grants)
    for i in range(start, start + n):
        rid = ids.new()
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
            g, k = divmod(i - start, per_grant)
            g %= grants
            out.append(
                {
                    "record_id": out[k]["record_id"] if g else rid,  # every grant delivers the same records
                    "grant_id": f"g{g}",
                    "dataset_id": "market-licences",
                    "agency_id": f"agency{g}",
                    "scenario_code": "licence-check",
                    "delivered_at": now,
                    "partition": k % partitions,
                    "offset": start // partitions + k // partitions,
                    "size": 200 + k % 7,
                    "trace_id": f"{k // 100:032x}",  # a trace per SDK flush of 100 records
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


def _stored_rows(store: Store) -> dict[str, int]:
    with store.engine.connect() as conn:
        return {
            t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one()
            for t in (
                "lineage_records",
                TABLE,
                "lineage_delivery_batches",
                "lineage_delivery_keys",
                "lineage_consumptions",
            )
        }


def measure(store: Store, rows: int, batch: int, grants: int, partitions: int) -> dict[str, dict[str, float]]:
    """Per kind: records/s wall, µs of CPU per record, stored rows per record."""
    rec = LineageRecorder(store)
    create_table(store)
    write: dict[str, tuple[str, Callable[[Any], None], tuple[str, ...]]] = {
        "records": ("records", rec.published, ("lineage_records",)),
        "deliveries (rows)": ("deliveries", partial(legacy_delivered, store), (TABLE,)),
        "deliveries (batch)": (
            "deliveries",
            rec.delivered,
            ("lineage_delivery_batches", "lineage_delivery_keys"),
        ),
        "consumptions": ("consumptions", rec.consumed, ("lineage_consumptions",)),
    }
    out: dict[str, dict[str, float]] = {}
    for label, (kind, fn, tables) in write.items():
        batches = [_rows(kind, start, batch, grants, partitions) for start in range(0, rows, batch)]
        before = _stored_rows(store)
        t0, c0 = time.perf_counter(), time.process_time()
        for b in batches:
            fn(b)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        after = _stored_rows(store)
        stored = sum(after[t] - before[t] for t in tables)
        out[label] = {"per_s": rows / wall, "cpu_us": cpu / rows * 1e6, "rows_per_record": stored / rows}
    return out


def _report(label: str, rates: dict[str, dict[str, float]], batch: int) -> None:
    """Records/s wall, µs of this process's CPU per record (what a busy machine leaves out), rows stored."""
    print(f"{label} (batches of {batch})")
    print(f"  {'evidence':<20} {'records/s':>10} {'CPU µs/record':>14} {'rows/record':>12}")
    for kind, r in rates.items():
        print(f"  {kind:<20} {r['per_s']:>10,.0f} {r['cpu_us']:>14.2f} {r['rows_per_record']:>12.4f}")
    old, new = rates["deliveries (rows)"], rates["deliveries (batch)"]
    print(
        f"  deliveries: batch layout {new['per_s'] / old['per_s']:.1f}x the records/s, "
        f"{old['cpu_us'] / new['cpu_us']:.1f}x less CPU per record"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="rows per table")
    parser.add_argument("--batch", type=int, default=1000, help="rows per recorder call (a data-plane batch)")
    parser.add_argument("--grants", type=int, default=2, help="grants each delivered record goes to")
    parser.add_argument("--partitions", type=int, default=4, help="partitions of each deliver.<grant> topic")
    parser.add_argument("--postgres", default=PG_URL, help="PostgreSQL URL (a throwaway schema is used)")
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-lineage-") as tmp:
        store = Store(f"sqlite:///{Path(tmp) / 'bus.db'}").start()
        try:
            _report("sqlite", measure(store, args.rows, args.batch, args.grants, args.partitions), args.batch)
        finally:
            store.close()
    if args.no_postgres:
        return

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
            _report(
                "postgresql", measure(store, args.rows, args.batch, args.grants, args.partitions), args.batch
            )
        finally:
            store.close()
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


if __name__ == "__main__":
    main()
