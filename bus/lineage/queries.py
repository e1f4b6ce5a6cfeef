"""What auditors ask of the lineage store (R14, R15): one record's life, one dataset's graph.

Read-only queries over ``lineage_records``, the delivery batches (``lineage_delivery_batches``, read
through ``bus.lineage.batches``), ``lineage_consumptions`` and ``lineage_spans`` plus the catalogue;
every query is indexed (record id, dataset, grant, time).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bus.errors import LineageNotFound
from bus.lineage.batches import delivered_per_grant, deliveries_of
from bus.lineage.evidence import DeliveryValues
from bus.lineage.graph import dataset_graph, derived_from
from bus.store.models import (
    ConsumptionLineage,
    LineageSpan,
    RecordLineage,
)
from bus.vocab import LineageOutcome

__all__ = ["dataset_graph", "derived_from", "grant_deliveries", "record_lineage"]
ACCEPTED = LineageOutcome.ACCEPTED.value
MAX_SPANS = 200


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _span_rows(session: Session, trace_id: str | None) -> list[dict[str, Any]]:
    if not trace_id:
        return []
    rows = session.scalars(
        select(LineageSpan)
        .where(LineageSpan.trace_id == trace_id)
        .order_by(LineageSpan.start_at, LineageSpan.id)
        .limit(MAX_SPANS)
    ).all()
    return [
        {
            "name": r.name,
            "kind": r.kind,
            "span_id": r.span_id,
            "parent_span_id": r.parent_span_id,
            "start": _iso(r.start_at),
            "duration_ms": round((r.end_at - r.start_at).total_seconds() * 1000, 3),
            "status": r.status,
            "attributes": r.attributes,
            "links": r.links,
        }
        for r in rows
    ]


def _delivery_json(
    delivery: tuple[DeliveryValues, str | None, str | None],
    consumed_by_grant: dict[str, list[dict[str, Any]]],
) -> dict[str, Any]:
    (_, grant, _, agency, scenario, at, partition, offset, size, trace), description, status = delivery
    return {
        "grant": grant,
        "agency": agency,
        "grant_status": status,
        "scenario": {"code": scenario, "description": description},
        "at": _iso(at),
        "partition": partition,
        "offset": offset,
        "size": size,
        "trace_id": trace,
        "consumed": consumed_by_grant.get(grant, []),
    }


def record_lineage(session: Session, record_id: str) -> dict[str, Any]:
    """Publisher, time, trace, validation, every delivery and every acknowledged consumption."""
    rec = session.get(RecordLineage, record_id)
    if rec is None:
        raise LineageNotFound(
            f"no lineage for record {record_id!r}: it was never published on this bus, "
            "or its lineage aged out (BUS_LINEAGE_RETENTION_DAYS)"
        )
    deliveries = deliveries_of(session, record_id)
    consumptions = session.scalars(
        select(ConsumptionLineage)
        .where(ConsumptionLineage.record_id == record_id)
        .order_by(ConsumptionLineage.consumed_at, ConsumptionLineage.id)
    ).all()
    consumed_by_grant: dict[str, list[dict[str, Any]]] = {}
    consumed = []
    for c in consumptions:
        row = {
            "grant": c.grant_id,
            "agency": c.agency_id,
            "via": c.via,
            "at": _iso(c.consumed_at),
            "size": c.size,
        }
        consumed.append(row)
        consumed_by_grant.setdefault(c.grant_id, []).append(row)
    delivered = [_delivery_json(d, consumed_by_grant) for d in deliveries]
    accepted = rec.outcome == ACCEPTED
    return {
        "record_id": rec.record_id,
        "dataset": rec.dataset_id,
        "publisher": rec.publisher_id,
        "published_at": _iso(rec.published_at),
        "trace_id": rec.trace_id,
        "schema_version": rec.schema_version,
        "size": rec.size,
        "validation": {
            "outcome": LineageOutcome.ACCEPTED if accepted else LineageOutcome.REFUSED,
            "code": None if accepted else rec.outcome,
        },
        "position": {"partition": rec.partition, "offset": rec.offset},
        "deliveries": delivered,
        "consumptions": consumed,
        "spans": _span_rows(session, rec.trace_id),
    }


def grant_deliveries(session: Session, grant_ids: Sequence[str]) -> dict[str, tuple[int, Any, Any]]:
    """Per grant: how many records it delivered, first and last delivery time (attribution, R8)."""
    return {g: (n, first, last) for g, (n, _, first, last) in delivered_per_grant(session, grant_ids).items()}


def undelivered(
    session: Session,
    since: datetime,
    until: datetime | None = None,
    dataset_id: str | None = None,
    limit: int = 1000,
) -> list[dict[str, Any]]:
    """R14: records the bus accepted since ``since`` with no delivery evidence under any grant, oldest
    first: after a broker loss, what an operator re-sends (issue 13). A dataset without an active grant
    has every record here; ``dataset_id`` narrows the list. Delivery evidence is found through its
    record-id index (``lineage_delivery_keys``)."""
    from bus.lineage.evidence import id_key
    from bus.store.models import DeliveryKey

    query = (
        select(RecordLineage)
        .where(RecordLineage.outcome == ACCEPTED, RecordLineage.published_at >= since)
        .order_by(RecordLineage.published_at, RecordLineage.record_id)
    )
    if until is not None:
        query = query.where(RecordLineage.published_at < until)
    if dataset_id is not None:
        query = query.where(RecordLineage.dataset_id == dataset_id)
    out: list[dict[str, Any]] = []
    offset = 0
    while len(out) < limit:
        rows = session.scalars(query.offset(offset).limit(1000)).all()
        if not rows:
            break
        offset += len(rows)
        keys = {r.record_id: id_key(r.record_id) for r in rows}
        known = set(session.scalars(select(DeliveryKey.key).where(DeliveryKey.key.in_(set(keys.values())))))
        out += [
            {"record_id": r.record_id, "dataset": r.dataset_id, "publisher": r.publisher_id,
             "published_at": _iso(r.published_at), "partition": r.partition, "offset": r.offset}
            for r in rows
            # a key narrows the look; the id itself is matched in the batches it may be in
            if keys[r.record_id] not in known or not deliveries_of(session, r.record_id)
        ]
    return out[:limit]
