"""R14, R18: delivery evidence stored per batch answers record lookups through indexes only, counts
exactly inside time windows, and its record-id index is tamper-evident like the rows themselves."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import delete, event, select, text, update

from bus.context import BusContext
from bus.lineage import audit, queries
from bus.lineage.rows import DeliveredRow
from bus.store.models import DeliveryKey, DeliveryLineage, RecordLineage
from tests.integration.lineage_helpers import T0, World, rid

pytestmark = pytest.mark.integration


@pytest.fixture
def world(ctx: BusContext, agency_factory: Any, dataset_factory: Any) -> World:
    return World(ctx, agency_factory, dataset_factory)


def _row(world: World, i: int, **over: Any) -> DeliveredRow:
    row: DeliveredRow = {
        "record_id": rid(i),
        "grant_id": world.g_tax,
        "dataset_id": world.dataset,
        "agency_id": world.tax,
        "scenario_code": "tax-audit",
        "delivered_at": T0,
        "partition": i % 3,
        "offset": 1000 + i,
        "size": 10 + i,
        "trace_id": f"{i % 2:032x}",
    }
    row.update(over)  # type: ignore[typeddict-item]
    return row


def test_r14_one_call_is_one_row_per_grant_and_partition(world: World) -> None:
    world.publish()
    rows = [_row(world, i) for i in range(9)]
    rows += [_row(world, i, grant_id=world.g_health, agency_id=world.health) for i in range(9)]
    world.rec.delivered(rows)
    with world.ctx.store.session() as s:
        batches = s.scalars(select(DeliveryLineage)).all()
        keys = s.scalars(select(DeliveryKey)).all()
    assert sorted((b.grant_id, b.partition, b.records) for b in batches) == sorted(
        [(g, p, 3) for g in (world.g_tax, world.g_health) for p in range(3)]
    )
    assert {(k.seq_lo, k.seq_hi) for k in keys} == {
        (min(b.audit_seq for b in batches), max(b.audit_seq for b in batches))  # type: ignore[type-var]
    }
    with world.ctx.store.session() as s:
        out = queries.record_lineage(s, rid(4))
    got = {d["grant"]: d for d in out["deliveries"]}
    assert set(got) == {world.g_tax, world.g_health}
    assert (got[world.g_tax]["partition"], got[world.g_tax]["offset"], got[world.g_tax]["size"]) == (
        1,
        1004,
        14,
    )
    assert got[world.g_tax]["trace_id"] == f"{0:032x}" and got[world.g_tax]["at"] == T0.isoformat()
    assert audit.verify(world.ctx.store)["ok"]


def test_r14_a_replayed_batch_shows_each_delivery(world: World) -> None:
    """At least once: a batch repeated after a crash is evidence twice, as it was delivered twice."""
    world.publish()
    world.deliver(world.g_tax, world.tax, "tax-audit", range(5))
    world.deliver(world.g_tax, world.tax, "tax-audit", range(3, 8))
    with world.ctx.store.session() as s:
        out = queries.record_lineage(s, rid(4))
        once = queries.record_lineage(s, rid(7))
    assert [d["grant"] for d in out["deliveries"]] == [world.g_tax, world.g_tax]
    assert len(once["deliveries"]) == 1
    assert audit.verify(world.ctx.store)["lineage"]["rows"] == 12 + 10


def test_r14_record_lookup_uses_indexes_only(world: World) -> None:
    """SQLite's plan for every statement of a record lookup names an index or the primary key."""
    if world.ctx.store.dialect != "sqlite":
        pytest.skip("EXPLAIN QUERY PLAN is SQLite's")
    world.full()
    statements: list[tuple[str, Any]] = []

    def seen(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        if not statement.startswith("EXPLAIN"):
            statements.append((statement, params))

    event.listen(world.ctx.store.engine, "before_cursor_execute", seen)
    try:
        with world.ctx.store.session() as s:
            queries.record_lineage(s, rid(3))
    finally:
        event.remove(world.ctx.store.engine, "before_cursor_execute", seen)
    delivery = [st for st in statements if "lineage_delivery" in st[0]]
    assert len(delivery) == 2
    with world.ctx.store.engine.connect() as conn:
        for statement, params in delivery:
            plan = [r[-1] for r in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", params)]
            scans = [p for p in plan if p.startswith("SCAN") and "INDEX" not in p]
            assert not [p for p in scans if "lineage_delivery" in p], plan


def test_r14_time_windows_count_records_not_batches(world: World) -> None:
    """A batch whose records straddle a window bound is counted record by record."""
    world.publish()
    world.deliver(world.g_health, world.health, "epidemic-response", range(10))  # T0+0s .. T0+9s
    with world.ctx.store.session() as s:
        g = queries.dataset_graph(
            s, world.dataset, since=T0 + timedelta(seconds=3), until=T0 + timedelta(seconds=7)
        )
    edge = next(e for e in g["edges"] if e["to"] == f"grant:{world.g_health}")
    assert (edge["records"], edge["bytes"]) == (4, 4 * 60)
    assert edge["first_at"] == (T0 + timedelta(seconds=3, milliseconds=40)).isoformat()
    assert edge["last_at"] == (T0 + timedelta(seconds=6, milliseconds=40)).isoformat()


def test_r14_removed_or_edited_record_id_index_is_detected(world: World) -> None:
    world.full()
    with world.ctx.store.session() as s:
        key = s.scalars(select(DeliveryKey)).first()
        assert key is not None
        s.execute(delete(DeliveryKey).where(DeliveryKey.key == key.key, DeliveryKey.seq_lo == key.seq_lo))
    out = audit.verify(world.ctx.store)
    assert not out["ok"] and out["lineage"]["table"] == "deliveries" and "index" in out["lineage"]["reason"]
    with world.ctx.store.session() as s:
        s.add(DeliveryKey(key=key.key, seq_lo=key.seq_lo, seq_hi=key.seq_hi))
    assert audit.verify(world.ctx.store)["ok"]
    with world.ctx.store.session() as s:
        s.execute(
            update(DeliveryKey).values(seq_lo=DeliveryKey.seq_lo + 1000, seq_hi=DeliveryKey.seq_hi + 1000)
        )
    assert not audit.verify(world.ctx.store)["ok"]


def test_r14_edited_packed_ids_are_detected(world: World) -> None:
    world.full()
    with world.ctx.store.session() as s:
        batch = s.scalars(select(DeliveryLineage)).first()
        assert batch is not None
        seq = batch.audit_seq
        batch.record_ids = batch.record_ids[:-1] + bytes([batch.record_ids[-1] ^ 1])
    out = audit.verify(world.ctx.store)
    assert not out["ok"] and out["first_bad"] == seq and "digest" in out["lineage"]["reason"]


def test_r14_retention_removes_batches_and_their_index(world: World) -> None:
    from datetime import UTC, datetime

    from bus.lineage import retention

    world.full()
    out = retention.sweep(world.ctx.store, 30, now=datetime.now(UTC) + timedelta(days=31))
    assert out["deleted"]["deliveries"] == 20
    with world.ctx.store.session() as s:
        assert s.scalar(select(text("count(*)")).select_from(DeliveryKey)) == 0
    assert audit.verify(world.ctx.store)["ok"]


def test_r14_ids_sharing_a_lookup_key_are_told_apart(world: World) -> None:
    """Ids of one generator in one millisecond share their 8-byte key: lookups still answer per id."""
    world.publish()
    twins = ["0123456789abcdef" + f"{i:016x}" for i in range(3)]
    world.rec.delivered([_row(world, 0, record_id=twins[0]), _row(world, 1, record_id=twins[1])])
    world.rec.delivered([_row(world, 2, record_id=twins[2], grant_id=world.g_health, agency_id=world.health)])
    with world.ctx.store.session() as s:
        s.add_all(
            RecordLineage(
                record_id=t,
                dataset_id=world.dataset,
                publisher_id=world.owner,
                published_at=T0,
                outcome="accepted",
                schema_version=1,
            )
            for t in twins
        )
    with world.ctx.store.session() as s:
        found = {
            t: [(d["grant"], d["offset"]) for d in queries.record_lineage(s, t)["deliveries"]] for t in twins
        }
    assert found == {
        twins[0]: [(world.g_tax, 1000)],
        twins[1]: [(world.g_tax, 1001)],
        twins[2]: [(world.g_health, 1002)],
    }
