"""Tamper evidence for lineage rows (R14): every row is covered by the digest of its audit event.

``LineageRecorder`` stamps each row with the ``audit_seq`` of the hash-chained event that carries
the digest of its group. Verification streams each lineage table ordered by ``audit_seq`` next to
the attesting events and recomputes each group's digest: an edited, removed or added row changes
the digest or the row count; a row without ``audit_seq`` was not written by the bus. Rows removed
by the retention sweep are expected: the sweep records in the chain through which seq it deleted.

Delivery evidence is stored per batch (``bus.lineage.evidence``): a ``delivery.batch`` event of
``layout: batch`` attests the digest of its batch rows (every column and array byte), an older event
the per-record lines its rows stood for (the batches of migrated rows expand to exactly those). The
record-id index of the batches (``lineage_delivery_keys``) is checked against them too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy import func, select

from bus.lineage import batches, evidence
from bus.lineage.evidence import DeliveryBatch
from bus.lineage.recorder import ACTIONS, BATCH_LAYOUT, COLUMNS, TABLES, canonical_line, digest
from bus.store import Store
from bus.store.models import AuditEvent, DeliveryKey, DeliveryLineage

RETENTION_ACTION = "lineage.retention"
_BROKEN = 1 << 64  # outside the 64-bit keys: marks an edited key range


def _attestations(store: Store, table: str, batch: int) -> Iterator[tuple[int, int, str, str | None]]:
    """(seq, rows, digest, layout) of the audit events attesting rows of ``table``, in seq order."""
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
                layout = info.get("layout")
                yield int(seq), int(info.get("rows", 0)), str(info.get("digest", "")), layout


Group = tuple[int, list[str]]  # (rows, canonical lines) of one attested group


def _groups(store: Store, table: str, batch: int) -> Iterator[tuple[int, Callable[[str | None], Group]]]:
    """(audit_seq, lines of the group in the layout its event names) per attested group, in seq order."""
    if table == "deliveries":
        yield from _delivery_groups(store, batch)
        return
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
                    yield current, _fixed(lines)
                current, lines = seq, []
            lines.append(canonical_line(table, values))
    if current is not None:
        yield current, _fixed(lines)


def _fixed(lines: list[str]) -> Callable[[str | None], Group]:
    return lambda _layout: (len(lines), lines)


def _batch_lines(batches: list[DeliveryBatch]) -> Callable[[str | None], Group]:
    """A group of delivery batches seen as its event attests it: batch lines (``layout: batch``), or
    per-record lines for events written before batches (migrated rows, ``0003_batch_evidence``)."""

    def lines(layout: str | None) -> Group:
        rows = sum(len(evidence.unpack_ids(b.record_ids)) for b in batches)
        if layout == BATCH_LAYOUT:
            return rows, [evidence.batch_line(b) for b in batches]
        lines = []
        for b in batches:
            values = evidence.expand(b)
            if evidence.encode(values) != b:  # the shared columns (counts, bytes, times) must agree too
                lines.append(f"inconsistent batch {evidence.batch_line(b)}")
            lines.extend(canonical_line("deliveries", v) for v in values)
        return rows, lines

    return lines


def _delivery_groups(store: Store, batch: int) -> Iterator[tuple[int, Callable[[str | None], Group]]]:
    stmt = (
        select(DeliveryLineage.audit_seq, *batches.COLUMNS)
        .where(DeliveryLineage.audit_seq.is_not(None))
        .order_by(DeliveryLineage.audit_seq, DeliveryLineage.id)
    )
    current: int | None = None
    group: list[DeliveryBatch] = []
    with store.engine.connect() as conn:
        for row in conn.execution_options(stream_results=True, yield_per=max(1, batch // 100)).execute(stmt):
            seq = int(row[0])
            if seq != current:
                if current is not None:
                    yield current, _batch_lines(group)
                current, group = seq, []
            group.append(batches.batch_of(row[1:]))
    if current is not None:
        yield current, _batch_lines(group)


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
    for seq, expected_rows, expected_digest, layout in _attestations(store, table, batch):
        if pending is not None and pending[0] < seq:  # rows claiming an event that attests nothing here
            return {
                "ok": False,
                "rows": rows_checked,
                "first_bad": pending[0],
                "table": table,
                "reason": "rows attested by an event that does not cover this table",
            }
        if pending is not None and pending[0] == seq:
            found, lines = pending[1](layout)
            pending = next(groups, None)
        else:
            found, lines = 0, []
        if not found and seq <= swept:
            continue  # removed by the retention sweep, as recorded in the chain
        if found != expected_rows or digest(lines) != expected_digest:
            reason = (
                f"{expected_rows} rows attested, {found} found"
                if found != expected_rows
                else "row contents differ from the attested digest"
            )
            return {"ok": False, "rows": rows_checked, "first_bad": seq, "table": table, "reason": reason}
        rows_checked += found
    if pending is not None:
        return {
            "ok": False,
            "rows": rows_checked,
            "first_bad": pending[0],
            "table": table,
            "reason": "rows attested by an event that does not exist",
        }
    return {"ok": True, "rows": rows_checked, "first_bad": None}


def _key_ranges(store: Store, batch: int) -> Iterator[tuple[int, int, set[int]]]:
    """(seq_lo, seq_hi, keys) of ``lineage_delivery_keys``, per recorder call, in seq order."""
    stmt = select(DeliveryKey.seq_lo, DeliveryKey.seq_hi, DeliveryKey.key).order_by(
        DeliveryKey.seq_lo, DeliveryKey.key
    )
    current: tuple[int, int] | None = None
    keys: set[int] = set()
    with store.engine.connect() as conn:
        for lo, hi, key in conn.execution_options(stream_results=True, yield_per=batch).execute(stmt):
            if current is None or current[0] != lo:
                if current is not None:
                    yield current[0], current[1], keys
                current, keys = (int(lo), int(hi)), set()
            elif current[1] != hi:  # one call, one range: a different end is an edit
                keys.add(_BROKEN)
            keys.add(int(key))
    if current is not None:
        yield current[0], current[1], keys


def _batch_keys(store: Store, batch: int) -> Iterator[tuple[int, set[int]]]:
    stmt = (
        select(DeliveryLineage.audit_seq, DeliveryLineage.record_ids)
        .where(DeliveryLineage.audit_seq.is_not(None))
        .order_by(DeliveryLineage.audit_seq)
    )
    with store.engine.connect() as conn:
        result: Any = conn.execution_options(stream_results=True, yield_per=max(1, batch // 100)).execute(
            stmt
        )
        for seq, ids in result:
            yield int(seq), evidence.id_keys(ids)


def verify_keys(store: Store, batch: int = 20_000, swept: int = 0) -> dict[str, Any]:
    """The record-id index of delivery evidence holds exactly the keys of the batches it points to.

    Lookups (``GET /v1/lineage/records/{id}``) go through the index, so a removed or edited key row
    would hide a delivery that the batches still attest: each recorder call's key set must equal the
    keys of the batches whose seqs it covers, and every batch must be covered.
    """

    def bad(seq: int, reason: str) -> dict[str, Any]:
        return {"ok": False, "first_bad": seq, "table": "deliveries", "reason": reason}

    ranges = _key_ranges(store, batch)
    current = next(ranges, None)
    seen: set[int] = set()
    for seq, keys in _batch_keys(store, batch):
        while current is not None and current[1] < seq:
            if seen != current[2] and not (not seen and current[1] <= swept):
                return bad(current[0], "the record-id index differs from the delivery batches it covers")
            current, seen = next(ranges, None), set()
        if current is None or current[0] > seq:
            return bad(seq, "delivery batches missing from the record-id index")
        seen |= keys
    while current is not None:
        if seen != current[2] and not (not seen and current[1] <= swept):
            return bad(current[0], "the record-id index differs from the delivery batches it covers")
        current, seen = next(ranges, None), set()
    return {"ok": True}


def verify_lineage(store: Store, batch: int = 20_000) -> dict[str, Any]:
    """``{ok, rows, unattested, first_bad, table, reason}`` over the three lineage tables."""
    swept = swept_through(store)
    total = 0
    unattested = 0
    with store.engine.connect() as conn:
        for model in TABLES.values():
            counted = func.coalesce(func.sum(model.records), 0) if model is DeliveryLineage else func.count()
            unattested += conn.execute(
                select(counted).select_from(model).where(model.audit_seq.is_(None))
            ).scalar_one()
    for table in TABLES:
        result = verify_table(store, table, batch, swept)
        total += result["rows"]
        if result["ok"] and table == "deliveries":
            result = {**verify_keys(store, batch, swept), "rows": result["rows"]}
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
