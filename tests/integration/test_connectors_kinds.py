"""Each connector kind against the real system: files, SQLite and PostgreSQL, Mosquitto, an HTTP receiver.

These drive a kind directly (start, poll/write, stop, restart from the saved position) to pin down what it
reads and writes; `test_connectors_runtime.py` runs them inside the bus.
"""

from __future__ import annotations

import csv
import io
import json
import os
import socket
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import sqlalchemy as sa
from paho.mqtt.enums import CallbackAPIVersion

from connectors import registry
from connectors.base import PermanentFailure, SinkContext, SinkRecord, SourceContext, TransientFailure
from connectors.webhook_receiver import WebhookReceiver
from tests.helpers import licence_record, licence_schema, poll_until

pytestmark = pytest.mark.integration

COLUMNS = list(licence_record(0))


def source(kind: str, config: dict, position: dict | None = None, name: str = "src") -> Any:
    conn = registry.build(kind, name, config)
    conn.start(SourceContext(name, "market-licences", "market", licence_schema()), position or {})
    return conn


def drain(src: Any, want: int, timeout: float = 10.0) -> tuple[list, list, dict]:
    """Poll until ``want`` records and dead letters came, or fail; returns (records, unreadable, position)."""
    records: list = []
    unreadable: list = []
    position: dict = {}

    def more() -> bool:
        nonlocal position
        batch = src.poll(500, 0.1)
        records.extend(batch.records)
        unreadable.extend(batch.unreadable)
        position = batch.position or position
        return len(records) + len(unreadable) >= want

    poll_until(more, timeout=timeout, interval=0, what=f"{want} records")
    return records, unreadable, position


def csv_line(rec: dict) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(rec.values())
    return buf.getvalue()


# --- file source -------------------------------------------------------------------------------------
def test_r13_csv_file_appended_while_read_is_read_once_and_resumed_after_restart(tmp_path: Path) -> None:
    path = tmp_path / "licences.csv"
    path.write_text(",".join(COLUMNS) + "\n" + "".join(csv_line(licence_record(i)) for i in range(3)))
    src = source("file-source", {"path": str(path), "format": "csv", "key_field": "licence_no"})
    records, bad, _ = drain(src, 3)
    assert [r.value for r in records] == [licence_record(i) for i in range(3)]
    assert records[0].key == "LIC00000000" and not bad

    line = csv_line(licence_record(3))
    with path.open("a") as f:  # one whole record and half of the next: only the whole one is read
        f.write(line + csv_line(licence_record(4))[:20])
    records, _, position = drain(src, 1)
    assert [r.value["licence_no"] for r in records] == ["LIC00000003"]
    assert src.poll(500, 0.1).records == []
    src.stop()

    with path.open("a") as f:
        f.write(csv_line(licence_record(4))[20:])
    again = source("file-source", {"path": str(path), "format": "csv"}, position)
    records, _, _ = drain(again, 1)
    assert [r.value["licence_no"] for r in records] == ["LIC00000004"]
    assert again.status()["lag"] == 0
    again.stop()


def test_csv_quoted_fields_may_span_lines_and_columns_are_mapped(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    rec = {**licence_record(1), "business_scope": "wholesale,\nretail"}
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["no", *COLUMNS[1:]])
    writer.writerow(rec.values())
    path.write_text(buf.getvalue())
    src = source("file-source", {"path": str(path), "format": "csv", "mapping": {"no": "licence_no"}})
    records, bad, _ = drain(src, 1)
    assert not bad
    assert records[0].value["licence_no"] == rec["licence_no"]
    assert records[0].value["business_scope"] == "wholesale,\nretail"


