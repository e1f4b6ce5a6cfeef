"""The grant service (R5, R7, R8, R10, R12): store-touching operations behind the grant endpoints.

Each change is one transaction that also appends its audit event; refusals are audited too. After
the commit, the change is announced (`bus.exchange.policy_events.announce`) so every router and open
stream applies it within a second. The decision itself is pure (`bus.policy.decision`).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from bus.catalog.schema import field_names
from bus.context import BusContext
from bus.errors import AuthForbidden, BusError, CatalogNotFound, GrantNotFound, RequestInvalid
from bus.lineage import audit
from bus.policy import decision as policy
from bus.policy.projection import field_rules, view_schema
from bus.store.models import Agency, Dataset, Grant, SchemaVersion
from bus.vocab import GrantStatus, Role

log = logging.getLogger(__name__)


class Caller(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def is_admin(self) -> bool: ...

    def has(self, *roles: str) -> bool: ...


@dataclass(frozen=True)
class GrantRequestIn:
    dataset: str
    fields: list[str]
    scenario_code: str | None
    scenario_description: str | None
    legal_basis: str | None
    valid_until: datetime | None = None
    unmasked_fields: tuple[str, ...] = ()


def _iso(dt: datetime | None) -> str | None:
    return dt.astimezone(UTC).isoformat() if dt is not None else None


def grant_json(g: Grant, ctx: BusContext | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": g.id,
        "dataset": g.dataset_id,
        "agency": g.agency_id,
        "fields": list(g.fields),
        "unmasked_fields": list(g.unmasked_fields or []),
        "scenario": {"code": g.scenario_code, "description": g.scenario_description},
        "legal_basis": g.legal_basis,
        "valid_until": _iso(g.valid_until),
        "status": g.status,
        "version": g.version,
        "decision_reason": g.decision_reason,
        "requested_at": _iso(g.requested_at),
        "decided_at": _iso(g.decided_at),
        "ended_at": _iso(g.ended_at),
    }
    if ctx is not None:
        out["topic"] = ctx.topics.deliver(g.id)
    return out


def _dataset(s: Session, dataset_id: str) -> Dataset:
    ds = s.get(Dataset, dataset_id)
    if ds is None:
        raise CatalogNotFound(f"no dataset '{dataset_id}' in the catalogue; list them with GET /v1/datasets")
    return ds


def _schema(s: Session, ds: Dataset) -> dict[str, Any]:
    sv = s.get(SchemaVersion, (ds.id, ds.schema_version))
    if sv is None:
        raise CatalogNotFound(f"dataset '{ds.id}' has no schema version {ds.schema_version}")
    return sv.schema


def facts(ds: Dataset, schema: dict[str, Any]) -> policy.DatasetFacts:
    return policy.DatasetFacts(
        id=ds.id,
        owner_id=ds.owner_id,
        status=ds.status,
        attribute=ds.sharing_attribute,
        fields=field_names(schema),
        shareable_fields=ds.shareable_fields,
        eligible_agencies=ds.eligible_agencies,
        suspended=bool(ds.suspended),
    )


def _announce(ctx: BusContext, grant_id: str) -> None:
    from bus.exchange.policy_events import announce

    try:
        announce(ctx, "grant", grant_id)
    except Exception:  # committed already; routers also check the version on their next batch
        log.warning("could not announce the change of grant %s", grant_id, exc_info=True)


def _ensure_topic(ctx: BusContext, grant_id: str) -> None:
    """Create ``deliver.<grant>`` up front so subscribers can attach before the first delivery."""
    from bus.exchange.kafka import ensure_topics

    try:
        ensure_topics(ctx.bootstrap, [ctx.topics.deliver(grant_id)], timeout=5)
    except Exception:  # the router's first produce creates it anyway
        log.warning("could not create the delivery topic of grant %s", grant_id, exc_info=True)


def _audit_refusal(ctx: BusContext, caller: Caller, req: GrantRequestIn, err: BusError) -> None:
    try:
        with ctx.store.session() as s:
            audit.append(
                s,
                caller.id,
                "grant.refused",
                "dataset",
                req.dataset[:128],
                {
                    "code": err.code,
                    "detail": err.detail,
                    "fields": req.fields[:50],
                    "scenario": req.scenario_code,
                },
            )
    except Exception:
        log.warning("could not audit a refused grant request", exc_info=True)


# --- operations -------------------------------------------------------------------------------------------
def request_grant(ctx: BusContext, caller: Caller, req: GrantRequestIn) -> dict[str, Any]:
    """R7/R10: decide at once (active), wait for the owner (pending), or refuse with a stable code."""
    if caller.is_admin:
        raise AuthForbidden("grants are held by agencies; request with the agency's own API key")
    now = datetime.now(UTC)
    try:
        with ctx.store.session() as s:
            ds = _dataset(s, req.dataset)
            outcome = policy.decide(
                policy.GrantRequest(
                    requester_id=caller.id,
                    dataset_id=req.dataset,
                    fields=req.fields,
                    scenario_code=req.scenario_code,
                    scenario_description=req.scenario_description,
                    legal_basis=req.legal_basis,
                    valid_until=req.valid_until,
                    unmasked_fields=req.unmasked_fields,
                ),
                facts(ds, _schema(s, ds)),
                now,
            )
            grant = Grant(
                id=f"gr-{uuid.uuid4().hex[:12]}",
                dataset_id=ds.id,
                agency_id=caller.id,
                fields=list(outcome.fields),
                unmasked_fields=list(outcome.unmasked_fields),
                scenario_code=(req.scenario_code or "").strip(),
                scenario_description=(req.scenario_description or "").strip(),
                legal_basis=(req.legal_basis or "").strip(),
                valid_until=outcome.valid_until,
                status=outcome.status.value,
                version=1,
                requested_at=now,
                decided_at=now if outcome.status == GrantStatus.ACTIVE else None,
                decision_reason=outcome.reason,
            )
            s.add(grant)
            s.flush()
            audit.append(
                s,
                caller.id,
                "grant.requested",
                "grant",
                grant.id,
                {
                    "dataset": ds.id,
                    "owner": ds.owner_id,
                    "fields": grant.fields,
                    "unmasked_fields": grant.unmasked_fields,
                    "scenario": {"code": grant.scenario_code, "description": grant.scenario_description},
                    "legal_basis": grant.legal_basis,
                    "valid_until": _iso(grant.valid_until),
                    "status": grant.status,
                    "reason": outcome.reason,
                },
            )
            body = grant_json(grant, ctx)
    except BusError as err:
        _audit_refusal(ctx, caller, req, err)
        raise
    if body["status"] == GrantStatus.ACTIVE:
        _ensure_topic(ctx, body["id"])
        _announce(ctx, body["id"])
    return body


def _load_for_update(s: Session, grant_id: str) -> tuple[Grant, Dataset]:
    grant = s.scalar(select(Grant).where(Grant.id == grant_id).with_for_update())
    if grant is None:
        raise GrantNotFound(f"no grant '{grant_id}'")
    return grant, _dataset(s, grant.dataset_id)


def decide(
    ctx: BusContext, caller: Caller, grant_id: str, decision: str, reason: str | None
) -> dict[str, Any]:
    """R10: the dataset owner approves (-> active) or denies (-> denied) a pending grant."""
    action = {"approve": policy.APPROVE, "deny": policy.DENY}.get(decision, decision)
    if action not in (policy.APPROVE, policy.DENY):
        raise RequestInvalid(f"decision must be approve or deny, not {decision!r}")
    with ctx.store.session() as s:
        grant, ds = _load_for_update(s, grant_id)
        _check_visible(caller, grant, ds)
        target = policy.transition(
            grant.status, action, actor_id=caller.id, owner_id=ds.owner_id, is_admin=caller.is_admin
        )
        now = datetime.now(UTC)
        grant.status, grant.decided_at, grant.version = target.value, now, grant.version + 1
        grant.decision_reason = (reason or "").strip() or None
        audit.append(
            s,
            caller.id,
            f"grant.{'approved' if target == GrantStatus.ACTIVE else 'denied'}",
            "grant",
            grant.id,
            {
                "dataset": ds.id,
                "agency": grant.agency_id,
                "reason": grant.decision_reason,
                "unmasked_fields": list(grant.unmasked_fields or []),
            },
        )
        body = grant_json(grant, ctx)
    if target == GrantStatus.ACTIVE:
        _ensure_topic(ctx, grant_id)
    _announce(ctx, grant_id)
    return body


def revoke(ctx: BusContext, caller: Caller, grant_id: str, reason: str | None) -> dict[str, Any]:
    """The owner or an admin ends a grant; routers and streams stop within a second."""
    with ctx.store.session() as s:
        grant, ds = _load_for_update(s, grant_id)
        _check_visible(caller, grant, ds)
        target = policy.transition(
            grant.status, policy.REVOKE, actor_id=caller.id, owner_id=ds.owner_id, is_admin=caller.is_admin
        )
        now = datetime.now(UTC)
        grant.status, grant.ended_at, grant.version = target.value, now, grant.version + 1
        grant.decision_reason = (reason or "").strip() or grant.decision_reason
        audit.append(
            s,
            caller.id,
            "grant.revoked",
            "grant",
            grant.id,
            {"dataset": ds.id, "agency": grant.agency_id, "reason": (reason or "").strip() or None},
        )
        body = grant_json(grant, ctx)
    _announce(ctx, grant_id)
    return body


def expire_due(ctx: BusContext) -> list[str]:
    """End every active or suspended grant past its ``valid_until`` (routers sweep every few seconds)."""
    now = datetime.now(UTC)
    expired: list[str] = []
    with ctx.store.session() as s:
        q = select(Grant).where(
            Grant.status.in_([GrantStatus.ACTIVE, GrantStatus.SUSPENDED, GrantStatus.PENDING]),
            Grant.valid_until.is_not(None),
            Grant.valid_until <= now,
        )
        due = list(s.scalars(q.with_for_update(skip_locked=True) if ctx.store.dialect != "sqlite" else q))
        for grant in due:
            grant.status, grant.ended_at, grant.version = GrantStatus.EXPIRED.value, now, grant.version + 1
            expired.append(grant.id)
        if due:
            audit.append_many(
                s,
                [
                    audit.Event(
                        "bus",
                        "grant.expired",
                        "grant",
                        g.id,
                        {"dataset": g.dataset_id, "agency": g.agency_id, "valid_until": _iso(g.valid_until)},
                    )
                    for g in due
                ],
            )
    for gid in expired:
        _announce(ctx, gid)
    return expired


# --- reads ------------------------------------------------------------------------------------------------
def _check_visible(caller: Caller, grant: Grant, ds: Dataset) -> None:
    if caller.id in (grant.agency_id, ds.owner_id) or caller.has(Role.AUDITOR):
        return
    raise AuthForbidden(
        f"grant {grant.id} is visible only to its grantee {grant.agency_id}, the dataset owner "
        f"{ds.owner_id}, auditors and the admin"
    )


def get_grant(ctx: BusContext, caller: Caller, grant_id: str) -> dict[str, Any]:
    with ctx.store.session() as s:
        grant = s.get(Grant, grant_id)
        if grant is None:
            raise GrantNotFound(f"no grant '{grant_id}'")
        _check_visible(caller, grant, _dataset(s, grant.dataset_id))
        return grant_json(grant, ctx)


def list_grants(
    ctx: BusContext,
    caller: Caller,
    *,
    status: str | None = None,
    dataset: str | None = None,
    role: str | None = None,
    limit: int = 200,
    offset: int = 0,
) -> dict[str, Any]:
    """The caller's grants: as grantee, as dataset owner, or everything for auditors and the admin."""
    with ctx.store.session() as s:
        q = select(Grant).join(Dataset, Dataset.id == Grant.dataset_id)
        if role == "grantee":
            q = q.where(Grant.agency_id == caller.id)
        elif role == "owner":
            q = q.where(Dataset.owner_id == caller.id)
        elif not caller.has(Role.AUDITOR):
            q = q.where(or_(Grant.agency_id == caller.id, Dataset.owner_id == caller.id))
        if status:
            q = q.where(Grant.status == status)
        if dataset:
            q = q.where(Grant.dataset_id == dataset)
        rows = list(s.scalars(q.order_by(Grant.requested_at.desc(), Grant.id).limit(limit).offset(offset)))
        return {"grants": [grant_json(g, ctx) for g in rows], "limit": limit, "offset": offset}


