"""The audit log (R14): ``GET /v1/audit/verify`` recomputes the hash chain, ``GET /v1/audit/events`` lists it.

Auditors and the admin only.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy import select

from bus.catalog.requests import no_nul_in_params
from bus.gateway.auth import Principal, ctx_of, require
from bus.lineage import audit
from bus.store.models import AuditEvent
from bus.vocab import Role

router = APIRouter(prefix="/v1/audit", tags=["audit"], dependencies=[Depends(no_nul_in_params)])


def event_json(e: AuditEvent) -> dict[str, Any]:
    return {
        "seq": e.seq,
        "at": e.at.astimezone(UTC).isoformat(),
        "actor": e.actor,
        "action": e.action,
        "subject_type": e.subject_type,
        "subject_id": e.subject_id,
        "data": e.data,
        "prev_hash": e.prev_hash,
        "hash": e.hash,
    }


def _utc(dt: datetime | None) -> datetime | None:
    if dt is not None and dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    return dt


@router.get("/verify", summary="Recompute the hash chain: {ok, events, first_bad}")
def verify(request: Request, principal: Principal = Depends(require(Role.AUDITOR))) -> dict[str, Any]:
    return audit.verify(ctx_of(request).store)


@router.get(
    "/events", summary="Audit events, oldest first, filtered; page with 'after' = the previous 'next'"
)
def events(
    request: Request,
    principal: Principal = Depends(require(Role.AUDITOR)),
    actor: str | None = Query(None, max_length=64, description="agency id, or 'admin'"),
    action: str | None = Query(
        None,
        max_length=64,
        description="exact action (dataset.submitted), or a prefix ending in '*' (dataset.*)",
    ),
    subject: str | None = Query(None, max_length=128, description="subject id (dataset, agency, grant, ...)"),
    subject_type: str | None = Query(None, max_length=32, description="dataset, agency, grant, ..."),
    since: datetime | None = Query(None, description="from this time (ISO 8601, inclusive)"),
    until: datetime | None = Query(None, description="before this time (ISO 8601, exclusive)"),
    after: int = Query(0, ge=0, le=2**62, description="cursor: only events with a larger seq"),
    limit: int = Query(100, ge=1, le=1000),
) -> dict[str, Any]:
    q = select(AuditEvent).where(AuditEvent.seq > after)
    if actor is not None:
        q = q.where(AuditEvent.actor == actor)
    if action is not None:
        q = (
            q.where(AuditEvent.action.startswith(action[:-1], autoescape=True))
            if action.endswith("*")
            else q.where(AuditEvent.action == action)
        )
    if subject is not None:
        q = q.where(AuditEvent.subject_id == subject)
    if subject_type is not None:
        q = q.where(AuditEvent.subject_type == subject_type)
    if since is not None:
        q = q.where(AuditEvent.at >= _utc(since))
    if until is not None:
        q = q.where(AuditEvent.at < _utc(until))
    with ctx_of(request).store.session() as s:
        rows = list(s.scalars(q.order_by(AuditEvent.seq).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return {"events": [event_json(e) for e in rows], "next": rows[-1].seq if more else None}