def test_jsonl_directory_reads_every_file_and_reports_bad_lines(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text(json.dumps(licence_record(0)) + "\n{not json\n")
    (tmp_path / "b.jsonl").write_text(
        json.dumps({**licence_record(1), "registered_capital": "lots"})
        + "\n"
        + json.dumps(licence_record(2))
        + "\n[1, 2]\n"
    )
    (tmp_path / "ignored.txt").write_text(json.dumps(licence_record(9)) + "\n")
    src = source("file-source", {"path": str(tmp_path), "format": "jsonl", "pattern": "*.jsonl"})
    records, bad, position = drain(src, 5)
    assert [r.value["licence_no"] for r in records] == ["LIC00000000", "LIC00000002"]
    reasons = sorted(u.detail for u in bad)
    assert any("not valid JSON" in r for r in reasons)
    assert any("registered_capital" in r and "not a number" in r for r in reasons)
    assert any("must be an object" in r for r in reasons)
    assert {u.origin.split("@")[0] for u in bad} == {"a.jsonl", "b.jsonl"}
    assert set(position["files"]) == {"a.jsonl", "b.jsonl"}

    (tmp_path / "c.jsonl").write_text(json.dumps(licence_record(3)) + "\n")  # a new file in the directory
    (tmp_path / "a.jsonl").write_text(json.dumps(licence_record(4)) + "\n")  # replaced: read from the start
    records, _, _ = drain(src, 2)
    assert sorted(r.value["licence_no"] for r in records) == ["LIC00000003", "LIC00000004"]


def test_r14_file_lines_read_again_after_a_crash_keep_their_position_ids(tmp_path: Path) -> None:
    """A batch re-read from the last saved position has the same ``position_id``s (so the same record
    ids); each line has its own, and a replaced file's lines are not mistaken for the old ones."""
    path = tmp_path / "licences.jsonl"
    path.write_text("".join(json.dumps(licence_record(i)) + "\n" for i in range(4)))
    cfg = {"path": str(path), "format": "jsonl"}
    src = source("file-source", cfg)
    first = src.poll(2, 0.1)
    second = src.poll(2, 0.1)
    src.stop()  # "crashed" after publishing the second batch, before saving its position
    places = [r.position_id for r in first.records + second.records]
    assert len(set(places)) == 4 and None not in places

    again = source("file-source", cfg, json.loads(json.dumps(first.position)))
    replayed, _, _ = drain(again, 2)
    assert [r.position_id for r in replayed] == places[2:]
    from_start, _, _ = drain(source("file-source", cfg), 4)
    assert [r.position_id for r in from_start] == places

    replacement = tmp_path / "new.jsonl"
    replacement.write_text(path.read_text())
    os.replace(replacement, path)  # same name, same bytes, another file
    records, _, _ = drain(again, 4)
    assert [r.value for r in records] == [r.value for r in from_start]
    assert not {r.position_id for r in records} & set(places)


# --- SQL source --------------------------------------------------------------------------------------
def _licence_table(md: sa.MetaData) -> sa.Table:
    return sa.Table(
        "licences",
        md,
        sa.Column("id", sa.Integer, primary_key=True),
        *[sa.Column(c, sa.BigInteger if c == "registered_capital" else sa.Text) for c in COLUMNS],
        sa.Column("updated_at", sa.DateTime(timezone=True)),
    )


def test_r13_sql_table_rows_inserted_during_the_run_are_read_incrementally(database_url: str) -> None:
    """SQLite and PostgreSQL: new rows are picked up, equal timestamps are split safely, restart resumes."""
    from datetime import UTC, datetime

    engine = sa.create_engine(database_url)
    table = _licence_table(sa.MetaData())
    table.create(engine)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    with engine.begin() as c:
        c.execute(table.insert(), [{"id": i, **licence_record(i), "updated_at": t0} for i in range(1, 4)])
    cfg = {"url": database_url, "table": "licences", "incremental_column": "updated_at", "batch_size": 2}
    src = source("sql-source", cfg)
    first = src.poll(2, 0.1)  # three rows share one timestamp: the id breaks the tie
    second = src.poll(2, 0.1)
    assert [r.value["licence_no"] for r in first.records + second.records] == [
        licence_record(i)["licence_no"] for i in range(1, 4)
    ]
    assert src.poll(2, 0.1).records == []

    with engine.begin() as c:  # rows arrive while the connector runs
        c.execute(
            table.insert(),
            [{"id": i, **licence_record(i), "updated_at": t0.replace(hour=1)} for i in range(4, 6)],
        )
    records, _, position = drain(src, 2)
    assert [r.value["licence_no"] for r in records] == ["LIC00000004", "LIC00000005"]
    src.stop()

    with engine.begin() as c:
        c.execute(table.insert(), [{"id": 6, **licence_record(6), "updated_at": t0.replace(hour=2)}])
    again = source("sql-source", cfg, json.loads(json.dumps(position)))
    records, _, _ = drain(again, 1)
    assert [r.value["licence_no"] for r in records] == ["LIC00000006"]
    again._lag_at = 0
    assert again.status()["lag"] == 0
    again.stop()
    engine.dispose()


def test_r14_sql_rows_read_again_after_a_crash_keep_their_position_ids(database_url: str) -> None:
    """SQLite and PostgreSQL: rows re-read from the last saved position have the same ``position_id``s,
    including rows that share a timestamp (told apart by the tie-break column)."""
    from datetime import UTC, datetime

    engine = sa.create_engine(database_url)
    table = _licence_table(sa.MetaData())
    table.create(engine)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    with engine.begin() as c:
        c.execute(table.insert(), [{"id": i, **licence_record(i), "updated_at": t0} for i in range(1, 6)])
    cfg = {"url": database_url, "table": "licences", "incremental_column": "updated_at"}
    src = source("sql-source", cfg)
    first, second = src.poll(3, 0.1), src.poll(3, 0.1)
    src.stop()  # "crashed" after publishing the second batch, before saving its position
    places = [r.position_id for r in first.records + second.records]
    assert len(set(places)) == 5 and None not in places

    again = source("sql-source", cfg, json.loads(json.dumps(first.position)))
    assert [r.position_id for r in again.poll(3, 0.1).records] == places[3:]
    again.stop()
    from_start = source("sql-source", cfg)
    assert [r.position_id for r in from_start.poll(10, 0.1).records] == places
    from_start.stop()
    engine.dispose()


def test_sql_source_reports_a_missing_table_as_permanent(tmp_path: Path) -> None:
    with pytest.raises(PermanentFailure, match="nope"):
        source(
            "sql-source",
            {"url": f"sqlite:///{tmp_path / 'x.db'}", "table": "nope", "incremental_column": "id"},
        )


def test_sql_source_reports_an_unreachable_database_as_transient() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(TransientFailure) as err:
        source(
            "sql-source",
            {"url": f"postgresql://u:topsecret@127.0.0.1:{port}/x", "table": "t", "incremental_column": "id"},
        )
    assert "topsecret" not in str(err.value)


# --- MQTT source -------------------------------------------------------------------------------------
def _publish(topic: str, payloads: list[bytes]) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:8]}")
    client.connect("127.0.0.1", 1883)
    client.loop_start()
    infos = [client.publish(topic, p, qos=1) for p in payloads]
    for info in infos:
        info.wait_for_publish(5)
    client.disconnect()
    client.loop_stop()


