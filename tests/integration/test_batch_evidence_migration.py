"""R14: a store at 0002 (one delivery row per record and grant) upgrades to batch evidence keeping
every old delivery readable, exactly as before, and still verified against its audit events."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from alembic import command
from sqlalchemy import Engine, delete, inspect, select, text
from sqlalchemy.orm import Session

from bus.lineage import audit, queries
from bus.lineage.batches import delivered_per_grant
from bus.lineage.recorder import COLUMNS, LineageRecorder, canonical_line, digest
from bus.store import Store
from bus.store.db import alembic_config, make_engine
from bus.store.models import DeliveryLineage
from tests.integration.lineage_helpers import rid
from tests.integration.test_migrations import HEAD

T0 = datetime(2026, 3, 2, 9, 15, tzinfo=UTC)
OLD_COLUMNS = COLUMNS["deliveries"]


class _StoreAt:
    """What ``LineageRecorder`` needs of a store, on an engine whose schema is at an old revision."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        with Session(self.engine) as s, s.begin():
            yield s


def _old_deliveries(i: int) -> list[list[dict[str, Any]]]:
    """Three old recorder calls' worth of per-record rows (one group per event): two grants, two
    partitions, spread times, sizes and traces, unknown positions, and a record delivered twice."""
    calls: list[list[dict[str, Any]]] = []
    for call in range(3):
        group = []
        for k in range(6):
            n = call * 4 + k  # records 4, 5 are delivered by calls 0 and 1 (a replay after a crash)
            group.append(
                {
                    "record_id": rid(n),
                    "grant_id": f"g{i}",
                    "dataset_id": "ds",
                    "agency_id": f"agency{i}",
                    "scenario_code": f"scenario{i}",
                    "delivered_at": T0 + timedelta(seconds=call * 10 + k, microseconds=call),
                    "partition": None if k == 5 else k % 2,
                    "offset": None if k == 5 else 100 * call + k,
                    "size": 50 + n,
                    "trace_id": None if k == 3 else f"{call:032x}",
                }
            )
        calls.append(group)
    return calls


def _write_old(engine: Engine) -> None:
    """Per-record delivery rows attested exactly as the 0002 recorder attested them."""
    with Session(engine) as s, s.begin():
        for i in range(2):
            for group in _old_deliveries(i):
                lines = [canonical_line("deliveries", [r[c] for c in OLD_COLUMNS]) for r in group]
                data = {
                    "dataset": "ds",
                    "count": len(group),
                    "lineage": {"table": "deliveries", "rows": len(group), "digest": digest(lines)},
                }
                ev = audit.append(s, "bus", "delivery.batch", "grant", f"g{i}", data)
                for r in group:
                    s.execute(
                        text(
                            "INSERT INTO lineage_deliveries (record_id, grant_id, dataset_id, agency_id,"
                            ' scenario_code, delivered_at, "partition", "offset", size, trace_id, audit_seq)'
                            " VALUES (:record_id, :grant_id, :dataset_id, :agency_id, :scenario_code,"
                            " :delivered_at, :partition, :offset, :size, :trace_id, :seq)"
                        ),
                        {**r, "seq": ev.seq},
                    )
        s.execute(  # a row no event attests (forged, or older than attestation)
            text(
                "INSERT INTO lineage_deliveries (record_id, grant_id, dataset_id, agency_id, scenario_code,"
                " delivered_at, size) VALUES (:r, 'g0', 'ds', 'agency0', 'x', :t, 1)"
            ),
            {"r": rid(99), "t": T0},
        )


def _expected(engine: Engine) -> dict[str, list[dict[str, Any]]]:
    """What the 0002 record lookup answered per record: its rows ordered by (delivered_at, id)."""
    out: dict[str, list[dict[str, Any]]] = {}
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                'SELECT record_id, grant_id, agency_id, scenario_code, delivered_at, "partition", "offset",'
                " size, trace_id FROM lineage_deliveries ORDER BY delivered_at, id"
            )
        ).all()
    for r in rows:
        at = r[4] if isinstance(r[4], datetime) else datetime.fromisoformat(r[4])
        out.setdefault(r[0], []).append(
            {
                "grant": r[1],
                "agency": r[2],
                "scenario": r[3],
                "at": (at if at.tzinfo else at.replace(tzinfo=UTC)).isoformat(),
                "partition": r[5],
                "offset": r[6],
                "size": r[7],
                "trace_id": r[8],
            }
        )
    return out


