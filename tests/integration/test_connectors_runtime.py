"""Connectors inside the bus: sources publish through the SDK's signed path and the real validator and router,
sinks write a grant's delivered view; positions, retries, dead letters, status and restarts."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import func, select, update

from bus.connectors_runtime import ConnectorRuntime
from bus.context import BusContext
from bus.exchange.kafka import assign_from_committed, new_consumer
from bus.gateway.app import create_app
from bus.grants import service
from bus.store.models import AuditEvent, Connector, ConsumptionLineage, Incident, RecordLineage
from connectors.webhook_receiver import WebhookReceiver
from tests.conftest import PG_URL
from tests.helpers import licence_record, poll_until
from tests.integration.dataplane_helpers import (
    Exchange,
    agency,
    market_and_psb,
    publisher,
    receive,
    subscriber,
)

pytestmark = pytest.mark.integration
sqlite_store = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
COLUMNS = list(licence_record(0))
SECRET = "psb-webhook-secret-0123"


class Admin:
    """The connector API as an admin uses it."""

    def __init__(self, ctx: BusContext) -> None:
        self.http = TestClient(create_app(ctx))
        self.h = {"Authorization": f"Bearer {ctx.admin_key}"}

    def register(self, **body: Any) -> dict[str, Any]:
        r = self.http.post("/v1/connectors", json=body, headers=self.h)
        assert r.status_code == 201, r.text
        return dict(r.json())

    def system(self, agency_id: str, url: str) -> None:
        r = self.http.post(
            f"/v1/agencies/{agency_id}/systems",
            headers=self.h,
            json={"name": f"{agency_id}-{uuid.uuid4().hex[:6]}", "url": url, "in_jurisdiction": True},
        )
        assert r.status_code == 201, r.text

    def http_sink(
        self,
        name: str,
        agency_id: str,
        grant_id: str,
        receiver: WebhookReceiver,
        start: bool = True,
        **config: Any,
    ) -> None:
        """Register the receiver as a system of ``agency_id`` and an HTTP sink of ``grant_id`` to it."""
        self.system(agency_id, receiver.url)
        self.register(
            name=name,
            kind="http-sink",
            agency=agency_id,
            grant=grant_id,
            start=start,
            config={"url": receiver.url, "secret": SECRET, **config},
        )

    def get(self, name: str) -> dict[str, Any]:
        return dict(self.http.get(f"/v1/connectors/{name}", headers=self.h).json())

    def status_when(self, name: str, check: Any, timeout: float = 15.0) -> dict[str, Any]:
        def matching() -> dict[str, Any] | None:
            c = self.get(name)
            return c if check(c) else None

        return dict(poll_until(matching, timeout=timeout, interval=0.05, what=f"status of {name}"))


@pytest.fixture
def admin(ctx: BusContext) -> Admin:
    return Admin(ctx)


@pytest.fixture
def exchange(ctx: BusContext, agency_factory: Any, dataset_factory: Any) -> Exchange:
    """Listed last by the tests: made after the data plane and the runtime have started."""
    return market_and_psb(ctx, agency_factory, dataset_factory)


@pytest.fixture
def runtime(ctx: BusContext) -> Iterator[ConnectorRuntime]:
    rt = ConnectorRuntime(ctx, reconcile_interval=0.1, lease_seconds=3)
    rt.start()
    yield rt
    rt.stop()


def csv_text(records: list[dict], header: bool = False) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    if header:
        w.writerow(COLUMNS)
    for r in records:
        w.writerow(r.values())
    return buf.getvalue()


def dead_letters(ctx: BusContext, n: int) -> list[dict[str, str]]:
    consumer = new_consumer(ctx.bootstrap, f"{ctx.topics.prefix}dlq-reader", ctx.settings)
    got: list = []

    def more() -> bool:
        if not consumer.assignment():
            assign_from_committed(consumer, [ctx.topics.dead_letter])
        got.extend(m for m in consumer.consume(100, 0.1) if m.error() is None)
        return len(got) >= n

    poll_until(more, timeout=10, interval=0, what=f"{n} dead letters")
    consumer.close()
    return [_open_dead_letter(ctx, m) for m in got]


def _open_dead_letter(ctx: BusContext, m) -> dict[str, str]:
    """A dead letter as an admin reads it: sealed under the bus's dead-letter key (R12), opened here."""
    from bus.exchange import keyring
    from bus.exchange.envelope import META_HEADER, Meta, Sealer
    from bus.vocab import TopicKind

    headers = dict(m.headers())
    meta = Meta.unpack(headers[META_HEADER])
    sealer = Sealer(meta.kid, keyring.deadletter_key(ctx.master_secret))
    _, value = sealer.open(TopicKind.DEADLETTER, meta.dataset, headers[META_HEADER], m.value())
    assert value not in m.value()  # sealed on the broker: the record is not in its bytes
    return {k: (v or b"").decode() for k, v in m.headers() if k != META_HEADER} | {
        "value": value.decode("utf-8", "replace")}