def test_r14_mqtt_messages_unacknowledged_at_a_restart_come_again(tmp_path: Path) -> None:
    """A message is acknowledged only after its batch is on the bus: a restart before that loses nothing."""
    base = f"t{uuid.uuid4().hex[:8]}"
    cfg = {
        "topics": [f"{base}/sensors/+"],
        "client_id": f"{base}-src",
        "key_field": "licence_no",
        "topic_field": "address",
    }
    src = source("mqtt-source", cfg)
    _publish(
        f"{base}/sensors/dev1", [json.dumps(licence_record(i)).encode() for i in range(3)] + [b"\xff garbage"]
    )
    records, bad, position = drain(src, 4)
    assert sorted(r.value["licence_no"] for r in records) == [
        licence_record(i)["licence_no"] for i in range(3)
    ]
    assert records[0].value["address"] == f"{base}/sensors/dev1"
    assert "not JSON" in bad[0].detail
    src.stop()  # crashed before the batch was published: nothing acknowledged

    again = source("mqtt-source", cfg)
    records, bad, position = drain(again, 4)
    assert sorted(r.value["licence_no"] for r in records) == [
        licence_record(i)["licence_no"] for i in range(3)
    ]
    again.commit(position)  # published: acknowledge
    again.stop()

    _publish(f"{base}/sensors/dev2", [json.dumps(licence_record(7)).encode()])  # while the connector is down
    third = source("mqtt-source", cfg)
    records, bad, _ = drain(third, 1)
    assert [r.value["licence_no"] for r in records] == ["LIC00000007"] and not bad
    assert third.poll(10, 0.3).records == []  # the acknowledged ones are gone for good
    third.commit({})
    third.stop()


