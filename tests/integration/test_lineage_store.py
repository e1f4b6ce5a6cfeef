"""R14, R15, R18: lineage rows written in batches answer the auditor's questions, are tamper-evident
through the audit hash chain, meter usage, and age out by policy. Seeded through ``LineageRecorder``
(what the validator, router and receipts worker call), on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text, update

from bus.context import BusContext
from bus.errors import LineageNotFound
from bus.gateway.app import create_app
from bus.lineage import audit, queries, retention
from bus.lineage.usage import query_usage
from bus.store.models import AuditEvent, Connector, DeliveryLineage, Grant, RecordLineage, UsageHour
from tests.integration.lineage_helpers import T0, World, rid

pytestmark = pytest.mark.integration


@pytest.fixture
def world(ctx: BusContext, agency_factory: Any, dataset_factory: Any) -> World:
    return World(ctx, agency_factory, dataset_factory)


def test_r14_record_lineage_lists_exactly_what_happened(world: World) -> None:
    """Two grants delivered the record; only the tax bureau acknowledged it."""
    world.full()
    with world.ctx.store.session() as s:
        out = queries.record_lineage(s, rid(3))
    assert out["publisher"] == world.owner and out["dataset"] == world.dataset
    assert out["published_at"] == (T0 + timedelta(seconds=3)).isoformat()
    assert out["trace_id"] == world.trace
    assert out["validation"] == {"outcome": "accepted", "code": None}
    assert out["position"] == {"partition": 0, "offset": 3}
    got = {d["grant"]: d for d in out["deliveries"]}
    assert set(got) == {world.g_tax, world.g_health}
    assert got[world.g_health]["scenario"] == {
        "code": "epidemic-response",
        "description": "epidemic-response duties",
    }
    assert got[world.g_health]["agency"] == world.health and got[world.g_health]["offset"] == 3
    assert got[world.g_health]["consumed"] == []
    assert [c["agency"] for c in got[world.g_tax]["consumed"]] == [world.tax]
    assert [(c["grant"], c["agency"], c["via"]) for c in out["consumptions"]] == [
        (world.g_tax, world.tax, "sdk")
    ]


def test_r14_refused_record_shows_its_refusal_code(world: World) -> None:
    world.publish()
    with world.ctx.store.session() as s:
        out = queries.record_lineage(s, rid(1000))
    assert out["validation"] == {"outcome": "refused", "code": "record.invalid"}
    assert out["deliveries"] == [] and out["consumptions"] == []


def test_r14_unknown_record_is_a_clear_404(world: World) -> None:
    with world.ctx.store.session() as s, pytest.raises(LineageNotFound, match="never published"):
        queries.record_lineage(s, rid(99))


def test_r15_data_plane_batches_are_audit_events_with_counts_and_ranges(world: World) -> None:
    world.full()
    with world.ctx.store.session() as s:
        events = {(e.action, e.subject_id): e for e in s.scalars(select(AuditEvent))}
    accepted = events[("publish.accepted", world.dataset)]
    assert accepted.actor == world.owner
    assert accepted.data["count"] == 10 and accepted.data["bytes"] == sum(100 + i for i in range(10))
    assert (accepted.data["first_record"], accepted.data["last_record"]) == (rid(0), rid(9))
    assert events[("publish.refused", world.dataset)].data["codes"] == {"record.invalid": 2}
    assert events[("delivery.batch", world.g_health)].data["scenario"] == "epidemic-response"
    consumed = events[("consumption.batch", world.g_tax)]
    assert consumed.actor == world.tax and consumed.data["count"] == 10 and consumed.data["via"] == "sdk"
    assert audit.verify(world.ctx.store)["ok"]


def test_r14_dataset_graph_has_publishers_grants_consumers_connectors_and_derived(
    world: World, dataset_factory: Any
) -> None:
    world.full()
    derived = dataset_factory(world.tax)
    with world.ctx.store.session() as s:
        s.execute(
            update(type(s.get(Grant, world.g_tax)).__table__.metadata.tables["datasets"])
            .where(text("id = :d"))
            .values(tags=[f"derived-from:{world.dataset}"]),
            {"d": derived},
        )
        s.add(Connector(name="tax-sink", kind="sql", agency_id=world.tax, grant_id=world.g_tax, config={}))
    world.consume(world.g_tax, world.tax, range(4), via="connector:tax-sink")
    with world.ctx.store.session() as s:
        g = queries.dataset_graph(s, world.dataset)
    nodes = {n["id"]: n for n in g["nodes"]}
    edges = {(e["from"], e["to"]): e for e in g["edges"]}
    assert nodes[f"publisher:{world.owner}"]["type"] == "publisher"
    assert nodes[f"grant:{world.g_health}"]["scenario"]["code"] == "epidemic-response"
    assert nodes[f"consumer:{world.health}"]["type"] == "consumer"
    assert nodes["connector:tax-sink"]["type"] == "connector" and nodes["connector:tax-sink"]["kind"] == "sql"
    assert nodes[f"dataset:{derived}"]["type"] == "derived_dataset"
    pub = edges[(f"publisher:{world.owner}", f"dataset:{world.dataset}")]
    assert (pub["records"], pub["refused"], pub["bytes"]) == (10, 2, sum(100 + i for i in range(10)))
    assert pub["first_at"] == T0.isoformat() and pub["last_at"] == (T0 + timedelta(seconds=9)).isoformat()
    assert edges[(f"dataset:{world.dataset}", f"grant:{world.g_health}")]["records"] == 10
    tax = edges[(f"grant:{world.g_tax}", f"consumer:{world.tax}")]
    assert tax["records"] == 14 and tax["via"] == {"connector:tax-sink": 4, "sdk": 10}
    assert edges[(f"grant:{world.g_health}", f"consumer:{world.health}")]["records"] == 0
    assert edges[(f"grant:{world.g_tax}", "connector:tax-sink")]["records"] == 4
    assert (f"dataset:{world.dataset}", f"dataset:{derived}") in edges
    # a time window narrows the counts
    with world.ctx.store.session() as s:
        early = queries.dataset_graph(s, world.dataset, since=T0, until=T0 + timedelta(seconds=5))
    early_pub = next(e for e in early["edges"] if e["kind"] == "published")
    assert early_pub["records"] == 5


def test_r14_tampered_lineage_row_is_detected_by_verify(world: World) -> None:
    world.full()
    assert audit.verify(world.ctx.store)["ok"]
    with world.ctx.store.session() as s:
        row = s.scalars(select(DeliveryLineage).where(DeliveryLineage.grant_id == world.g_health)).first()
        assert row is not None
        seq = row.audit_seq
        row.agency_id = world.tax  # pretend the tax bureau received it
    out = audit.verify(world.ctx.store)
    assert not out["ok"] and out["first_bad"] == seq
    assert out["lineage"]["table"] == "deliveries" and "digest" in out["lineage"]["reason"]


def test_r14_deleted_or_forged_lineage_rows_are_detected(world: World) -> None:
    world.full()
    with world.ctx.store.session() as s:
        victim = s.get(RecordLineage, rid(4))
        assert victim is not None
        seq = victim.audit_seq
        s.delete(victim)
    out = audit.verify(world.ctx.store)
    assert (
        not out["ok"] and out["first_bad"] == seq and "10 rows attested, 9 found" in out["lineage"]["reason"]
    )
    with world.ctx.store.session() as s:  # put it back, then forge an unattested delivery
        s.add(
            RecordLineage(
                record_id=rid(4),
                dataset_id=world.dataset,
                publisher_id=world.owner,
                published_at=T0 + timedelta(seconds=4),
                trace_id=world.trace,
                outcome="accepted",
                schema_version=1,
                size=104,
                partition=0,
                offset=4,
                audit_seq=seq,
            )
        )
    assert audit.verify(world.ctx.store)["ok"]
    with world.ctx.store.session() as s:
        s.add(
            DeliveryLineage(
                record_id=rid(4),
                grant_id=world.g_tax,
                dataset_id=world.dataset,
                agency_id=world.tax,
                scenario_code="x",
                delivered_at=T0,
                size=1,
            )
        )
    out = audit.verify(world.ctx.store)
    assert not out["ok"] and out["lineage"]["unattested"] == 1


def test_r14_tampered_audit_event_is_detected_by_verify(world: World) -> None:
    world.full()
    with world.ctx.store.session() as s:
        ev = s.scalars(select(AuditEvent).where(AuditEvent.action == "delivery.batch")).first()
        assert ev is not None
        seq = ev.seq
        ev.data = {**ev.data, "count": 1}
    out = audit.verify(world.ctx.store)
    assert out == {"ok": False, "events": seq - 1, "first_bad": seq}


def test_r18_usage_totals_equal_what_was_sent(world: World) -> None:
    world.full()
    with world.ctx.store.session() as s:
        total = query_usage(s, by="total")
        per_grant = query_usage(s, grant=world.g_health, by="total")
        per_agency = query_usage(s, agency=world.tax, by="hour")
        later = query_usage(s, since=T0 + timedelta(hours=1))
    assert total["totals"]["published"] == {"records": 10, "bytes": sum(100 + i for i in range(10))}
    assert total["totals"]["refused"] == {"records": 2, "bytes": 100}
    assert total["totals"]["delivered"] == {"records": 20, "bytes": 20 * 60}
    assert total["totals"]["consumed"] == {"records": 10, "bytes": 600}
    assert per_grant["rows"] == [
        {
            "direction": "delivered",
            "dataset": world.dataset,
            "grant": world.g_health,
            "agency": world.health,
            "records": 10,
            "bytes": 600,
        }
    ]
    assert {r["hour"] for r in per_agency["rows"]} == {T0.replace(minute=0).isoformat()}
    assert {r["direction"] for r in per_agency["rows"]} == {"delivered", "consumed"}
    assert later["rows"] == []


def test_r18_usage_counters_add_up_across_batches(world: World) -> None:
    for start in range(0, 30, 10):
        world.deliver(world.g_tax, world.tax, "tax-audit", range(start, start + 10))
    with world.ctx.store.session() as s:
        rows = s.scalars(select(UsageHour)).all()
    assert [(r.direction, r.records, r.bytes) for r in rows] == [("delivered", 30, 1800)]


def test_r14_retention_sweep_removes_old_lineage_but_not_audit_or_usage(world: World) -> None:
    world.full()
    with world.ctx.store.session() as s:
        events_before = s.scalar(select(text("count(*)")).select_from(AuditEvent))
    kept = retention.sweep(world.ctx.store, 30)
    assert sum(kept["deleted"].values()) == 0
    out = retention.sweep(world.ctx.store, 30, now=datetime.now(UTC) + timedelta(days=31))
    assert out["deleted"]["records"] == 12 and out["deleted"]["deliveries"] == 20
    assert out["deleted"]["consumptions"] == 10
    with world.ctx.store.session() as s:
        assert s.scalar(select(text("count(*)")).select_from(RecordLineage)) == 0
        assert s.scalar(select(text("count(*)")).select_from(AuditEvent)) == events_before + 1
        assert query_usage(s, by="total")["totals"]["delivered"]["records"] == 20
    verified = audit.verify(world.ctx.store)
    assert verified["ok"] and verified["lineage"]["rows"] == 0
    with world.ctx.store.session() as s, pytest.raises(LineageNotFound):
        queries.record_lineage(s, rid(3))


def test_r14_lineage_and_usage_endpoints_are_for_auditors(world: World, agency_factory: Any) -> None:
    world.full()
    auditor, auditor_key = agency_factory(roles=("auditor",))
    http = TestClient(create_app(world.ctx))
    agency_key = {"Authorization": f"Bearer {agency_factory()[1]}"}
    auditor_h = {"Authorization": f"Bearer {auditor_key}"}
    assert http.get(f"/v1/lineage/records/{rid(3)}", headers=agency_key).json()["code"] == "auth.forbidden"
    r = http.get(f"/v1/lineage/records/{rid(3)}", headers=auditor_h)
    assert r.status_code == 200 and len(r.json()["deliveries"]) == 2
    r = http.get(f"/v1/lineage/records/{rid(77)}", headers=auditor_h)
    assert r.status_code == 404 and r.json()["code"] == "lineage.not_found"
    r = http.get(f"/v1/lineage/datasets/{world.dataset}", headers=auditor_h, params={"from": T0.isoformat()})
    assert r.status_code == 200 and {n["type"] for n in r.json()["nodes"]} >= {
        "publisher",
        "grant",
        "consumer",
    }
    assert http.get("/v1/lineage/datasets/nope", headers=auditor_h).json()["code"] == "catalog.not_found"
    r = http.get("/v1/usage", headers=auditor_h, params={"dataset": world.dataset, "by": "total"})
    assert r.status_code == 200 and r.json()["totals"]["consumed"]["records"] == 10
    r = http.get(
        "/v1/usage", headers=auditor_h, params={"from": "2026-03-02T10:00", "to": "2026-03-02T09:00"}
    )
    assert r.status_code == 422 and r.json()["code"] == "request.invalid"
    assert http.get("/v1/usage", headers=agency_key).status_code == 403
