"""What the keyed subject index (``GET /v1/lineage/subjects``) costs the data plane, and a lookup.

Per record: keying its identifier fields (``subject_keys``, pure CPU) and writing the index rows
(``index_accepted``, one transaction per batch, as the validator does after each delivered batch),
on SQLite (temp file) and PostgreSQL (a throwaway schema, dropped afterwards). Then the lookup of one
value among them (index only: these records have no lineage rows).

    python -m bench.subjects [--records 20000] [--batch 1000] [--postgres URL | --no-postgres]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from pathlib import Path

from bus.catalog.schema import catalog_fields
from bus.lineage.subjects import index_accepted, lookup, subject_keys
from bus.samples import licence_record, licence_schema
from bus.store import Store
from bus.store.models import Agency, Dataset, SchemaVersion

PG_URL = os.environ.get("BUS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
SECRET = bytes(range(32))


def _catalogue(store: Store) -> None:
    with store.session() as s:
        s.add(
            Agency(
                id="market",
                name="market",
                region="140900",
                roles=["agency"],
                key_hash="-",
                key_prefix="-",
                signing_secret="00",
            )
        )
        s.flush()
        s.add(
            Dataset(
                id="licences",
                owner_id="market",
                title="licences",
                description="bench",
                category="basic",
                grade="general",
                domestic_only=False,
                sharing_attribute="unconditional",
                status="approved",
                schema_version=1,
                tags=[],
            )
        )
        s.flush()
        s.add(SchemaVersion(dataset_id="licences", version=1, schema=licence_schema()))


def run(url: str, records: int, batch: int) -> dict[str, float]:
    store = Store(url).start()
    try:
        _catalogue(store)
        recs = [licence_record(i) for i in range(records)]
        ids = [f"{i:032x}" for i in range(records)]
        fields = catalog_fields(licence_schema())
        t = time.perf_counter()
        for r in recs:
            subject_keys(fields, r, SECRET)
        keys_us = (time.perf_counter() - t) / records * 1e6
        t = time.perf_counter()
        for start in range(0, records, batch):
            with store.session() as s:
                index_accepted(
                    s,
                    SECRET,
                    [("licences", "market", recs[start : start + batch], ids[start : start + batch])],
                )
        index_us = (time.perf_counter() - t) / records * 1e6
        t = time.perf_counter()
        with store.session() as s:
            for i in range(100):
                lookup(s, SECRET, "person.id_number", licence_record(i * 7)["legal_rep_id"])
        lookup_ms = (time.perf_counter() - t) / 100 * 1e3
        return {"keys_us_per_record": keys_us, "index_us_per_record": index_us, "lookup_ms": lookup_ms}
    finally:
        store.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=1_000)
    ap.add_argument("--postgres", default=PG_URL)
    ap.add_argument("--no-postgres", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = {"sqlite": run(f"sqlite:///{Path(tmp) / 'bench.db'}", args.records, args.batch)}
    if not args.no_postgres:
        import sqlalchemy as sa

        schema = f"bench_{uuid.uuid4().hex[:8]}"
        engine = sa.create_engine(args.postgres)
        with engine.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        try:
            out["postgresql"] = run(
                f"{args.postgres}?options=-csearch_path%3D{schema}", args.records, args.batch
            )
        finally:
            with engine.begin() as conn:
                conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
            engine.dispose()
    for store, r in out.items():
        print(
            f"{store:10} keys {r['keys_us_per_record']:.1f} µs/record, index write "
            f"{r['index_us_per_record']:.1f} µs/record (batches of {args.batch}), "
            f"lookup {r['lookup_ms']:.2f} ms"
        )


if __name__ == "__main__":
    main()
