"""What auditors ask of the lineage store (R14, R15): one record's life, one dataset's graph.

Read-only queries over ``lineage_records``, ``lineage_deliveries``, ``lineage_consumptions`` and
``lineage_spans`` plus the catalogue; every query is indexed (record id, dataset, grant, time).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bus.errors import CatalogNotFound, LineageNotFound
from bus.store.models import (
    Connector,
    ConsumptionLineage,
    Dataset,
    DeliveryLineage,
    Grant,
    LineageSpan,
    RecordLineage,
)

ACCEPTED = "accepted"
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


def record_lineage(session: Session, record_id: str) -> dict[str, Any]:
    """Publisher, time, trace, validation, every delivery and every acknowledged consumption."""
    rec = session.get(RecordLineage, record_id)
    if rec is None:
        raise LineageNotFound(
            f"no lineage for record {record_id!r}: it was never published on this bus, "
            "or its lineage aged out (BUS_LINEAGE_RETENTION_DAYS)"
        )
    deliveries = session.execute(
        select(DeliveryLineage, Grant.scenario_description, Grant.status)
        .join(Grant, Grant.id == DeliveryLineage.grant_id, isouter=True)
        .where(DeliveryLineage.record_id == record_id)
        .order_by(DeliveryLineage.delivered_at, DeliveryLineage.id)
    ).all()
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
    delivered = []
    for d, description, status in deliveries:
        delivered.append(
            {
                "grant": d.grant_id,
                "agency": d.agency_id,
                "grant_status": status,
                "scenario": {"code": d.scenario_code, "description": description},
                "at": _iso(d.delivered_at),
                "partition": d.partition,
                "offset": d.offset,
                "size": d.size,
                "trace_id": d.trace_id,
                "consumed": consumed_by_grant.get(d.grant_id, []),
            }
        )
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
            "outcome": "accepted" if accepted else "refused",
            "code": None if accepted else rec.outcome,
        },
        "position": {"partition": rec.partition, "offset": rec.offset},
        "deliveries": delivered,
        "consumptions": consumed,
        "spans": _span_rows(session, rec.trace_id),
    }


def _window(col: Any, since: datetime | None, until: datetime | None) -> list[Any]:
    conds = []
    if since is not None:
        conds.append(col >= since)
    if until is not None:
        conds.append(col < until)
    return conds


def _edge(
    src: str,
    dst: str,
    kind: str,
    records: int = 0,
    size: int = 0,
    first: datetime | None = None,
    last: datetime | None = None,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "from": src,
        "to": dst,
        "kind": kind,
        "records": int(records or 0),
        "bytes": int(size or 0),
        "first_at": _iso(first),
        "last_at": _iso(last),
        **extra,
    }


def derived_from(session: Session, dataset_id: str) -> list[str]:
    """Datasets catalogued as derived from ``dataset_id`` (operator products, R11).

    A derived dataset names its sources in its tags as ``derived-from:<dataset>``.
    """
    tag = f"derived-from:{dataset_id}"
    rows: list[Any] = list(session.execute(select(Dataset.id, Dataset.tags).where(Dataset.id != dataset_id)))
    return sorted(str(did) for did, tags in rows if tags and tag in tags)


def dataset_graph(
    session: Session, dataset_id: str, since: datetime | None = None, until: datetime | None = None
) -> dict[str, Any]:
    """Nodes (publishers, the dataset, grants, consumer agencies, connectors, derived datasets) and
    edges with record and byte counts and the time range they cover."""
    ds = session.get(Dataset, dataset_id)
    if ds is None:
        raise CatalogNotFound(f"dataset {dataset_id!r} is not in the catalogue")
    dnode = f"dataset:{dataset_id}"
    nodes: dict[str, dict[str, Any]] = {
        dnode: {
            "id": dnode,
            "type": "dataset",
            "dataset": dataset_id,
            "label": ds.title,
            "owner": ds.owner_id,
            "status": ds.status,
            "sharing": ds.sharing_attribute,
            "grade": ds.grade,
        }
    }
    edges: list[dict[str, Any]] = []

    # publishers -> dataset
    pub = (
        select(
            RecordLineage.publisher_id,
            RecordLineage.outcome,
            func.count(),
            func.coalesce(func.sum(RecordLineage.size), 0),
            func.min(RecordLineage.published_at),
            func.max(RecordLineage.published_at),
        )
        .where(RecordLineage.dataset_id == dataset_id, *_window(RecordLineage.published_at, since, until))
        .group_by(RecordLineage.publisher_id, RecordLineage.outcome)
    )
    published: dict[str, dict[str, Any]] = {}
    for publisher, outcome, n, size, first, last in session.execute(pub):
        e = published.setdefault(
            publisher, {"records": 0, "bytes": 0, "refused": 0, "first": None, "last": None}
        )
        if outcome == ACCEPTED:
            e["records"] += n
            e["bytes"] += size
        else:
            e["refused"] += n
        e["first"] = min(x for x in (e["first"], first) if x is not None)
        e["last"] = max(x for x in (e["last"], last) if x is not None)
    publishers = set(published) | {ds.owner_id}
    for publisher in sorted(publishers):
        pnode = f"publisher:{publisher}"
        nodes[pnode] = {"id": pnode, "type": "publisher", "agency": publisher, "label": publisher}
        e = published.get(publisher, {"records": 0, "bytes": 0, "refused": 0, "first": None, "last": None})
        edges.append(
            _edge(
                pnode,
                dnode,
                "published",
                e["records"],
                e["bytes"],
                e["first"],
                e["last"],
                refused=e["refused"],
            )
        )

    # dataset -> grants -> consumer agencies
    grants = session.scalars(
        select(Grant).where(Grant.dataset_id == dataset_id).order_by(Grant.requested_at)
    ).all()
    grant_ids = [g.id for g in grants]
    delivered = (
        _aggregate(
            session,
            DeliveryLineage,
            DeliveryLineage.delivered_at,
            [DeliveryLineage.grant_id],
            DeliveryLineage.grant_id.in_(grant_ids),
            since,
            until,
        )
        if grant_ids
        else {}
    )
    consumed = (
        _aggregate(
            session,
            ConsumptionLineage,
            ConsumptionLineage.consumed_at,
            [ConsumptionLineage.grant_id, ConsumptionLineage.agency_id, ConsumptionLineage.via],
            ConsumptionLineage.grant_id.in_(grant_ids),
            since,
            until,
        )
        if grant_ids
        else {}
    )
    for g in grants:
        gnode = f"grant:{g.id}"
        nodes[gnode] = {
            "id": gnode,
            "type": "grant",
            "grant": g.id,
            "status": g.status,
            "scenario": {"code": g.scenario_code, "description": g.scenario_description},
            "fields": g.fields,
            "agency": g.agency_id,
        }
        d = delivered.get((g.id,), (0, 0, None, None))
        edges.append(_edge(dnode, gnode, "delivered", *d))
        cnode = f"consumer:{g.agency_id}"
        nodes.setdefault(
            cnode, {"id": cnode, "type": "consumer", "agency": g.agency_id, "label": g.agency_id}
        )
        by_via = {k[2]: v for k, v in consumed.items() if k[0] == g.id}
        total = [
            sum(v[0] for v in by_via.values()),
            sum(v[1] for v in by_via.values()),
            min((v[2] for v in by_via.values() if v[2]), default=None),
            max((v[3] for v in by_via.values() if v[3]), default=None),
        ]
        edges.append(
            _edge(gnode, cnode, "consumed", *total, via={k: v[0] for k, v in sorted(by_via.items())})
        )
        for via, v in sorted(by_via.items()):
            if via.startswith("connector:"):
                knode = via
                nodes.setdefault(
                    knode,
                    {
                        "id": knode,
                        "type": "connector",
                        "connector": via.split(":", 1)[1],
                        "direction": "sink",
                        "agency": g.agency_id,
                    },
                )
                edges.append(_edge(gnode, knode, "consumed", *v))

    # connectors bound to the dataset (sources) or its grants (sinks), even before they moved records
    for c in session.scalars(
        select(Connector).where(
            (Connector.dataset_id == dataset_id) | (Connector.grant_id.in_(grant_ids or [""]))
        )
    ).all():
        knode = f"connector:{c.name}"
        sink = c.grant_id is not None and c.grant_id in grant_ids
        nodes.setdefault(
            knode,
            {
                "id": knode,
                "type": "connector",
                "connector": c.name,
                "kind": c.kind,
                "direction": "sink" if sink else "source",
                "agency": c.agency_id,
            },
        )
        nodes[knode]["kind"] = c.kind
        if sink:
            if not any(e["from"] == f"grant:{c.grant_id}" and e["to"] == knode for e in edges):
                edges.append(_edge(f"grant:{c.grant_id}", knode, "consumed"))
        else:
            edges.append(_edge(knode, dnode, "feeds"))

    # derived datasets (R11)
    for derived in derived_from(session, dataset_id):
        xnode = f"dataset:{derived}"
        nodes[xnode] = {"id": xnode, "type": "derived_dataset", "dataset": derived, "label": derived}
        n, size, first, last = session.execute(
            select(
                func.count(),
                func.coalesce(func.sum(RecordLineage.size), 0),
                func.min(RecordLineage.published_at),
                func.max(RecordLineage.published_at),
            ).where(
                RecordLineage.dataset_id == derived,
                RecordLineage.outcome == ACCEPTED,
                *_window(RecordLineage.published_at, since, until),
            )
        ).one()
        edges.append(_edge(dnode, xnode, "derived", n, size, first, last))

    return {
        "dataset": dataset_id,
        "from": _iso(since),
        "to": _iso(until),
        "nodes": list(nodes.values()),
        "edges": edges,
    }


def _aggregate(
    session: Session,
    model: Any,
    time_col: Any,
    keys: Sequence[Any],
    where: Any,
    since: datetime | None,
    until: datetime | None,
) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    stmt = (
        select(
            *keys,
            func.count(),
            func.coalesce(func.sum(model.size), 0),
            func.min(time_col),
            func.max(time_col),
        )
        .where(where, *_window(time_col, since, until))
        .group_by(*keys)
    )
    out: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    for row in session.execute(stmt):
        k = tuple(row[: len(keys)])
        n, size, first, last = row[len(keys) :]
        out[k] = (int(n), int(size), first, last)
    return out


def undelivered(
    session: Session,
    since: datetime,
    until: datetime | None = None,
    dataset_id: str | None = None,
    limit: int = 1000,
) -> list[dict[str, Any]]:
    """R14: records the bus accepted since ``since`` with no delivery evidence under any grant, oldest
    first: after a broker loss, what an operator re-sends (issue 13). A dataset without an active grant
    has every record here; ``dataset_id`` narrows the list."""
    delivered = select(DeliveryLineage.id).where(DeliveryLineage.record_id == RecordLineage.record_id)
    query = (
        select(RecordLineage)
        .where(RecordLineage.outcome == ACCEPTED, RecordLineage.published_at >= since, ~delivered.exists())
        .order_by(RecordLineage.published_at, RecordLineage.record_id)
        .limit(limit)
    )
    if until is not None:
        query = query.where(RecordLineage.published_at < until)
    if dataset_id is not None:
        query = query.where(RecordLineage.dataset_id == dataset_id)
    return [
        {
            "record_id": r.record_id,
            "dataset": r.dataset_id,
            "publisher": r.publisher_id,
            "published_at": _iso(r.published_at),
            "partition": r.partition,
            "offset": r.offset,
        }
        for r in session.scalars(query)
    ]
