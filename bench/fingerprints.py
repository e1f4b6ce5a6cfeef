"""What the R8/R9 record fingerprints cost: check time per record, and Redis memory per million records.

Fills the embedded valkey with the fingerprints of N licence records (the 12-field example schema:
three identifier fields, seven semantic fields), then times ``FingerprintGuard.check_batch`` on batches
of another agency's records (half of them copies, which are refused) and ``remember_batch``.
Memory is Redis ``used_memory`` after minus before, scaled to one million records.

    python -m bench.fingerprints [--records 200000] [--batch 500]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bus.context import BusContext
from bus.embedded import EmbeddedRedis
from bus.exchange.fingerprints import FingerprintGuard
from bus.exchange.record_ids import new_record_id
from bus.samples import licence_record, licence_schema
from bus.settings import Settings
from bus.store.models import Agency, Dataset, SchemaVersion

TAX = {
    "type": "record",
    "name": "TaxRegister",
    "namespace": "gov.tax",
    "fields": [
        {"name": "cc", "type": "string", "sensitivity": "public", "semantic": "enterprise.credit_code"},
        {"name": "name", "type": "string", "sensitivity": "public", "semantic": "enterprise.name"},
        {"name": "addr", "type": "string", "sensitivity": "internal", "semantic": "enterprise.address"},
        {"name": "phone", "type": "string", "sensitivity": "personal", "semantic": "person.phone"},
        {"name": "tax_due", "type": "long", "sensitivity": "internal", "semantic": "tax.amount_due"},
    ],
}


def _tax(i: int) -> dict[str, Any]:
    lic = licence_record(i)
    return {
        "cc": lic["credit_code"],
        "name": lic["enterprise_name"],
        "addr": lic["address"],
        "phone": lic["phone"],
        "tax_due": i,
    }


def _catalogue(ctx: BusContext) -> None:
    with ctx.store.session() as s:
        for a in ("market", "tax"):
            s.add(
                Agency(
                    id=a,
                    name=a,
                    region="140900",
                    roles=["agency"],
                    key_hash=f"h-{a}",
                    key_prefix="x",
                    signing_secret="00",
                )
            )
        s.flush()
        for ds, owner, schema in (
            ("market-licences", "market", licence_schema()),
            ("tax-register", "tax", TAX),
        ):
            s.add(
                Dataset(
                    id=ds,
                    owner_id=owner,
                    title=ds,
                    category="basic",
                    grade="general",
                    sharing_attribute="unconditional",
                    status="approved",
                    schema_version=1,
                    tags=[],
                )
            )
            s.flush()
            s.add(SchemaVersion(dataset_id=ds, version=1, schema=schema))


def _used_memory(ctx: BusContext) -> int:
    return int(ctx.redis.info("memory")["used_memory"])


def run(records: int, batch: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-fp-") as tmp:
        redis = EmbeddedRedis(Path(tmp))
        redis.start()
        try:
            settings = Settings(data_dir=Path(tmp) / "data", topic_prefix="bench.")
            ctx = BusContext.create(settings, bootstrap="", redis_url=redis.url).start()
            ctx.redis.config_set("appendonly", "no")  # measure memory and lookups, not disk writes
            _catalogue(ctx)
            guard = FingerprintGuard(ctx, ttl=3600)
            before = _used_memory(ctx)
            t0 = time.perf_counter()
            for start in range(0, records, batch):
                chunk = [licence_record(i) for i in range(start, min(records, start + batch))]
                guard.remember_batch("market-licences", "market", chunk, [new_record_id() for _ in chunk])
            remember_s = time.perf_counter() - t0
            used = _used_memory(ctx) - before
            keys = int(ctx.redis.dbsize())

            timings: list[float] = []
            refused = 0
            rounds = max(20, min(200, records // batch))
            for r in range(rounds):
                base = (r * batch) % max(1, records - batch)
                probe = [_tax(base + i) if i % 2 else _tax(records + base + i) for i in range(batch)]
                t = time.perf_counter()
                out = guard.check_batch("tax-register", "tax", probe)
                timings.append(time.perf_counter() - t)
                refused += sum(1 for e in out if e is not None)
            ctx.close()
        finally:
            redis.stop()
    per_record_us = statistics.median(timings) / batch * 1e6
    return {
        "records": records,
        "batch": batch,
        "redis_bytes_per_record": used / records,
        "redis_mb_per_million_records": used / records * 1e6 / 2**20,
        "redis_keys": keys,
        "fingerprint_entries_per_record": 3,
        "remember_us_per_record": remember_s / records * 1e6,
        "check_us_per_record_median": per_record_us,
        "check_us_per_record_p95": sorted(timings)[int(0.95 * (len(timings) - 1))] / batch * 1e6,
        "refused_share": refused / (rounds * batch),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000, help="licence records to fingerprint")
    parser.add_argument("--batch", type=int, default=500, help="records per check / remember batch")
    args = parser.parse_args()
    out = run(args.records, args.batch)
    print(
        f"fingerprints of {out['records']:,} licence records ({out['fingerprint_entries_per_record']} "
        f"identifier entries each), batches of {out['batch']}:"
    )
    print(
        f"  Redis memory        {out['redis_bytes_per_record']:.1f} B per record = "
        f"{out['redis_mb_per_million_records']:.0f} MiB per million records ({out['redis_keys']:,} keys)"
    )
    print(
        f"  check cost          {out['check_us_per_record_median']:.1f} us per record (median batch), "
        f"p95 {out['check_us_per_record_p95']:.1f} us; {out['refused_share']:.0%} of probes refused as copies"
    )
    print(f"  remember cost       {out['remember_us_per_record']:.1f} us per record")


if __name__ == "__main__":
    main()
