"""One dataset's lineage graph (R14, R18): publishers, the dataset, grants, consumers, connectors and
derived datasets, with record and byte counts and time ranges per edge (``queries.dataset_graph``).

Deliveries are counted through ``bus.lineage.batches.delivered_per_grant`` (batch evidence, exact per
record inside a time window); publications and consumptions from their per-record rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bus.errors import CatalogNotFound
from bus.lineage.batches import delivered_per_grant
from bus.store.models import Connector, ConsumptionLineage, Dataset, Grant, RecordLineage
from bus.vocab import LineageOutcome, Via

ACCEPTED = LineageOutcome.ACCEPTED.value


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


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


@dataclass
class _Graph:
    """The graph being built: nodes by id, edges in order, and the query it answers."""

    session: Session
    dataset_id: str
    since: datetime | None
    until: datetime | None
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    edges: list[dict[str, Any]] = field(default_factory=list)

    @property
    def dnode(self) -> str:
        return f"dataset:{self.dataset_id}"


def dataset_graph(
    session: Session, dataset_id: str, since: datetime | None = None, until: datetime | None = None
) -> dict[str, Any]:
    """Nodes (publishers, the dataset, grants, consumer agencies, connectors, derived datasets) and
    edges with record and byte counts and the time range they cover."""
    ds = session.get(Dataset, dataset_id)
    if ds is None:
        raise CatalogNotFound(f"dataset {dataset_id!r} is not in the catalogue")
    g = _Graph(session, dataset_id, since, until)
    g.nodes[g.dnode] = {
        "id": g.dnode,
        "type": "dataset",
        "dataset": dataset_id,
        "label": ds.title,
        "owner": ds.owner_id,
        "status": ds.status,
        "sharing": ds.sharing_attribute,
        "grade": ds.grade,
    }
    _publishers(g, ds.owner_id)
    grants = session.scalars(
        select(Grant).where(Grant.dataset_id == dataset_id).order_by(Grant.requested_at)
    ).all()
    _grants(g, list(grants))
    _connectors(g, [gr.id for gr in grants])
    _derived(g)
    return {
        "dataset": dataset_id,
        "from": _iso(since),
        "to": _iso(until),
        "nodes": list(g.nodes.values()),
        "edges": g.edges,
    }


def _publishers(g: _Graph, owner_id: str) -> None:
    """publishers -> dataset: accepted records and bytes, refusals, time range."""
    pub = (
        select(
            RecordLineage.publisher_id,
            RecordLineage.outcome,
            func.count(),
            func.coalesce(func.sum(RecordLineage.size), 0),
            func.min(RecordLineage.published_at),
            func.max(RecordLineage.published_at),
        )
        .where(
            RecordLineage.dataset_id == g.dataset_id, *_window(RecordLineage.published_at, g.since, g.until)
        )
        .group_by(RecordLineage.publisher_id, RecordLineage.outcome)
    )
    published: dict[str, dict[str, Any]] = {}
    for publisher, outcome, n, size, first, last in g.session.execute(pub):
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
    for publisher in sorted(set(published) | {owner_id}):
        pnode = f"publisher:{publisher}"
        g.nodes[pnode] = {"id": pnode, "type": "publisher", "agency": publisher, "label": publisher}
        e = published.get(publisher, {"records": 0, "bytes": 0, "refused": 0, "first": None, "last": None})
        g.edges.append(
            _edge(
                pnode,
                g.dnode,
                "published",
                e["records"],
                e["bytes"],
                e["first"],
                e["last"],
                refused=e["refused"],
            )
        )


def _grants(g: _Graph, grants: list[Grant]) -> None:
    """dataset -> grants -> consumer agencies (and sink connectors that consumed)."""
    grant_ids = [gr.id for gr in grants]
    delivered = delivered_per_grant(g.session, grant_ids, g.since, g.until)
    consumed = (
        _aggregate(
            g.session,
            ConsumptionLineage,
            ConsumptionLineage.consumed_at,
            [ConsumptionLineage.grant_id, ConsumptionLineage.agency_id, ConsumptionLineage.via],
            ConsumptionLineage.grant_id.in_(grant_ids),
            g.since,
            g.until,
        )
        if grant_ids
        else {}
    )
    for gr in grants:
        gnode = f"grant:{gr.id}"
        g.nodes[gnode] = {
            "id": gnode,
            "type": "grant",
            "grant": gr.id,
            "status": gr.status,
            "scenario": {"code": gr.scenario_code, "description": gr.scenario_description},
            "fields": gr.fields,
            "agency": gr.agency_id,
        }
        g.edges.append(_edge(g.dnode, gnode, "delivered", *delivered.get(gr.id, (0, 0, None, None))))
        cnode = f"consumer:{gr.agency_id}"
        g.nodes.setdefault(
            cnode, {"id": cnode, "type": "consumer", "agency": gr.agency_id, "label": gr.agency_id}
        )
        by_via = {k[2]: v for k, v in consumed.items() if k[0] == gr.id}
        total = [
            sum(v[0] for v in by_via.values()),
            sum(v[1] for v in by_via.values()),
            min((v[2] for v in by_via.values() if v[2]), default=None),
            max((v[3] for v in by_via.values() if v[3]), default=None),
        ]
        g.edges.append(
            _edge(gnode, cnode, "consumed", *total, via={k: v[0] for k, v in sorted(by_via.items())})
        )
        for via, v in sorted(by_via.items()):
            if via.startswith(Via.connector("")):
                g.nodes.setdefault(
                    via,
                    {
                        "id": via,
                        "type": "connector",
                        "connector": via.split(":", 1)[1],
                        "direction": "sink",
                        "agency": gr.agency_id,
                    },
                )
                g.edges.append(_edge(gnode, via, "consumed", *v))


def _connectors(g: _Graph, grant_ids: list[str]) -> None:
    """connectors bound to the dataset (sources) or its grants (sinks), even before they moved records."""
    for c in g.session.scalars(
        select(Connector).where(
            (Connector.dataset_id == g.dataset_id) | (Connector.grant_id.in_(grant_ids or [""]))
        )
    ).all():
        knode = f"connector:{c.name}"
        sink = c.grant_id is not None and c.grant_id in grant_ids
        g.nodes.setdefault(
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
        g.nodes[knode]["kind"] = c.kind
        if sink:
            if not any(e["from"] == f"grant:{c.grant_id}" and e["to"] == knode for e in g.edges):
                g.edges.append(_edge(f"grant:{c.grant_id}", knode, "consumed"))
        else:
            g.edges.append(_edge(knode, g.dnode, "feeds"))


def _derived(g: _Graph) -> None:
    """derived datasets (R11): what the dataset's products published."""
    for derived in derived_from(g.session, g.dataset_id):
        xnode = f"dataset:{derived}"
        g.nodes[xnode] = {"id": xnode, "type": "derived_dataset", "dataset": derived, "label": derived}
        n, size, first, last = g.session.execute(
            select(
                func.count(),
                func.coalesce(func.sum(RecordLineage.size), 0),
                func.min(RecordLineage.published_at),
                func.max(RecordLineage.published_at),
            ).where(
                RecordLineage.dataset_id == derived,
                RecordLineage.outcome == ACCEPTED,
                *_window(RecordLineage.published_at, g.since, g.until),
            )
        ).one()
        g.edges.append(_edge(g.dnode, xnode, "derived", n, size, first, last))


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