def test_mqtt_source_reports_an_unreachable_broker_as_transient() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(TransientFailure, match="cannot reach the MQTT broker"):
        source("mqtt-source", {"topics": ["x"], "port": port})


# --- sinks -------------------------------------------------------------------------------------------
def sink(kind: str, config: dict, name: str = "snk") -> Any:
    conn = registry.build(kind, name, config)
    view = {
        "type": "record",
        "name": "V",
        "fields": [
            {"name": "licence_no", "type": "string"},
            {"name": "enterprise_name", "type": "string"},
            {"name": "registered_capital", "type": "long"},
        ],
    }
    conn.start(SinkContext(name, "g-1", "psb", "market-licences", "licence-check", view))
    return conn


def view_records(n: int, start: int = 0) -> list[SinkRecord]:
    out = []
    for i in range(start, start + n):
        r = licence_record(i)
        out.append(
            SinkRecord(
                f"rec{i:04d}",
                {k: r[k] for k in ("licence_no", "enterprise_name", "registered_capital")},
                {"traceparent": f"00-{i:032x}-{i + 1:016x}-01"},
            )
        )
    return out


SECRET = "webhook-secret-0123456789"


def test_r8_http_sink_retries_a_failing_receiver_and_signs_every_batch() -> None:
    with WebhookReceiver(SECRET, fail_first=2) as receiver:
        snk = sink("http-sink", {"url": receiver.url, "secret": SECRET})
        batch = view_records(5)
        for _ in range(2):
            with pytest.raises(TransientFailure, match="503"):
                snk.write(batch)
        assert snk.write(batch) == []
        assert snk.write(batch) == []  # a repeated batch: the receiver drops it by its batch id
        snk.stop()
    assert receiver.answers == [503, 503, 200, 200]
    assert receiver.bad_signatures == 0
    assert [r["record_id"] for r in receiver.records] == [r.record_id for r in batch]
    assert receiver.records[0]["value"]["licence_no"] == "LIC00000000"
    assert receiver.records[0]["traceparent"].startswith("00-")


def test_http_sink_isolates_records_the_receiver_refuses() -> None:
    with WebhookReceiver(SECRET, refuse=lambda r: r["record_id"] == "rec0003") as receiver:
        snk = sink("http-sink", {"url": receiver.url, "secret": SECRET})
        refused = snk.write(view_records(6))
        snk.stop()
    assert [r.record.record_id for r in refused] == ["rec0003"]
    assert "422" in refused[0].detail
    assert sorted(r["record_id"] for r in receiver.records) == [f"rec{i:04d}" for i in range(6) if i != 3]


