"""The per-record delivery layout of migration 0002, kept only so ``bench.lineage_rate`` can measure the
old and the new layout in the same run (one row per record and grant, seven indexes, per-record digest).

The code is what ``LineageRecorder.delivered`` did before batch evidence (``0003_batch_evidence``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from bus.lineage import audit
from bus.lineage.lines import COLUMNS, TIME_COLUMN, normalise, summary, tuple_getter
from bus.lineage.usage import Key, add_usage_totals
from bus.store import Store
from bus.store.models import UTCDateTime

TABLE = "lineage_deliveries_legacy"


def create_table(store: Store) -> None:
    """The 0002 ``lineage_deliveries`` table and its indexes, under another name."""
    md = sa.MetaData()
    t = sa.Table(
        TABLE,
        md,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        sa.Column("record_id", sa.String(40), nullable=False, index=True),
        sa.Column("grant_id", sa.String(64), nullable=False, index=True),
        sa.Column("dataset_id", sa.String(64), nullable=False, index=True),
        sa.Column("agency_id", sa.String(64), nullable=False, index=True),
        sa.Column("scenario_code", sa.String(64), nullable=False),
        sa.Column("delivered_at", UTCDateTime(timezone=True), nullable=False, index=True),
        sa.Column("partition", sa.Integer()),
        sa.Column("offset", sa.BigInteger()),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("trace_id", sa.String(32)),
        sa.Column("audit_seq", sa.BigInteger(), index=True),
    )
    sa.Index(f"ix_{TABLE}_grant_time", t.c.grant_id, t.c.delivered_at)
    md.create_all(store.engine)


def delivered(store: Store, rows: Sequence[dict[str, Any]]) -> None:
    """One row per delivery, one ``delivery.batch`` event per grant over the rows' canonical lines."""
    norm = [normalise("deliveries", r) for r in rows]
    groups: dict[str, list[dict[str, Any]]] = {}
    usage: dict[Key, list[int]] = {}
    for r in norm:
        groups.setdefault(r["grant_id"], []).append(r)
        ukey = (r["delivered_at"], "delivered", r["dataset_id"], r["grant_id"], r["agency_id"])
        acc = usage.setdefault(ukey, [0, 0])
        acc[0] += 1
        acc[1] += r["size"]
    events = []
    for grant, grp in groups.items():
        first = grp[0]
        data = {
            "dataset": first["dataset_id"],
            "agency": first["agency_id"],
            "scenario": first["scenario_code"],
            **summary("deliveries", grp),
        }
        events.append(audit.Event("bus", "delivery.batch", "grant", grant, data))
    with store.session() as s:
        out: list[dict[str, Any]] = []
        for grp, event in zip(groups.values(), audit.append_many(s, events), strict=True):
            for r in grp:
                r["audit_seq"] = event.seq
            out.extend(grp)
        _insert(s, out)
        add_usage_totals(s, usage)


def _insert(s: Any, rows: list[dict[str, Any]]) -> None:
    cols = (*COLUMNS["deliveries"], "audit_seq")
    conn = s.connection()
    dialect = conn.dialect.name
    mark = "?" if dialect == "sqlite" else "%s"
    names = ", ".join(f'"{c}"' for c in cols)
    sql = f"INSERT INTO {TABLE} ({names}) VALUES ({', '.join([mark] * len(cols))})"
    tcol = TIME_COLUMN["deliveries"]
    if dialect == "sqlite":
        texts: dict[datetime, str] = {}
        params = []
        for r in rows:
            at = r[tcol]
            if at not in texts:
                texts[at] = at.strftime("%Y-%m-%d %H:%M:%S.%f")
            params.append(tuple(texts[at] if c == tcol else r[c] for c in cols))
    else:
        get = tuple_getter(cols)
        params = [get(r) for r in rows]
    conn.exec_driver_sql(sql, params)