@dataclass(frozen=True)
class Readable:
    """A grant the caller may read now, with what a reader needs to decode its deliveries."""

    grant_id: str
    dataset_id: str
    agency_id: str
    scenario_code: str
    view_schema: dict[str, Any]
    version: int


def _view_of(s: Session, grant: Grant, ds: Dataset) -> dict[str, Any]:
    schema = _schema(s, ds)
    return view_schema(schema, field_rules(schema, grant.fields, grant.unmasked_fields or []), grant.id)


def grant_schema(ctx: BusContext, caller: Caller, grant_id: str) -> dict[str, Any]:
    """The Avro schema of what the grant delivers (grantee, owner, auditors, admin)."""
    with ctx.store.session() as s:
        grant = s.get(Grant, grant_id)
        if grant is None:
            raise GrantNotFound(f"no grant '{grant_id}'")
        ds = _dataset(s, grant.dataset_id)
        _check_visible(caller, grant, ds)
        return {
            "grant": grant.id,
            "dataset": ds.id,
            "dataset_schema_version": ds.schema_version,
            "status": grant.status,
            "topic": ctx.topics.deliver(grant.id),
            "schema": _view_of(s, grant, ds),
        }


def readable(ctx: BusContext, caller: Caller, grant_id: str) -> Readable:
    """R8/R14: only the grantee reads a grant (``auth.forbidden``), and only while it is active
    (``grant.not_active``) and nothing involved is suspended (``suspended``)."""
    with ctx.store.session() as s:
        grant = s.get(Grant, grant_id)
        if grant is None:
            raise GrantNotFound(f"no grant '{grant_id}'")
        ds = _dataset(s, grant.dataset_id)
        if caller.id != grant.agency_id:
            raise AuthForbidden(
                f"grant {grant_id} is readable only by its grantee {grant.agency_id}; grants "
                "cannot be transferred (R8)"
            )
        grantee, owner = s.get(Agency, grant.agency_id), s.get(Agency, ds.owner_id)
        policy.check_readable(
            grant.status,
            grant.valid_until,
            datetime.now(UTC),
            grantee_suspended=bool(grantee and grantee.suspended),
            dataset_suspended=bool(ds.suspended),
            owner_suspended=bool(owner and owner.suspended),
            dataset_status=ds.status,
            grant_id=grant_id,
        )
        return Readable(
            grant.id, ds.id, grant.agency_id, grant.scenario_code, _view_of(s, grant, ds), grant.version
        )