def test_http_sink_stops_on_a_wrong_url_or_secret() -> None:
    with WebhookReceiver(SECRET) as receiver:
        wrong_path = sink("http-sink", {"url": receiver.url + "/nope", "secret": SECRET})
        with pytest.raises(PermanentFailure, match="404"):
            wrong_path.write(view_records(1))
        wrong_secret = sink("http-sink", {"url": receiver.url, "secret": "not-the-receivers-secret"})
        with pytest.raises(PermanentFailure, match="401"):
            wrong_secret.write(view_records(1))
    assert receiver.bad_signatures == 1 and receiver.records == []


def test_http_sink_reports_a_receiver_that_is_down_as_transient() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    snk = sink("http-sink", {"url": f"http://127.0.0.1:{port}/hook", "secret": SECRET, "timeout": 2})
    with pytest.raises(TransientFailure, match="ConnectError"):
        snk.write(view_records(1))


def test_r7_sql_sink_upserts_by_record_id_with_grant_and_scenario(database_url: str) -> None:
    snk = sink("sql-sink", {"url": database_url, "table": "psb_licences"})
    batch = view_records(4)
    assert snk.write(batch) == []
    changed = [SinkRecord(r.record_id, {**r.value, "enterprise_name": "renamed"}) for r in batch[:2]]
    assert snk.write(changed + view_records(1, start=4)) == []  # a repeated batch changes nothing more
    snk.stop()
    engine = sa.create_engine(database_url)
    with engine.connect() as c:
        rows = c.execute(
            sa.text(
                "SELECT record_id, enterprise_name, registered_capital, bus_grant, bus_scenario "
                "FROM psb_licences ORDER BY record_id"
            )
        ).all()
    engine.dispose()
    assert [r[0] for r in rows] == [f"rec{i:04d}" for i in range(5)]
    assert [r[1] for r in rows[:3]] == ["renamed", "renamed", "Xinzhou Trading Co. 2"]
    assert rows[0][2] == 1_000_000 and rows[0][3] == "g-1" and rows[0][4] == "licence-check"


def test_sql_sink_dead_letters_only_the_rows_the_database_refuses(database_url: str) -> None:
    engine = sa.create_engine(database_url)
    with engine.begin() as c:
        c.execute(
            sa.text(
                "CREATE TABLE capped (record_id VARCHAR(64) PRIMARY KEY, licence_no TEXT, "
                "registered_capital BIGINT CHECK (registered_capital < 1000003))"
            )
        )
    snk = sink("sql-sink", {"url": database_url, "table": "capped", "create_table": False})
    refused = snk.write(view_records(5))
    snk.stop()
    with engine.connect() as c:
        ids = [r[0] for r in c.execute(sa.text("SELECT record_id FROM capped ORDER BY record_id"))]
    engine.dispose()
    assert sorted(r.record.record_id for r in refused) == ["rec0003", "rec0004"]
    assert all("refused the record" in r.detail for r in refused)
    assert ids == ["rec0000", "rec0001", "rec0002"]


def test_sql_sink_needs_the_record_id_as_primary_key(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'g.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as c:
        c.execute(sa.text("CREATE TABLE t (id INTEGER PRIMARY KEY, licence_no TEXT)"))
    engine.dispose()
    with pytest.raises(PermanentFailure, match="primary key"):
        sink("sql-sink", {"url": url, "table": "t", "create_table": False})


def test_file_sink_rotates_and_keeps_every_record_once(tmp_path: Path) -> None:
    snk = sink("file-sink", {"directory": str(tmp_path / "out"), "max_bytes": 1024})
    for start in range(0, 40, 8):
        assert snk.write(view_records(8, start=start)) == []
    snk.stop()
    files = sorted((tmp_path / "out").iterdir())
    assert len(files) > 3 and files[-1].name == "records.jsonl"
    assert all(f.stat().st_size < 2048 for f in files)
    lines = [json.loads(line) for f in files for line in f.read_text().splitlines()]
    assert sorted(r["record_id"] for r in lines) == [f"rec{i:04d}" for i in range(40)]
    assert lines[0]["grant"] == "g-1" and lines[0]["scenario"] == "licence-check"
