"""R14: the store survives restarts and concurrent starts; nothing that must survive lives only in topics."""

from __future__ import annotations

import multiprocessing as mp

from sqlalchemy import func, inspect, select

from bus.lineage.audit import append, verify
from bus.store import Store
from bus.store.models import AuditEvent


def _start(url: str) -> None:
    Store(url).start().close()


def test_r14_processes_starting_together_on_a_fresh_store_all_succeed(database_url: str) -> None:
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_start, args=(database_url,)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    store = Store(database_url).start()
    try:
        assert "alembic_version" in inspect(store.engine).get_table_names()
    finally:
        store.close()


def test_r14_restarting_on_an_existing_store_keeps_its_data(database_url: str) -> None:
    store = Store(database_url).start()
    with store.session() as s:
        append(s, "admin", "agency.created", "agency", "psb", {"name": "PSB"})
    store.close()
    store = Store(database_url).start()  # second start: upgrade path, not create
    try:
        with store.session() as s:
            assert s.scalar(select(func.count()).select_from(AuditEvent)) == 1
        assert verify(store)["ok"]
    finally:
        store.close()
