"""Delivery evidence in the store: writing batch rows with their record-id index, and reading them back
as the per-record deliveries they stand for (``bus.lineage.evidence`` holds the layout).

Every reader goes through here, so queries, attribution, verification and retention agree on what a
batch row means: ``records`` deliveries, each with its own time, position, size and trace.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, insert, or_, select
from sqlalchemy.orm import Session

from bus.lineage import evidence
from bus.lineage.evidence import DeliveryBatch, DeliveryValues
from bus.store.models import DeliveryKey, DeliveryLineage, Grant

FIELDS = tuple(DeliveryBatch.__dataclass_fields__)
COLUMNS = tuple(getattr(DeliveryLineage, f) for f in FIELDS)
Summary = tuple[int, int, datetime | None, datetime | None]  # records, bytes, first, last


def batch_of(values: Sequence[Any]) -> DeliveryBatch:
    """A batch from the values of ``COLUMNS`` as selected."""
    return DeliveryBatch(*values)


def batch_columns(b: DeliveryBatch, audit_seq: int | None) -> dict[str, Any]:
    return {**b.__dict__, "audit_seq": audit_seq}


def key_rows(batches: Sequence[tuple[DeliveryBatch, int]]) -> list[dict[str, int]]:
    """``lineage_delivery_keys`` rows for batches written together (their seqs form one run)."""
    lo = min(seq for _, seq in batches)
    hi = max(seq for _, seq in batches)
    keys: set[int] = set()
    for b, _ in batches:
        keys |= evidence.id_keys(b.record_ids)
    return [{"key": k, "seq_lo": lo, "seq_hi": hi} for k in sorted(keys)]


def insert_batches(s: Session, batches: Sequence[tuple[DeliveryBatch, int]]) -> None:
    """Batch rows and their record-id index, one executemany each.

    Key rows cover the seqs of the batches' events: one per distinct id key and recorder call (a call
    appends its events consecutively, under the audit head lock).
    """
    if not batches:
        return
    conn = s.connection()
    conn.execute(insert(DeliveryLineage), [batch_columns(b, seq) for b, seq in batches])
    conn.execute(insert(DeliveryKey), key_rows(batches))


def deliveries_of(session: Session, record_id: str) -> list[tuple[DeliveryValues, str | None, str | None]]:
    """Every delivery of ``record_id``: (values, scenario description, grant status), in delivery order.

    Indexed all the way: the id's key gives the calls (seq ranges) that may hold it, their batches are
    read by ``audit_seq`` (an index range each), and the id is matched in each batch's packed ids.
    """
    ranges = list(
        session.execute(
            select(DeliveryKey.seq_lo, DeliveryKey.seq_hi).where(
                DeliveryKey.key == evidence.id_key(record_id)
            )
        )
    )
    # unattested batches (none in a healthy store; ``audit verify`` reports them) are read too
    candidates = [DeliveryLineage.audit_seq.is_(None)]
    candidates += [DeliveryLineage.audit_seq.between(lo, hi) for lo, hi in ranges]
    stmt = (
        select(DeliveryLineage.id, *COLUMNS, Grant.scenario_description, Grant.status)
        .join(Grant, Grant.id == DeliveryLineage.grant_id, isouter=True)
        .where(or_(*candidates))
    )
    found: list[tuple[datetime, int, int, DeliveryValues, str | None, str | None]] = []
    for row in session.execute(stmt):
        batch = batch_of(row[1 : 1 + len(FIELDS)])
        hits = evidence.positions_of(batch, record_id)
        if not hits:
            continue
        expanded = evidence.expand(batch)
        for i in hits:
            v = expanded[i]
            found.append((v[5], row[0], i, v, row[-2], row[-1]))
    found.sort(key=lambda f: (f[0], f[1], f[2]))
    return [(v, description, status) for _, _, _, v, description, status in found]


def _straddles(since: datetime | None, until: datetime | None) -> Any:
    """Batches whose records may fall on both sides of a window bound (counted record by record)."""
    conds = []
    if since is not None:
        conds.append(and_(DeliveryLineage.delivered_at < since, DeliveryLineage.last_at >= since))
    if until is not None:
        conds.append(and_(DeliveryLineage.delivered_at < until, DeliveryLineage.last_at >= until))
    return or_(*conds)


def _inside(since: datetime | None, until: datetime | None) -> list[Any]:
    conds = []
    if since is not None:
        conds.append(DeliveryLineage.delivered_at >= since)
    if until is not None:
        conds.append(DeliveryLineage.last_at < until)
    return conds


def _merge(acc: dict[str, list[Any]], grant: str, n: int, size: int, first: Any, last: Any) -> None:
    e = acc.setdefault(grant, [0, 0, None, None])
    e[0] += int(n or 0)
    e[1] += int(size or 0)
    if first is not None:
        e[2] = first if e[2] is None else min(e[2], first)
    if last is not None:
        e[3] = last if e[3] is None else max(e[3], last)


def delivered_per_grant(
    session: Session, grant_ids: Iterable[str], since: datetime | None = None, until: datetime | None = None
) -> dict[str, Summary]:
    """Deliveries per grant whose time is in ``[since, until)``: records, bytes, first and last time.

    Batches wholly inside the window are summed by the database; the few that straddle a bound are
    expanded and counted record by record, so the answer is exactly the per-record one.
    """
    grants = list(grant_ids)
    if not grants:
        return {}
    acc: dict[str, list[Any]] = {}
    inside = (
        select(
            DeliveryLineage.grant_id,
            func.sum(DeliveryLineage.records),
            func.coalesce(func.sum(DeliveryLineage.size), 0),
            func.min(DeliveryLineage.delivered_at),
            func.max(DeliveryLineage.last_at),
        )
        .where(DeliveryLineage.grant_id.in_(grants), *_inside(since, until))
        .group_by(DeliveryLineage.grant_id)
    )
    for grant, n, size, first, last in session.execute(inside):
        _merge(acc, grant, n, size, first, last)
    if since is not None or until is not None:
        edge = select(*COLUMNS).where(DeliveryLineage.grant_id.in_(grants), _straddles(since, until))
        for row in session.execute(edge):
            for v in evidence.expand(batch_of(row)):
                at = v[5]
                if (since is None or at >= since) and (until is None or at < until):
                    _merge(acc, v[1], 1, v[8], at, at)
    return {g: (e[0], e[1], e[2], e[3]) for g, e in acc.items()}
