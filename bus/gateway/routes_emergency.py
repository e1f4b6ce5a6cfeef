"""The emergency switch (R15): suspend or resume an agency, a dataset or a grant at once (admin).

The change is committed to the store with its audit event, then announced through Redis
(``bus.exchange.policy_events``): publishing, routing, streams and HTTP reads honour it within a second.
``GET /v1/emergency/suspensions`` lists what is suspended right now.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from bus.context import BusContext
from bus.errors import AgencyNotFound, CatalogNotFound, GrantNotActive, GrantNotFound, Unavailable
from bus.exchange import acl_sync, policy_events
from bus.gateway.auth import Principal, ctx_of, require, require_admin
from bus.lineage import audit
from bus.store.models import Agency, Dataset, Grant
from bus.vocab import GrantStatus, Role

router = APIRouter(prefix="/v1/emergency", tags=["emergency"])

Kind = Literal["agency", "dataset", "grant"]


class SwitchIn(BaseModel):
    kind: Kind = Field(description="what to suspend or resume: agency, dataset or grant")
    id: str = Field(min_length=1, max_length=64, pattern=r"^[^\x00]+$")
    reason: str = Field(min_length=1, max_length=2000, description="why (recorded in the audit log)")


def _agency(s: Session, agency_id: str) -> Agency:
    row = s.get(Agency, agency_id, with_for_update=True)
    if row is None:
        raise AgencyNotFound(f"agency {agency_id} is not registered")
    return row


def _dataset(s: Session, dataset_id: str) -> Dataset:
    row = s.get(Dataset, dataset_id, with_for_update=True)
    if row is None:
        raise CatalogNotFound(f"dataset {dataset_id} is not in the catalogue")
    return row


def _grant(s: Session, grant_id: str) -> Grant:
    row = s.get(Grant, grant_id, with_for_update=True)
    if row is None:
        raise GrantNotFound(f"grant {grant_id} does not exist")
    return row


def _apply(s: Session, body: SwitchIn, suspend: bool) -> tuple[bool, dict[str, Any]]:
    """Set the flag; returns (changed, what to record)."""
    if body.kind == "agency":
        agency = _agency(s, body.id)
        changed = agency.suspended != suspend
        agency.suspended = suspend
        return changed, {}
    if body.kind == "dataset":
        ds = _dataset(s, body.id)
        changed = ds.suspended != suspend
        ds.suspended = suspend
        return changed, {"owner_id": ds.owner_id}
    grant = _grant(s, body.id)
    facts = {"agency_id": grant.agency_id, "dataset_id": grant.dataset_id}
    if suspend:
        if grant.status == GrantStatus.SUSPENDED:
            return False, facts
        if grant.status != GrantStatus.ACTIVE:
            raise GrantNotActive(f"grant {grant.id} is {grant.status}; only an active grant can be suspended")
        grant.status = GrantStatus.SUSPENDED.value
    else:
        if grant.status == GrantStatus.ACTIVE:
            return False, facts
        if grant.status != GrantStatus.SUSPENDED:
            raise GrantNotActive(f"grant {grant.id} is {grant.status}; only a suspended grant can be resumed")
        now = datetime.now(UTC)
        ended = grant.valid_until
        expired = ended is not None and ended <= now
        grant.status = (GrantStatus.EXPIRED if expired else GrantStatus.ACTIVE).value
        if ended is not None and expired:
            grant.ended_at = now
            facts["note"] = f"the grant ended at {ended.isoformat()} while suspended: now expired"
    grant.version += 1
    facts["status"] = grant.status
    return True, facts


def switch(ctx: BusContext, actor: str, body: SwitchIn, suspend: bool) -> dict[str, Any]:
    """Record the change with its audit event, then announce it to every worker."""
    action = "suspended" if suspend else "resumed"
    with ctx.store.session() as s:
        changed, facts = _apply(s, body, suspend)
        if changed:
            audit.append(
                s, actor, f"emergency.{action}", body.kind, body.id, {"reason": body.reason, **facts}
            )
    at = datetime.now(UTC)
    try:
        version = policy_events.announce(ctx, body.kind, body.id)
    except Exception as exc:
        raise Unavailable(
            f"the {body.kind} {body.id} is {action} in the store, but the announcement to the workers failed "
            f"({type(exc).__name__}); workers that cannot reach Redis stop delivering (fail closed) and pick "
            "the change up when it is back"
        ) from None
    finally:  # the broker's ACLs follow the switch too (BUS_KAFKA_ACLS; never raises)
        acl_sync.sync(ctx, f"{body.kind} {body.id} {action}")
    return {
        "kind": body.kind,
        "id": body.id,
        "suspended": suspend,
        "changed": changed,
        "at": at.isoformat(),
        "policy_version": version,
        **facts,
    }


@router.post("/suspend", summary="Suspend an agency, a dataset or a grant at once (admin)")
def suspend(
    body: SwitchIn, request: Request, principal: Principal = Depends(require_admin)
) -> dict[str, Any]:
    return switch(ctx_of(request), principal.id, body, True)


@router.post("/resume", summary="Resume a suspended agency, dataset or grant (admin)")
def resume(body: SwitchIn, request: Request, principal: Principal = Depends(require_admin)) -> dict[str, Any]:
    return switch(ctx_of(request), principal.id, body, False)


@router.get("/suspensions", summary="What is suspended right now (auditor, admin)")
def suspensions(request: Request, principal: Principal = Depends(require(Role.AUDITOR))) -> dict[str, Any]:
    with ctx_of(request).store.session() as s:
        return {
            "agencies": list(
                s.scalars(select(Agency.id).where(Agency.suspended.is_(True)).order_by(Agency.id))
            ),
            "datasets": list(
                s.scalars(select(Dataset.id).where(Dataset.suspended.is_(True)).order_by(Dataset.id))
            ),
            "grants": list(
                s.scalars(select(Grant.id).where(Grant.status == GrantStatus.SUSPENDED).order_by(Grant.id))
            ),
        }
