"""The migrations and the models agree: a store built by migrating from nothing equals a fresh one.

Later schema changes add migrations, so existing data dirs keep working (R14: nothing that must
survive is lost on an upgrade).
"""

from __future__ import annotations

from datetime import UTC, datetime

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import select, text

from bus.store import Store
from bus.store.db import alembic_config, make_engine
from bus.store.models import Base, ConsumptionLineage


def test_r14_migrating_an_empty_store_to_head_matches_the_models(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        with engine.begin() as conn:
            cfg = alembic_config(database_url)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == [], f"models changed without a migration: {diff}"
    finally:
        engine.dispose()
    # and a store that was migrated starts (upgrade path) without touching its tables
    store = Store(database_url).start()
    store.close()


def test_r14_a_store_at_0001_upgrades_to_head_keeping_its_rows_and_widens_via(database_url: str) -> None:
    """R14: a data dir made at revision 0001 upgrades on start; its consumption rows survive and
    ``via`` takes ``connector:<name>`` for names up to 63 characters (String(32) capped them at 22)."""
    engine = make_engine(database_url)
    row = {"r": "rec-1", "g": "g-1", "a": "psb", "v": "connector:short", "t": datetime.now(UTC)}
    try:
        with engine.begin() as conn:
            cfg = alembic_config(database_url)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0001")
            conn.execute(
                text(
                    "INSERT INTO lineage_consumptions"
                    " (record_id, grant_id, agency_id, via, consumed_at, size)"
                    " VALUES (:r, :g, :a, :v, :t, 7)"
                ),
                row,
            )
    finally:
        engine.dispose()
    store = Store(database_url).start()  # the upgrade path: 0001 -> head
    long_via = "connector:" + "a" * 63
    try:
        with store.session() as s:
            head = ScriptDirectory.from_config(alembic_config(database_url)).get_current_head()
            assert s.scalar(text("SELECT version_num FROM alembic_version")) == head
            kept = s.scalars(select(ConsumptionLineage)).all()
            assert [(c.record_id, c.via, c.size) for c in kept] == [("rec-1", "connector:short", 7)]
            s.add(
                ConsumptionLineage(
                    record_id="rec-2",
                    grant_id="g-1",
                    agency_id="psb",
                    via=long_via,
                    consumed_at=datetime.now(UTC),
                    size=1,
                )
            )
        with store.session() as s:
            vias = sorted(s.scalars(select(ConsumptionLineage.via)).all())
            assert vias == sorted(["connector:short", long_via])
    finally:
        store.close()