@sqlite_store
def test_r13_csv_appended_while_the_connector_runs_reaches_the_grantee(
    ctx, data_plane, runtime, admin, tmp_path: Path, exchange: Exchange
) -> None:
    market, _, psb, psb_key, ds, g = exchange
    path = tmp_path / "licences.csv"
    bad = {**licence_record(99), "registered_capital": "a lot"}
    path.write_text(csv_text([licence_record(i) for i in range(5)] + [bad], header=True))
    admin.register(
        name="market-csv",
        kind="file-source",
        agency=market,
        dataset=ds,
        start=True,
        config={"path": str(path), "format": "csv", "key_field": "licence_no"},
    )
    with subscriber(ctx, psb, psb_key, g["id"]) as sub:
        got = receive(sub, 5)
        with path.open("a") as f:
            f.write(csv_text([licence_record(i) for i in range(5, 8)]))
        got += receive(sub, 3)
    assert sorted(d.value["licence_no"] for d in got) == [licence_record(i)["licence_no"] for i in range(8)]
    assert {d.headers["bus-publisher"] for d in got} == {market}  # signed and validated as the owner

    status = admin.status_when("market-csv", lambda c: c["status"].get("records_out") == 8)["status"]
    assert status["state"] == "running" and status["records_in"] == 9 and status["dead_letters"] == 1
    assert status["lag"] == 0 and status["lag_unit"] == "bytes"
    [dead] = dead_letters(ctx, 1)
    assert dead["bus-connector"] == "market-csv" and dead["bus-dataset"] == ds
    assert "registered_capital" in dead["bus-error-detail"] and dead["bus-origin"].startswith("licences.csv@")


@pytest.fixture
def pg_table_url(postgres_reason: str | None) -> Iterator[str]:
    """An agency's own PostgreSQL database: a throwaway schema on the test server."""
    if postgres_reason:
        pytest.skip(f"no PostgreSQL server: {postgres_reason}")
    schema = f"agency_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(PG_URL)
    with engine.begin() as c:
        c.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    with engine.begin() as c:
        c.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    engine.dispose()


def _worker(ctx: BusContext, tmp_path: Path) -> subprocess.Popen:
    s = ctx.settings
    env = {
        **os.environ,
        "BUS_KAFKA_BOOTSTRAP": ctx.bootstrap,
        "BUS_REDIS_URL": ctx.redis_url,
        "BUS_DATABASE_URL": s.resolved_database_url,
        "BUS_TOPIC_PREFIX": s.topic_prefix,
        "BUS_DATA_DIR": str(s.data_dir),
        "BUS_KAFKA_PROFILE": "embedded",
        "BUS_CONNECTOR_LEASE_SECONDS": "1",
    }
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "databus"), "worker", "connectors"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=(tmp_path / "worker.err").open("w"),
        text=True,
    )


