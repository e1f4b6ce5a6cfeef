"""Tamper evidence for lineage rows (R14): every row is covered by the digest of its audit event.

``LineageRecorder`` stamps each row with the ``audit_seq`` of the hash-chained event that carries
the digest of its group. Verification streams each lineage table ordered by ``audit_seq`` next to
the attesting events and recomputes each group's digest: an edited, removed or added row changes
the digest or the row count; a row without ``audit_seq`` was not written by the bus. Rows removed
by the retention sweep are expected: the sweep records in the chain through which seq it deleted.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sqlalchemy import func, select

from bus.lineage.recorder import ACTIONS, COLUMNS, TABLES, canonical_line, digest
from bus.store import Store
from bus.store.models import AuditEvent

RETENTION_ACTION = "lineage.retention"


def _attestations(store: Store, table: str, batch: int) -> Iterator[tuple[int, int, str]]:
    """(seq, rows, digest) of the audit events attesting rows of ``table``, in seq order."""
    stmt = (
        select(AuditEvent.seq, AuditEvent.data)
        .where(AuditEvent.action.in_(ACTIONS[table]))
        .order_by(AuditEvent.seq)
    )
    with store.engine.connect() as conn:
        result: Any = conn.execution_options(stream_results=True, yield_per=batch).execute(stmt)
        for seq, data in result:
            info: dict[str, Any] = (data or {}).get("lineage") or {}
            if info.get("table") == table:
                yield int(seq), int(info.get("rows", 0)), str(info.get("digest", ""))


def _groups(store: Store, table: str, batch: int) -> Iterator[tuple[int, list[str]]]:
    """(audit_seq, canonical lines) per attested group of ``table``, in audit_seq order."""
    model = TABLES[table]
    cols = [getattr(model, c) for c in COLUMNS[table]]
    stmt = select(model.audit_seq, *cols).where(model.audit_seq.is_not(None)).order_by(model.audit_seq)
    current: int | None = None
    lines: list[str] = []
    with store.engine.connect() as conn:
        for row in conn.execution_options(stream_results=True, yield_per=batch).execute(stmt):
            seq, values = int(row[0]), list(row[1:])
            if seq != current:
                if current is not None:
                    yield current, lines
                current, lines = seq, []
            lines.append(canonical_line(table, values))
    if current is not None:
        yield current, lines


def swept_through(store: Store) -> int:
    """The highest audit seq whose lineage rows the retention sweep has deleted (0 if none)."""
    with store.engine.connect() as conn:
        rows: list[Any] = list(
            conn.execute(select(AuditEvent.data).where(AuditEvent.action == RETENTION_ACTION)).scalars()
        )
        return max((int((d or {}).get("through_seq", 0)) for d in rows), default=0)


def verify_table(store: Store, table: str, batch: int = 20_000, swept: int = 0) -> dict[str, Any]:
    """Merge the attesting events with the row groups of one table; the first mismatch wins."""
    rows_checked = 0
    groups = _groups(store, table, batch)
    pending = next(groups, None)
    for seq, expected_rows, expected_digest in _attestations(store, table, batch):
        if pending is not None and pending[0] < seq:  # rows claiming an event that attests nothing here
            return {
                "ok": False,
                "rows": rows_checked,
                "first_bad": pending[0],
                "table": table,
                "reason": "rows attested by an event that does not cover this table",
            }
        if pending is not None and pending[0] == seq:
            lines = pending[1]
            pending = next(groups, None)
        else:
            lines = []
        if not lines and seq <= swept:
            continue  # removed by the retention sweep, as recorded in the chain
        if len(lines) != expected_rows or digest(lines) != expected_digest:
            reason = (
                f"{expected_rows} rows attested, {len(lines)} found"
                if len(lines) != expected_rows
                else "row contents differ from the attested digest"
            )
            return {"ok": False, "rows": rows_checked, "first_bad": seq, "table": table, "reason": reason}
        rows_checked += len(lines)
    if pending is not None:
        return {
            "ok": False,
            "rows": rows_checked,
            "first_bad": pending[0],
            "table": table,
            "reason": "rows attested by an event that does not exist",
        }
    return {"ok": True, "rows": rows_checked, "first_bad": None}


def verify_lineage(store: Store, batch: int = 20_000) -> dict[str, Any]:
    """``{ok, rows, unattested, first_bad, table, reason}`` over the three lineage tables."""
    swept = swept_through(store)
    total = 0
    unattested = 0
    with store.engine.connect() as conn:
        for model in TABLES.values():
            unattested += conn.execute(
                select(func.count()).select_from(model).where(model.audit_seq.is_(None))
            ).scalar_one()
    for table in TABLES:
        result = verify_table(store, table, batch, swept)
        total += result["rows"]
        if not result["ok"]:
            result["rows"] = total
            result["unattested"] = unattested
            return result
    if unattested:
        return {
            "ok": False,
            "rows": total,
            "unattested": unattested,
            "first_bad": None,
            "reason": f"{unattested} lineage rows carry no audit attestation",
        }
    return {"ok": True, "rows": total, "unattested": 0, "first_bad": None}
