"""Receiving systems of agencies (R8, R16): where data may leave the bus to, registered by admins.

``POST /v1/agencies/{id}/systems`` registers a system (name, URL or host, inside the jurisdiction or
not); ``GET`` lists them; ``DELETE .../{system_id}`` removes one. ``receiving_systems`` and
``check_egress`` are what the data plane and connectors call before writing anywhere: the decision itself
is the pure ``bus.policy.egress.decide_egress``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Path, Request
from pydantic import BaseModel, Field, model_validator
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from bus.errors import (
    AgencyNotFound,
    AuthForbidden,
    EgressRefused,
    RequestInvalid,
    SystemExists,
    SystemNotFound,
)
from bus.gateway.auth import Principal, ctx_of, require, require_admin
from bus.lineage import audit
from bus.policy.egress import EgressDecision, ReceivingSystem, decide_egress, host_of
from bus.store.models import Agency, Dataset, Grant, System
from bus.vocab import Role

router = APIRouter(prefix="/v1/agencies/{agency_id}/systems", tags=["systems"])

_AGENCY = Path(min_length=1, max_length=64, pattern=r"^[^\x00/]+$")


class SystemIn(BaseModel):
    name: str = Field(min_length=1, max_length=200, pattern=r"^[^\x00]+$")
    url: str | None = Field(
        None,
        max_length=500,
        pattern=r"^[^\x00]+$",
        description="where the system receives data: a URL, host:port or a host name",
    )
    host: str | None = Field(None, max_length=255, pattern=r"^[^\x00]+$", description="alternative to url")
    in_jurisdiction: bool = Field(description="whether the system lies inside the jurisdiction (R16)")

    @model_validator(mode="after")
    def _one_address(self) -> SystemIn:
        if not (self.url or self.host):
            raise ValueError("give the system's url (or host)")
        return self


def system_json(row: System) -> dict[str, Any]:
    return {
        "id": row.id,
        "agency_id": row.agency_id,
        "name": row.name,
        "address": row.address,
        "host": row.host,
        "in_jurisdiction": row.in_jurisdiction,
        "created_at": row.created_at.isoformat(),
    }


def receiving_systems(session: Session, agency_id: str) -> list[ReceivingSystem]:
    """The systems registered to an agency, as the egress policy sees them."""
    rows = session.scalars(select(System).where(System.agency_id == agency_id).order_by(System.id))
    return [ReceivingSystem(r.agency_id, r.name, r.host, r.in_jurisdiction) for r in rows]


def check_egress(session: Session, destination: str, grant_id: str) -> EgressDecision:
    """Decide whether ``destination`` may receive the data of ``grant_id``; raise ``EgressRefused`` if not."""
    grant = session.get(Grant, grant_id)
    if grant is None:
        raise EgressRefused(f"grant {grant_id} does not exist: nothing may be delivered under it")
    dataset = session.get(Dataset, grant.dataset_id)
    domestic = bool(dataset.domestic_only) if dataset is not None else True
    try:
        host: str | None = host_of(destination)
    except ValueError:
        host = None
    # the grantee's systems, and whoever else registered that host (so a refusal can name the owner)
    rows = session.scalars(
        select(System)
        .where(or_(System.agency_id == grant.agency_id, System.host == host))
        .order_by(System.id)
    )
    systems = [ReceivingSystem(r.agency_id, r.name, r.host, r.in_jurisdiction) for r in rows]
    decision = decide_egress(destination, grant.agency_id, systems, domestic)
    if not decision.allowed:
        raise EgressRefused(decision.reason, destination=destination, grant=grant_id, grantee=grant.agency_id)
    return decision


def _require_agency(s: Session, agency_id: str) -> None:
    if s.get(Agency, agency_id) is None:
        raise AgencyNotFound(f"agency {agency_id} is not registered")


@router.post("", status_code=201, summary="Register a receiving system of an agency (admin)")
def register_system(
    body: SystemIn, request: Request, agency_id: str = _AGENCY, principal: Principal = Depends(require_admin)
) -> dict[str, Any]:
    address = (body.url or body.host or "").strip()
    try:
        host = host_of(body.host or address)
    except ValueError as exc:
        raise RequestInvalid(f"cannot tell the host of {address!r}: {exc}", field="url") from None
    name = body.name.strip()
    with ctx_of(request).store.session() as s:
        _require_agency(s, agency_id)
        clash = s.scalar(select(System).where(System.agency_id == agency_id, System.name == name))
        if clash is not None:
            raise SystemExists(
                f"agency {agency_id} already has a system named {name!r} (id {clash.id}); "
                "delete it first or choose another name"
            )
        row = System(
            agency_id=agency_id, name=name, address=address, host=host, in_jurisdiction=body.in_jurisdiction
        )
        s.add(row)
        s.flush()
        audit.append(
            s,
            principal.id,
            "system.registered",
            "agency",
            agency_id,
            {"system_id": row.id, "name": name, "host": host, "in_jurisdiction": body.in_jurisdiction},
        )
        return system_json(row)


@router.get("", summary="Receiving systems of an agency (admin, auditor, or the agency itself)")
def list_systems(
    request: Request,
    agency_id: str = _AGENCY,
    principal: Principal = Depends(require(Role.AUDITOR, Role.AGENCY)),
) -> dict[str, Any]:
    if not principal.has(Role.AUDITOR) and principal.id != agency_id:
        raise AuthForbidden("an agency sees only its own receiving systems")
    with ctx_of(request).store.session() as s:
        _require_agency(s, agency_id)
        rows = s.scalars(select(System).where(System.agency_id == agency_id).order_by(System.id)).all()
        return {"agency_id": agency_id, "systems": [system_json(r) for r in rows]}


@router.delete("/{system_id}", summary="Remove a receiving system (admin)")
def delete_system(
    request: Request,
    agency_id: str = _AGENCY,
    system_id: int = Path(ge=1, le=2**62),
    principal: Principal = Depends(require_admin),
) -> dict[str, Any]:
    with ctx_of(request).store.session() as s:
        row = s.get(System, system_id)
        if row is None or row.agency_id != agency_id:
            raise SystemNotFound(f"agency {agency_id} has no system {system_id}")
        out = system_json(row)
        s.delete(row)
        audit.append(
            s,
            principal.id,
            "system.removed",
            "agency",
            agency_id,
            {"system_id": system_id, "name": row.name, "host": row.host},
        )
        return {"removed": out}