def test_r14_connector_worker_killed_mid_stream_loses_nothing_and_repeats_at_most_a_batch(
    ctx, data_plane, admin, pg_table_url: str, tmp_path: Path, exchange: Exchange
) -> None:
    """A PostgreSQL table grows while a scale-out connector worker publishes it; the worker is killed
    (SIGKILL) mid-stream and another runtime takes over: every row arrives, duplicates stay within a batch."""
    market, _, psb, psb_key, ds, g = exchange
    engine = sa.create_engine(pg_table_url)
    table = sa.Table(
        "licences",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True),
        *[sa.Column(c, sa.BigInteger if c == "registered_capital" else sa.Text) for c in COLUMNS],
    )
    table.create(engine)

    def insert(lo: int, hi: int) -> None:
        with engine.begin() as c:
            c.execute(table.insert(), [{"id": i, **licence_record(i)} for i in range(lo, hi)])

    insert(0, 400)
    batch = 50
    admin.register(
        name="market-sql",
        kind="sql-source",
        agency=market,
        dataset=ds,
        start=True,
        config={
            "url": pg_table_url,
            "table": "licences",
            "incremental_column": "id",
            "batch_size": batch,
            "poll_interval": 0.1,
        },
    )
    worker = _worker(ctx, tmp_path)
    try:
        assert worker.stdout is not None and "running" in worker.stdout.readline()
        admin.status_when(
            "market-sql",
            lambda c: 0 < c["status"].get("records_out", 0) < 400 or c["status"].get("records_out", 0) >= 400,
        )
        insert(400, 600)  # rows arrive during the run
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(10)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)
    killed_at = admin.get("market-sql")["status"].get("records_out", 0)
    runtime = ConnectorRuntime(ctx, reconcile_interval=0.1, lease_seconds=3)
    runtime.start()
    try:
        insert(600, 700)
        with subscriber(ctx, psb, psb_key, g["id"]) as sub:
            got = receive(sub, 700, timeout=40)
            got += sub.poll(1000, 0.5)
    finally:
        runtime.stop()
        engine.dispose()
    numbers = [d.value["licence_no"] for d in got]
    assert set(numbers) == {licence_record(i)["licence_no"] for i in range(700)}  # nothing lost
    assert len(numbers) - len(set(numbers)) <= batch, (
        f"{len(numbers) - 700} duplicates (killed at {killed_at})"
    )
    # a repeated row repeats its record id: one id per source row, whichever runtime published it
    ids_of: dict[str, set[str]] = {}
    for d in got:
        ids_of.setdefault(d.value["licence_no"], set()).add(d.record_id)
    assert all(len(ids) == 1 for ids in ids_of.values()), {n: i for n, i in ids_of.items() if len(i) > 1}
    assert len({d.record_id for d in got}) == 700
    assert published_rows(ctx, ds, 700) == 700  # lineage: one published row per source row


def published_rows(ctx: BusContext, ds: str, want: int) -> int:
    """Lineage rows of records published to ``ds``, once at least ``want`` are written (the validator's
    ledger writes them right after producing the batch)."""

    def count() -> int | None:
        with ctx.store.session() as s:
            n = s.scalar(
                select(func.count()).select_from(RecordLineage).where(RecordLineage.dataset_id == ds)
            )
        return n if n is not None and n >= want else None

    return int(poll_until(count, timeout=10, interval=0.05, what=f"{want} lineage rows of {ds}"))


@sqlite_store
def test_r14_a_source_batch_published_again_after_a_crash_repeats_its_record_ids(
    ctx, data_plane, runtime, admin, tmp_path: Path, exchange: Exchange
) -> None:
    """The batch is on the bus but its position was never saved (the worker died in between): the
    connector reads and publishes it again. Every record comes again with the id it had, so the grantee
    drops the repeat by ``bus-record-id``, lineage keeps one row per source line, and the fingerprint
    guard does not take the publisher's own repeat for re-collected data."""
    market, _, psb, psb_key, ds, g = exchange
    n = 30
    path = tmp_path / "licences.jsonl"
    path.write_text("".join(json.dumps(licence_record(i)) + "\n" for i in range(n)))
    admin.register(
        name="market-replay",
        kind="file-source",
        agency=market,
        dataset=ds,
        start=True,
        config={"path": str(path), "format": "jsonl", "key_field": "licence_no"},
    )
    with subscriber(ctx, psb, psb_key, g["id"]) as sub:
        first = receive(sub, n)
        admin.status_when("market-replay", lambda c: c["status"].get("records_out") == n)
        r = admin.http.post("/v1/connectors/market-replay/stop", headers=admin.h)
        assert r.status_code == 200, r.text
        admin.status_when("market-replay", lambda c: c["status"].get("state") == "stopped")
        with ctx.store.session() as s:
            # the crash: the batch was published, the position before it is what the store still holds
            s.execute(update(Connector).where(Connector.name == "market-replay").values(position={}))
        r = admin.http.post("/v1/connectors/market-replay/start", headers=admin.h)
        assert r.status_code == 200, r.text
        again = receive(sub, n)
        again += sub.poll(1000, 0.5)
    assert len(first) == n and len(again) == n  # the repeat was published, validated and delivered
    by_number = {d.value["licence_no"]: d.record_id for d in first}
    assert len(set(by_number.values())) == n
    assert {d.value["licence_no"]: d.record_id for d in again} == by_number  # same ids, not new ones
    assert published_rows(ctx, ds, n) == n
    with ctx.store.session() as s:
        outcomes = s.scalars(select(RecordLineage.outcome).where(RecordLineage.dataset_id == ds)).all()
        incidents = s.scalar(select(func.count()).select_from(Incident))
    assert set(outcomes) == {"accepted"} and incidents == 0  # not flagged as re-collection (R9)
    status = admin.status_when("market-replay", lambda c: c["status"].get("records_out") == 2 * n)["status"]
    assert status.get("dead_letters", 0) == 0


