"""R14 fail closed: when Redis or the store cannot be reached, the pipeline stops delivering, retries, and
resumes by itself once they answer again, losing nothing (duplicates only by ``bus-record-id``).

Real outages, no mocks: a dedicated embedded Redis (valkey, AOF in its data dir) on a fixed port is
stopped and started again on the same port; a throwaway PostgreSQL database is closed to connections
(``ALLOW_CONNECTIONS false`` + ``pg_terminate_backend``) and opened again.

The bound checked while a part is down ("nothing delivered later than a short grace after the cut,
beyond the batch in flight"): a delivery's Kafka timestamp is taken when the pipeline calls ``produce``.
A batch whose policy check passed just before the cut may still be produced, and routing one batch
(at most ``BATCH`` records) takes milliseconds, so no delivery may carry a timestamp later than
``cut + GRACE`` (GRACE = 1 s, generous for a loaded 2-core box), and at most ``BATCH`` deliveries may
carry a timestamp after the cut at all. The window is observed for ``WINDOW`` seconds by polling the
delivery topics the whole time.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bus.embedded import EmbeddedRedis, free_port
from bus.exchange.batch_worker import BATCH
from bus.exchange.kafka import new_consumer, partitions_of
from bus.grants import service
from bus.settings import Settings
from tests.conftest import PG_URL
from tests.helpers import licence_record, poll_until
from tests.integration.dataplane_helpers import agency, grant, headers_of, publisher

FIELDS = ["licence_no", "status"]
GRACE = 1.0  # seconds after the cut during which the batch in flight may still be produced
WINDOW = 3.0  # seconds of outage observed


class Pump:
    """Publishes a steady stream (~1,000 records/s) through the SDK until stopped; keeps every record id."""

    def __init__(self, pub: Any) -> None:
        self.pub = pub
        self.ids: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pump", daemon=True)

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            for _ in range(20):
                self.ids.append(self.pub.publish(licence_record(i)))
                i += 1
            self.pub.producer.poll(0)
            self._stop.wait(0.02)

    def __enter__(self) -> Pump:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if not self._stop.is_set():
            self._stop.set()
            self._thread.join(5)
            self.pub.flush(10)  # raises if a record could not be sent


class Tail:
    """Reads delivery topics from the beginning in a thread: ``got[topic]`` = [(record id, timestamp ms)]."""

    def __init__(self, ctx: Any, topics: list[str]) -> None:
        self.ctx = ctx
        self.topics = topics
        self.got: dict[str, list[tuple[str, int]]] = {t: [] for t in topics}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tail", daemon=True)

    def _run(self) -> None:
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        consumer = new_consumer(self.ctx.bootstrap, f"tail-{uuid.uuid4().hex}")
        assigned: set[str] = set()
        try:
            while not self._stop.is_set():
                for t in self.topics:
                    if t not in assigned:
                        parts = partitions_of(consumer, t, 1.0)
                        if parts:
                            consumer.incremental_assign(
                                [TopicPartition(t, p, OFFSET_BEGINNING) for p in parts]
                            )
                            assigned.add(t)
                for m in consumer.consume(1000, 0.05):
                    if m.error() is not None:
                        continue
                    rid_s = headers_of(m).get("bus-record-id", "")
                    with self._lock:
                        self.got[m.topic() or ""].append((rid_s, m.timestamp()[1]))
        finally:
            consumer.close()

    def ids(self, topic: str) -> set[str]:
        with self._lock:
            return {rid for rid, _ in self.got[topic]}

    def count(self, topic: str) -> int:
        with self._lock:
            return len(self.got[topic])

    def after(self, topic: str, ts_ms: float) -> list[tuple[str, int]]:
        with self._lock:
            return [(rid, ts) for rid, ts in self.got[topic] if ts > ts_ms]

    def __enter__(self) -> Tail:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def observe_nothing_delivered(tail: Tail, topics: list[str], cut_ms: float, window: float) -> None:
    """Poll the delivery topics for ``window`` seconds: nothing later than the cut + GRACE, and at most
    one batch after the cut (the batch in flight)."""
    deadline = time.monotonic() + window
    while time.monotonic() < deadline:
        for t in topics:
            late = tail.after(t, cut_ms + GRACE * 1000)
            assert late == [], f"{len(late)} record(s) delivered to {t} more than {GRACE}s after the cut"
        time.sleep(0.05)
    for t in topics:
        assert len(tail.after(t, cut_ms)) <= BATCH, "more than the batch in flight delivered after the cut"


# --- the bus under test: the conftest fixtures (ctx, agency_factory, data_plane, ...) on these settings ---
@pytest.fixture
def outage_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A Redis for this test only, on a fixed port so it can be started again where clients expect it."""
    server = EmbeddedRedis(tmp_path / "outage-redis", port=free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def pg_database(postgres_reason: str | None) -> Iterator[tuple[str, str]]:
    """A throwaway PostgreSQL database ``t_<uuid>`` -> (name, SQLAlchemy URL); dropped afterwards."""
    if postgres_reason:
        if os.environ.get("BUS_TEST_REQUIRE_POSTGRES"):
            pytest.fail(f"PostgreSQL is required here but does not answer at {PG_URL}: {postgres_reason}")
        pytest.skip(f"no PostgreSQL server answers at {PG_URL}: {postgres_reason}")
    import sqlalchemy as sa

    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.engine.make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    try:
        yield name, url
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true'))
            conn.execute(
                sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d"),
                {"d": name},
            )
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


@pytest.fixture
def settings(request: pytest.FixtureRequest, tmp_path: Path, prefix: str, kafka: Any) -> Settings:
    """``redis``: the outage Redis and a SQLite store; ``postgres``: the session Redis and a throwaway
    PostgreSQL database."""
    if request.param == "redis":
        redis_url = request.getfixturevalue("outage_redis").url
        database_url = f"sqlite:///{tmp_path / 'bus.db'}"
    else:
        redis_url = request.getfixturevalue("redis_server").url
        database_url = request.getfixturevalue("pg_database")[1]
    return Settings(
        data_dir=tmp_path / "data",
        kafka_bootstrap=kafka.bootstrap,
        redis_url=redis_url,
        database_url=database_url,
        topic_prefix=prefix,
        kafka_profile="embedded",
    )


def _wait_streaming(tail: Tail, topics: list[str]) -> None:
    poll_until(
        lambda: all(tail.count(t) >= 200 for t in topics), timeout=20, what="a steady stream delivered"
    )


@pytest.mark.parametrize("settings", ["redis"], indirect=True)
def test_r14_redis_outage_router_fails_closed_resumes_and_loses_nothing(
    settings, ctx, outage_redis, redis_server, agency_factory, dataset_factory, kafka
) -> None:
    """R14: Redis stopped under a steady stream -> no delivery after the grace (the pipeline pauses and
    records wait in ``ingress``); Redis started again on the same port -> delivery resumes by itself and
    every published record reaches the kept grant; a grant revoked while Redis was down (the change is in
    the store, its announcement was lost) delivers nothing more after Redis is back."""
    from bus.exchange.pipeline import Pipeline

    market, market_key = agency_factory("market")
    psb, _ = agency_factory("psb")
    tax, _ = agency_factory("tax")
    ds = dataset_factory(market)
    kept = grant(ctx, psb, ds, FIELDS)
    revoked = grant(ctx, tax, ds, FIELDS)
    kept_t, revoked_t = ctx.topics.deliver(kept["id"]), ctx.topics.deliver(revoked["id"])

    pipeline = Pipeline(ctx)
    pipeline.start()
    try:
        with (
            publisher(ctx, market, market_key, ds) as pub,
            Tail(ctx, [kept_t, revoked_t]) as tail,
            Pump(pub) as pump,
        ):
            _wait_streaming(tail, [kept_t, revoked_t])

            outage_redis.stop()  # the process is gone when this returns
            cut_ms = time.time() * 1000
            service.revoke(ctx, agency(market), revoked["id"], "duty ended")  # store only: Redis is down
            observe_nothing_delivered(tail, [kept_t, revoked_t], cut_ms, WINDOW)
            assert pipeline.alive() and pipeline.paused_since is not None, "the pipeline paused (fail closed)"
            assert "Redis" in (pipeline.last_error or "")

            outage_redis.start()  # same port, same AOF
            back_ms = time.time() * 1000
            poll_until(
                lambda: len(tail.after(kept_t, back_ms)) > 0,
                timeout=10,
                what="delivery resumed by itself after Redis came back",
            )
            pump.stop()
            ids = set(pump.ids)
            poll_until(lambda: pipeline.accepted >= len(ids), timeout=20, what="every record accepted")
            poll_until(lambda: tail.ids(kept_t) >= ids, timeout=20, what="every accepted record delivered")
            assert pipeline.paused_since is None and pipeline.alive()
            assert tail.ids(kept_t) == ids, "only the stream's records, each at least once"
            assert tail.count(kept_t) - len(ids) <= BATCH, "duplicates beyond the batch in flight"
            late = tail.after(revoked_t, cut_ms + GRACE * 1000)
            assert late == [], f"{len(late)} record(s) delivered under the grant revoked during the outage"
    finally:
        pipeline.stop()


@pytest.mark.parametrize("settings", ["postgres"], indirect=True)
def test_r14_postgres_store_outage_router_fails_closed_resumes_and_loses_nothing(
    settings, ctx, pg_database, agency_factory, dataset_factory, data_plane
) -> None:
    """R14: the PostgreSQL store made unreachable under a steady stream -> no delivery after the grace
    (lineage cannot be written nor the grant verified: validator and router pause, records wait);
    connections allowed again -> delivery resumes by itself and every published record is delivered."""
    import sqlalchemy as sa

    validator, router = data_plane
    name = pg_database[0]
    market, market_key = agency_factory("market")
    psb, _ = agency_factory("psb")
    ds = dataset_factory(market)
    g = grant(ctx, psb, ds, FIELDS)
    topic = ctx.topics.deliver(g["id"])
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")

    def allow(flag: bool) -> None:
        with admin.connect() as conn:
            conn.execute(sa.text(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS {str(flag).lower()}'))
            if not flag:
                conn.execute(
                    sa.text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = :d AND pid <> pg_backend_pid()"
                    ),
                    {"d": name},
                )

    try:
        with publisher(ctx, market, market_key, ds) as pub, Tail(ctx, [topic]) as tail, Pump(pub) as pump:
            _wait_streaming(tail, [topic])

            allow(False)
            cut_ms = time.time() * 1000
            observe_nothing_delivered(tail, [topic], cut_ms, WINDOW)
            assert validator.alive() and router.alive()
            assert validator.paused_since is not None, "the validator paused (records wait in ingress)"

            allow(True)
            back_ms = time.time() * 1000
            poll_until(
                lambda: len(tail.after(topic, back_ms)) > 0,
                timeout=10,
                what="delivery resumed by itself after the store came back",
            )
            pump.stop()
            ids = set(pump.ids)
            poll_until(lambda: tail.ids(topic) >= ids, timeout=20, what="every published record delivered")
            assert tail.ids(topic) == ids
            # at most the router's batch in flight (delivered, lineage not written) and the validator's
            # (accepted into data.<dataset>, lineage not written) come again after the store is back
            assert tail.count(topic) - len(ids) <= 2 * BATCH, "duplicates beyond the batches in flight"
            assert router.paused_since is None and validator.paused_since is None
    finally:
        allow(True)
        admin.dispose()
