"""Incidents (R15): what violations were raised, grouped, with their evidence; auditors and the admin.

``GET /v1/incidents`` filters by agency, dataset, kind, severity, status and time, newest first;
``GET /v1/incidents/{id}`` shows one; ``POST /v1/incidents/{id}/resolve`` (admin) closes it as handled.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy import func, select

from bus.errors import IncidentNotFound
from bus.gateway.auth import Principal, ctx_of, require, require_admin
from bus.lineage import incidents
from bus.store.models import Incident
from bus.vocab import Role

router = APIRouter(prefix="/v1/incidents", tags=["incidents"])

_ID = r"^[A-Za-z0-9._:\-]+$"


def _utc(dt: datetime | None) -> datetime | None:
    return dt.replace(tzinfo=UTC) if dt is not None and dt.tzinfo is None else dt


@router.get("", summary="Incidents raised by violations, newest first")
def list_incidents(
    request: Request,
    principal: Principal = Depends(require(Role.AUDITOR)),
    agency: str | None = Query(None, max_length=64, pattern=_ID),
    dataset: str | None = Query(None, max_length=64, pattern=_ID),
    kind: str | None = Query(
        None,
        max_length=64,
        pattern=_ID,
        description="forwarding, recollection, access_refused, bad_signature_burst, ...",
    ),
    severity: str | None = Query(
        None, pattern="^(low|medium|high|critical)$", description="this severity or higher"
    ),
    status: str | None = Query(None, pattern="^(open|resolved)$"),
    since: datetime | None = Query(None, description="last seen at or after this time (ISO 8601)"),
    limit: int = Query(100, ge=1, le=1000),
) -> dict[str, Any]:
    q = select(Incident)
    if agency is not None:
        q = q.where(Incident.agency_id == agency)
    if dataset is not None:
        q = q.where(Incident.dataset_id == dataset)
    if kind is not None:
        q = q.where(Incident.kind == kind)
    if severity is not None:
        q = q.where(Incident.severity.in_(incidents.SEVERITIES[incidents.SEVERITIES.index(severity) :]))
    if status is not None:
        q = q.where(Incident.status == status)
    if since is not None:
        q = q.where(Incident.last_at >= _utc(since))
    with ctx_of(request).store.session() as s:
        total = s.scalar(select(func.count()).select_from(q.subquery())) or 0
        rows = s.scalars(q.order_by(Incident.last_at.desc(), Incident.id.desc()).limit(limit)).all()
        return {"incidents": [incidents.incident_json(r) for r in rows], "total": total}


@router.get("/{incident_id}", summary="One incident with its evidence")
def get_incident(
    request: Request,
    incident_id: int = Path(ge=1, le=2**62),
    principal: Principal = Depends(require(Role.AUDITOR)),
) -> dict[str, Any]:
    with ctx_of(request).store.session() as s:
        row = s.get(Incident, incident_id)
        if row is None:
            raise IncidentNotFound(f"incident {incident_id} does not exist; list them with GET /v1/incidents")
        return incidents.incident_json(row)


class ResolveIn(BaseModel):
    note: str = Field(min_length=1, max_length=2000, description="how it was handled (reported, fixed, ...)")


@router.post("/{incident_id}/resolve", summary="Close an incident as handled (admin)")
def resolve(
    body: ResolveIn,
    request: Request,
    incident_id: int = Path(ge=1, le=2**62),
    principal: Principal = Depends(require_admin),
) -> dict[str, Any]:
    out = incidents.resolve(ctx_of(request), incident_id, principal.id, body.note.strip())
    if out is None:
        raise IncidentNotFound(f"incident {incident_id} does not exist; list them with GET /v1/incidents")
    return out