@sqlite_store
def test_r8_http_sink_delivers_the_view_through_a_failing_receiver(
    ctx, data_plane, runtime, admin, exchange: Exchange
) -> None:
    market, market_key, psb, _, ds, g = exchange
    with WebhookReceiver(SECRET, fail_first=2) as receiver:
        admin.http_sink(
            "psb-hook",
            psb,
            g["id"],
            receiver,
            batch_size=10,
            retry={"initial_backoff": 0.05, "max_backoff": 0.2},
        )
        with publisher(ctx, market, market_key, ds) as pub:
            ids = [pub.publish(licence_record(i)) for i in range(25)]
            pub.flush()
        poll_until(lambda: len(receiver.records) >= 25, timeout=20, what="25 records at the receiver")
    assert sorted(r["record_id"] for r in receiver.records) == sorted(ids)
    first = next(r for r in receiver.records if r["value"]["licence_no"] == "LIC00000000")
    assert first["value"]["phone"].endswith("0000") and first["value"]["phone"].startswith(
        "*"
    )  # masked (R12)
    assert first["value"]["legal_rep_id"].startswith("ps-")  # pseudonymised per grant
    assert receiver.answers[:2] == [503, 503] and receiver.bad_signatures == 0
    status = admin.status_when("psb-hook", lambda c: c["status"].get("records_out") == 25)["status"]
    assert status["errors"] == 2 and "503" in status["last_error"]["detail"] and status["state"] == "running"
    assert "secret" not in json.dumps(status) or SECRET not in json.dumps(status)
    with ctx.store.session() as s:  # each write is a consumption in the record's lineage
        vias = s.scalars(select(ConsumptionLineage.via).where(ConsumptionLineage.grant_id == g["id"])).all()
    assert sorted(vias) == ["connector:psb-hook"] * 25


@sqlite_store
def test_http_sink_that_keeps_failing_stops_and_reports(
    ctx, data_plane, runtime, admin, exchange: Exchange
) -> None:
    market, market_key, psb, _, ds, g = exchange
    with WebhookReceiver(SECRET, fail_first=10_000) as receiver:
        admin.http_sink(
            "psb-down",
            psb,
            g["id"],
            receiver,
            retry={"max_attempts": 3, "initial_backoff": 0.05, "max_backoff": 0.1},
        )
        with publisher(ctx, market, market_key, ds) as pub:
            pub.publish(licence_record(1))
            pub.flush()
        c = admin.status_when("psb-down", lambda c: c["status"].get("state") == "failed")
    assert c["desired_state"] == "stopped"
    assert (
        "503" in c["status"]["last_error"]["detail"]
        and "gave up after 3 attempts" in c["status"]["last_error"]["detail"]
    )
    assert receiver.answers == [503, 503, 503]
    with ctx.store.session() as s:
        actions = s.scalars(select(AuditEvent.action).where(AuditEvent.subject_id == "psb-down")).all()
    assert actions == ["connector.registered", "connector.failed"]


