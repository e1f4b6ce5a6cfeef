"""Where the pipeline's CPU goes: the real ``Pipeline`` driven in-process over records already on ingress.

    python -m bench.profile_pipeline [--records 20000] [--grants 1] [--top 25]

Starts an embedded broker and Redis and a SQLite store, publishes ``--records`` sealed licence records
with the SDK, then runs the pipeline under cProfile until every record is delivered to every grant, and
prints CPU µs per record and the functions that cost most (cumulative). The README's profile comes from
this script.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bus.catalog import agencies
from bus.catalog.requests import AgencyIn
from bus.client import Publisher
from bus.context import BusContext
from bus.embedded import EmbeddedKafka, EmbeddedRedis
from bus.exchange.pipeline import Pipeline
from bus.gateway.auth import Principal
from bus.grants import service as grants
from bus.grants.service import GrantRequestIn
from bus.samples import licence_record, licence_schema
from bus.settings import Settings
from bus.store.models import Dataset, SchemaVersion


def _setup(ctx: BusContext, n_grants: int) -> tuple[str, list[str]]:
    market = agencies.create_agency(
        ctx, "admin", AgencyIn(id="market", name="m", region="140900", roles=["agency"])
    )
    keys = {"market": market["api_key"]}
    with ctx.store.session() as s:
        s.add(Dataset(id="lic", owner_id="market", title="l", description="l", category="basic",
                      grade="general", domestic_only=False, sharing_attribute="unconditional",
                      status="approved", schema_version=1, tags=[]))
        s.flush()
        s.add(SchemaVersion(dataset_id="lic", version=1, schema=licence_schema()))
    ids = []
    fields = [f["name"] for f in licence_schema()["fields"]]
    for i in range(n_grants):
        agencies.create_agency(
            ctx, "admin", AgencyIn(id=f"g{i}", name="g", region="140900", roles=["agency"])
        )
        req = GrantRequestIn(
            dataset="lic", fields=fields, scenario_code="bench", scenario_description="bench",
            legal_basis="bench", valid_until=datetime.now(UTC) + timedelta(days=1),
        )
        ids.append(grants.request_grant(ctx, Principal(f"g{i}", frozenset({"agency"})), req)["id"])
    return keys["market"], ids


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=20_000)
    ap.add_argument("--grants", type=int, default=1)
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="profile-"))
    kafka, redis = EmbeddedKafka(tmp), EmbeddedRedis(tmp)
    kafka.start()
    redis.start()
    try:
        settings = Settings(data_dir=tmp, kafka_bootstrap=kafka.bootstrap, redis_url=redis.url,
                            kafka_profile="embedded")
        ctx = BusContext.create(settings, bootstrap=kafka.bootstrap, redis_url=redis.url).start()
        market_key, grant_ids = _setup(ctx, args.grants)
        schema = licence_schema()
        with Publisher(kafka.bootstrap, "market", market_key, "lic", schema, 1) as pub:
            for i in range(args.records):
                pub.publish(licence_record(i), key=f"k{i}")
            pub.flush(120)
        pipeline = Pipeline(ctx)
        pipeline.cache.start()

        def watch() -> None:  # the loop runs in this (profiled) thread; stop it when everything is delivered
            deadline = time.monotonic() + 600
            while pipeline.delivered < args.records * args.grants and time.monotonic() < deadline:
                time.sleep(0.05)
            pipeline._stop.set()

        threading.Thread(target=watch, daemon=True).start()
        profiler = cProfile.Profile()
        cpu0, wall0 = time.thread_time(), time.perf_counter()
        profiler.enable()
        pipeline._run()  # the worker's loop, in the main thread so cProfile sees it
        profiler.disable()
        pipeline.cache.stop()
        cpu, wall = time.thread_time() - cpu0, time.perf_counter() - wall0
        print(f"{pipeline.accepted} accepted, {pipeline.delivered} delivered to {args.grants} grant(s) in "
              f"{wall:.2f}s wall, {cpu:.2f}s CPU: {cpu / args.records * 1e6:.1f} µs CPU per record "
              f"({args.records / wall:,.0f} records/s in-process)")
        stats = pstats.Stats(profiler)
        stats.sort_stats("cumulative").print_stats(args.top)
        ctx.close()
    finally:
        redis.stop()
        kafka.stop()


if __name__ == "__main__":
    main()
