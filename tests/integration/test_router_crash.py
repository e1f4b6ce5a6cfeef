"""R14 no loss: SIGKILL the router (its own process, ``databus worker router``) mid-stream, restart it,
and every accepted record is delivered (duplicates allowed, recognisable by ``bus-record-id``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.helpers import licence_record, poll_until
from tests.integration.dataplane_helpers import grant, headers_of, publisher, read_topic

N = 3000


def _router_process(settings, log: Path) -> subprocess.Popen:
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
        [sys.executable, "-c", "from bus.cli import app; app()", "worker", "router"],
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


def test_r14_router_killed_mid_stream_loses_nothing(
    ctx, settings, agency_factory, dataset_factory, tmp_path
) -> None:
    from bus.exchange.validator import Validator

    market, market_key = agency_factory("market")
    psb, _ = agency_factory("psb")
    ds = dataset_factory(market)
    g = grant(ctx, psb, ds, ["licence_no", "legal_rep_id"])
    deliver = ctx.topics.deliver(g["id"])
    validator = Validator(ctx)
    validator.start()
    log = tmp_path / "router.log"
    router = _router_process(settings, log)
    try:
        with publisher(ctx, market, market_key, ds) as pub:
            ids = [pub.publish(licence_record(i)) for i in range(N // 3)]
            pub.flush()
            poll_until(
                lambda: len(read_topic(ctx, deliver, 1, timeout=0.3)) > 0,
                timeout=30,
                what="the router process delivering",
            )
            ids += [pub.publish(licence_record(i)) for i in range(N // 3, 2 * N // 3)]
            pub.flush()
            router.send_signal(signal.SIGKILL)  # mid-stream: no chance to flush or commit
            router.wait(10)
            ids += [pub.publish(licence_record(i)) for i in range(2 * N // 3, N)]
            pub.flush()
        poll_until(lambda: validator.accepted == N, timeout=30, what="every record accepted")
        router = _router_process(settings, log)
        delivered = poll_until(
            lambda: _ids_if_complete(ctx, deliver, set(ids)),
            timeout=60,
            what="every accepted record delivered after the restart",
        )
    finally:
        router.send_signal(signal.SIGTERM)
        try:
            router.wait(15)
        except subprocess.TimeoutExpired:
            router.kill()
        validator.stop()
    assert set(delivered) == set(ids) and len(set(delivered)) == N
    assert len(delivered) - N < N, "duplicates are bounded by the uncommitted batches"


def _ids_if_complete(ctx, topic: str, expected: set[str]) -> list[str] | None:
    got = [headers_of(m)["bus-record-id"] for m in read_topic(ctx, topic, 10 * N, timeout=1.0)]
    return got if expected <= set(got) else None