def _got(store: Store, record_id: str) -> list[dict[str, Any]]:
    with store.session() as s:
        out = queries.record_lineage(s, record_id)
    return [
        {
            "grant": d["grant"],
            "agency": d["agency"],
            "scenario": d["scenario"]["code"],
            "at": d["at"],
            "partition": d["partition"],
            "offset": d["offset"],
            "size": d["size"],
            "trace_id": d["trace_id"],
        }
        for d in out["deliveries"]
    ]


def test_r14_a_store_at_0002_upgrades_its_per_record_deliveries_into_batches(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        with engine.begin() as conn:
            cfg = alembic_config(database_url)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0002")
        old = _StoreAt(engine)
        records = [
            {
                "record_id": rid(n),
                "dataset_id": "ds",
                "publisher_id": "pub",
                "published_at": T0,
                "outcome": "accepted",
            }
            for n in [*range(14), 99]
        ]
        LineageRecorder(old).published(records)  # type: ignore[arg-type]
        _write_old(engine)
        expected = _expected(engine)
    finally:
        engine.dispose()
    assert len(expected[rid(4)]) == 4  # two grants, delivered twice each

    store = Store(database_url).start()  # the upgrade path: 0002 -> head
    try:
        with store.session() as s:
            assert s.scalar(text("SELECT version_num FROM alembic_version")) == HEAD
            batches = s.scalars(select(DeliveryLineage)).all()
        assert "lineage_deliveries" not in inspect(store.engine).get_table_names()
        assert sum(b.records for b in batches) == 2 * 3 * 6 + 1 and len(batches) < 20
        for record_id, want in expected.items():
            assert _got(store, record_id) == want, record_id

        with store.session() as s:  # what the dataset graph and attribution count, with and without a window
            per_grant = delivered_per_grant(s, ["g0", "g1"])
            window = delivered_per_grant(s, ["g0"], T0 + timedelta(seconds=3), T0 + timedelta(seconds=22))
        assert per_grant["g1"][0] == 18 and per_grant["g0"][0] == 19
        g0 = [d for ds in expected.values() for d in ds if d["grant"] == "g0"]
        inside = [
            d
            for d in g0
            if (T0 + timedelta(seconds=3)).isoformat() <= d["at"] < (T0 + timedelta(seconds=22)).isoformat()
        ]
        assert window["g0"][:2] == (len(inside), sum(d["size"] for d in inside))

        verified = audit.verify(store)  # the old events still attest the migrated rows
        assert verified["lineage"] == {
            "ok": False,
            "rows": 15 + 36,
            "unattested": 1,
            "first_bad": None,
            "reason": "1 lineage rows carry no audit attestation",
        }
        with store.session() as s:
            s.execute(delete(DeliveryLineage).where(DeliveryLineage.audit_seq.is_(None)))
        assert audit.verify(store)["ok"]
        with store.session() as s:  # and an edit of a migrated batch is still caught
            victim = s.scalars(select(DeliveryLineage).where(DeliveryLineage.grant_id == "g1")).first()
            assert victim is not None
            seq, victim.size = victim.audit_seq, victim.size + 1
        out = audit.verify(store)
        assert not out["ok"] and out["first_bad"] == seq and out["lineage"]["table"] == "deliveries"
    finally:
        store.close()


def test_r14_downgrading_0003_gives_the_per_record_rows_back(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        with engine.begin() as conn:
            cfg = alembic_config(database_url)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0002")
        _write_old(engine)
        before = _expected(engine)
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0002")
        assert _expected(engine) == before
    finally:
        engine.dispose()
