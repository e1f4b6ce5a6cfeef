"""R14 no loss: SIGKILL the pipeline (its own process, ``databus worker pipeline``) at random points 10 times
under a steady stream and restart it each time: every accepted record id reaches every active grant, and
duplicates come only from the batch in flight at each kill (recognisable by ``bus-record-id``)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

from bus.exchange.batch_worker import BATCH
from tests.helpers import licence_record, poll_until
from tests.integration.dataplane_helpers import grant, headers_of, publisher, read_topic

KILLS = 10


def _pipeline_process(settings, log: Path, kind: str = "pipeline") -> subprocess.Popen:
    env = {
        **os.environ,
        "BUS_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "BUS_REDIS_URL": settings.redis_url,
        "BUS_DATABASE_URL": settings.database_url,
        "BUS_TOPIC_PREFIX": settings.topic_prefix,
        "BUS_DATA_DIR": str(settings.data_dir),
        "BUS_KAFKA_PROFILE": "embedded",
    }
    return subprocess.Popen(
        [sys.executable, "-c", "from bus.cli import app; app()", "worker", kind],
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


def test_r14_pipeline_killed_ten_times_mid_stream_loses_nothing(
    ctx, settings, agency_factory, dataset_factory, tmp_path
) -> None:
    market, market_key = agency_factory("market")
    psb, _ = agency_factory("psb")
    tax, _ = agency_factory("tax")
    ds = dataset_factory(market)
    topics = [ctx.topics.deliver(grant(ctx, a, ds, ["licence_no", "legal_rep_id"])["id"]) for a in (psb, tax)]
    log = tmp_path / "pipeline.log"
    rng = random.Random(7)
    ids: list[str] = []
    stop = threading.Event()
    worker = _pipeline_process(settings, log, "router")  # the older name starts the one pipeline too
    try:
        with publisher(ctx, market, market_key, ds) as pub:

            def pump() -> None:
                while not stop.is_set():
                    for _ in range(25):
                        ids.append(pub.publish(licence_record(len(ids))))
                    pub.producer.poll(0)
                    stop.wait(0.02)

            thread = threading.Thread(target=pump, daemon=True)
            thread.start()
            for _ in range(KILLS):
                seen = len(read_topic(ctx, topics[0], 1, timeout=0.2))
                poll_until(lambda s=seen: len(read_topic(ctx, topics[0], s + 1, timeout=0.3)) > s,
                           timeout=30, what="the pipeline process delivering")
                stop.wait(rng.uniform(0.05, 0.6))  # a random point of its work
                worker.send_signal(signal.SIGKILL)  # no chance to flush or commit
                worker.wait(10)
                worker = _pipeline_process(settings, log)
            stop.set()
            thread.join(10)
            pub.flush()
        expected = set(ids)
        for topic in topics:
            got = poll_until(lambda t=topic: _ids_if_complete(ctx, t, expected), timeout=90,
                             what=f"every accepted record delivered on {topic} after the restarts")
            counts = Counter(got)
            assert set(counts) == expected
            assert sum(counts.values()) - len(expected) <= KILLS * BATCH, "duplicates beyond a batch per crash"
    finally:
        stop.set()
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(15)
        except subprocess.TimeoutExpired:
            worker.kill()


def _ids_if_complete(ctx, topic: str, expected: set[str]) -> list[str] | None:
    got = [headers_of(m)["bus-record-id"] for m in read_topic(ctx, topic, 10 * len(expected), timeout=1.0)]
    return got if expected <= set(got) else None