@sqlite_store
def test_r7_r14_a_revoked_grant_stops_its_sink_before_records_already_delivered_are_written(
    ctx, data_plane, runtime, admin, exchange: Exchange
) -> None:
    market, market_key, psb, psb_key, ds, g = exchange
    with WebhookReceiver(SECRET) as receiver:
        admin.http_sink("psb-rev", psb, g["id"], receiver, start=False)
        with publisher(ctx, market, market_key, ds) as pub:
            for i in range(3):
                pub.publish(licence_record(i))
            pub.flush()
        with subscriber(ctx, psb, psb_key, g["id"]) as sub:  # delivered, waiting for the sink
            receive(sub, 3)
        service.revoke(ctx, agency(market), g["id"], "inspection finished")
        r = admin.http.post("/v1/connectors/psb-rev/start", headers=admin.h)
        assert r.status_code == 200
        c = admin.status_when("psb-rev", lambda c: c["status"].get("state") == "blocked", timeout=10)
        assert receiver.records == [] and receiver.answers == []
    assert "revoked" in c["status"]["blocked_reason"]
    assert c["status"].get("records_out", 0) == 0


@sqlite_store
def test_r13_mqtt_device_messages_reach_the_bus(ctx, data_plane, runtime, admin, exchange: Exchange) -> None:
    market, _, psb, psb_key, ds, g = exchange
    base = f"t{uuid.uuid4().hex[:8]}"
    admin.register(
        name=f"iot-{base}",
        kind="mqtt-source",
        agency=market,
        dataset=ds,
        start=True,
        config={"topics": [f"{base}/licences/#"], "client_id": f"{base}-connector"},
    )
    admin.status_when(f"iot-{base}", lambda c: c["status"].get("state") == "running")
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{base}-device")
    client.connect("127.0.0.1", 1883)
    client.loop_start()
    for i in range(10):
        client.publish(f"{base}/licences/dev{i % 2}", json.dumps(licence_record(i)), qos=1).wait_for_publish(
            5
        )
    client.disconnect()
    client.loop_stop()
    with subscriber(ctx, psb, psb_key, g["id"]) as sub:
        got = receive(sub, 10)
    assert sorted(d.value["licence_no"] for d in got) == [licence_record(i)["licence_no"] for i in range(10)]


@sqlite_store
def test_r14_source_batches_start_traces_that_sink_writes_continue(
    ctx, data_plane, runtime, admin, tmp_path: Path, exchange: Exchange
) -> None:
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from bus.lineage import tracing

    spans = InMemorySpanExporter()
    processor = tracing.attach(SimpleSpanProcessor(spans))
    try:
        market, _, psb, _, ds, g = exchange
        path = tmp_path / "licences.csv"
        path.write_text(csv_text([licence_record(i) for i in range(3)], header=True))
        with WebhookReceiver(SECRET) as receiver:
            admin.http_sink("psb-trace", psb, g["id"], receiver)
            admin.register(
                name="market-trace",
                kind="file-source",
                agency=market,
                dataset=ds,
                start=True,
                config={"path": str(path), "format": "csv"},
            )
            poll_until(lambda: len(receiver.records) >= 3, timeout=15, what="3 records at the receiver")
            poll_until(
                lambda: any(
                    s.attributes.get("databus.connector") == "psb-trace" for s in spans.get_finished_spans()
                ),
                timeout=5,
                what="the sink's span",
            )
    finally:
        tracing.detach(processor)
    finished = spans.get_finished_spans()
    [send] = [s for s in finished if s.attributes.get("databus.connector") == "market-trace"]
    trace_id = f"{send.context.trace_id:032x}"
    assert (
        send.name == f"send {ctx.topics.ingress(ds)}" and send.parent is None
    )  # a source batch starts a trace
    assert {r["traceparent"].split("-")[1] for r in receiver.records} == {trace_id}
    [write] = [s for s in finished if s.attributes.get("databus.connector") == "psb-trace"]
    assert f"{write.context.trace_id:032x}" == trace_id  # the sink's write is a span of the record's trace
    assert write.name == f"process {ctx.topics.deliver(g['id'])}" and write.parent is not None
