"""Lineage for auditors (R14, R15): one record's life, one dataset's graph, OpenLineage export.

Auditors and the admin only.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Path, Query, Request
from sqlalchemy import func, select

from bus.catalog.requests import no_nul_in_params
from bus.gateway.auth import Principal, ctx_of, require
from bus.gateway.problems import public_base
from bus.lineage import queries
from bus.lineage.openlineage import graph_events
from bus.store.models import SchemaVersion
from bus.vocab import Role

router = APIRouter(prefix="/v1/lineage", tags=["lineage"], dependencies=[Depends(no_nul_in_params)])

SinceQ = Query(None, alias="from", description="from this time (ISO 8601, inclusive)")
UntilQ = Query(None, alias="to", description="before this time (ISO 8601, exclusive)")


def _utc(dt: datetime | None) -> datetime | None:
    if dt is not None and dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    return dt


@router.get(
    "/records/{record_id}",
    summary="Publisher, time, trace id, validation, every delivery and consumption of one record",
)
def record(
    request: Request,
    record_id: str = Path(..., min_length=1, max_length=40),
    principal: Principal = Depends(require(Role.AUDITOR)),
) -> dict[str, Any]:
    with ctx_of(request).store.session() as s:
        return queries.record_lineage(s, record_id)


def _graph(
    request: Request, dataset_id: str, since: datetime | None, until: datetime | None
) -> dict[str, Any]:
    with ctx_of(request).store.session() as s:
        return queries.dataset_graph(s, dataset_id, _utc(since), _utc(until))


@router.get(
    "/undelivered",
    summary="Records accepted since a time with no delivery evidence (what to re-send after a broker loss)",
)
def undelivered(
    request: Request,
    since: datetime = Query(..., description="accepted at or after this time (ISO 8601)"),
    until: datetime | None = Query(None, description="before this time (ISO 8601, exclusive)"),
    dataset: str | None = Query(None, min_length=1, max_length=64),
    limit: int = Query(1000, ge=1, le=100_000),
    principal: Principal = Depends(require(Role.AUDITOR)),
) -> dict[str, Any]:
    start = since if since.tzinfo is not None else since.replace(tzinfo=UTC)
    with ctx_of(request).store.session() as s:
        rows = queries.undelivered(s, start, _utc(until), dataset, limit)
    return {"since": start.isoformat(), "records": rows, "count": len(rows), "complete": len(rows) < limit}


@router.get(
    "/datasets/{dataset_id}",
    summary="Graph of publishers, the dataset, grants, consumers, connectors and derived datasets",
)
def dataset(
    request: Request,
    dataset_id: str = Path(..., min_length=1, max_length=64),
    since: datetime | None = SinceQ,
    until: datetime | None = UntilQ,
    principal: Principal = Depends(require(Role.AUDITOR)),
) -> dict[str, Any]:
    return _graph(request, dataset_id, since, until)


def _latest_schemas(request: Request, dataset_ids: list[str]) -> dict[str, dict[str, Any]]:
    with ctx_of(request).store.session() as s:
        latest = (
            select(SchemaVersion.dataset_id, func.max(SchemaVersion.version).label("v"))
            .where(SchemaVersion.dataset_id.in_(dataset_ids))
            .group_by(SchemaVersion.dataset_id)
            .subquery()
        )
        rows = s.execute(
            select(SchemaVersion.dataset_id, SchemaVersion.schema).join(
                latest,
                (latest.c.dataset_id == SchemaVersion.dataset_id) & (latest.c.v == SchemaVersion.version),
            )
        )
        return {str(row[0]): dict(row[1]) for row in rows}


@router.get(
    "/datasets/{dataset_id}/openlineage",
    summary="The dataset graph as OpenLineage run events (spec 2-0-2), for lineage tools",
)
def dataset_openlineage(
    request: Request,
    dataset_id: str = Path(..., min_length=1, max_length=64),
    since: datetime | None = SinceQ,
    until: datetime | None = UntilQ,
    principal: Principal = Depends(require(Role.AUDITOR)),
) -> dict[str, Any]:
    ctx = ctx_of(request)
    graph = _graph(request, dataset_id, since, until)
    ids = [n["dataset"] for n in graph["nodes"] if n["type"] in ("dataset", "derived_dataset")]
    server = ctx.bootstrap.split(",")[0].strip()
    events = graph_events(
        graph,
        kafka_namespace=f"kafka://{server}",
        topic_prefix=ctx.topics.prefix,
        schemas=_latest_schemas(request, ids),
        public_url=public_base(request),
    )
    return {"dataset": dataset_id, "events": events}
