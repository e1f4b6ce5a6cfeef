"""Who is calling (admin key or agency API key, ``Authorization: Bearer <key>``) and what they may do.

A suspended agency (the emergency switch, R15) fails closed here: ``current_principal`` refuses it with
``suspended`` on every request that may change state (any method but GET, HEAD, OPTIONS), so no write
endpoint, present or future, can forget the check. Reads stay open: the suspended agency may still see its
catalogue entries and grants (and, as an auditor, incidents and the audit trail) to answer the suspension;
the data itself stays closed to it because streams and record reads refuse a suspended grantee or owner
(``bus.policy.decision.check_readable``). HTTP publishing is the one write that opts out here
(``publishing_principal``): its admission step refuses the same way and also records the attempt as an
incident, exactly as the SDK path does.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Depends, Request
from sqlalchemy import select

from bus.context import BusContext
from bus.errors import AuthForbidden, AuthInvalid, AuthMissing, Suspended
from bus.keys import constant_time_equal, hash_key
from bus.store.models import Agency, AuditEvent
from bus.vocab import Role


@dataclass(frozen=True)
class Principal:
    id: str
    roles: frozenset[str]
    region: str | None = None
    suspended: bool = False  # the agency is suspended by the emergency switch (read at every request)

    @property
    def is_admin(self) -> bool:
        return Role.ADMIN in self.roles

    def has(self, *roles: str) -> bool:
        return self.is_admin or any(r in self.roles for r in roles)


ADMIN_ID = "admin"
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def ctx_of(request: Request) -> BusContext:
    ctx: BusContext = request.app.state.ctx
    return ctx


def bearer(request: Request) -> str:
    raw = request.headers.get("authorization")
    if not raw:
        raise AuthMissing("send your API key as 'Authorization: Bearer <key>'")
    scheme, _, token = raw.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthInvalid("the Authorization header must be 'Bearer <key>'")
    return token.strip()


def authenticate(ctx: BusContext, token: str) -> Principal:
    if constant_time_equal(token, ctx.admin_key):
        return Principal(ADMIN_ID, frozenset({Role.ADMIN}))
    with ctx.store.session() as s:
        agency = s.scalar(select(Agency).where(Agency.key_hash == hash_key(token)))
        if agency is None:
            raise AuthInvalid("the API key is not known to this bus")
        return Principal(agency.id, frozenset(agency.roles), agency.region, bool(agency.suspended))


def suspended_refusal(ctx: BusContext, agency_id: str) -> Suspended:
    """The ``suspended`` refusal of a suspended agency's write: since when, why (the reason the admin
    recorded with the switch, from the audit log) and who lifts it."""
    with ctx.store.session() as s:
        event = s.scalar(
            select(AuditEvent)
            .where(
                AuditEvent.action == "emergency.suspended",
                AuditEvent.subject_type == "agency",
                AuditEvent.subject_id == agency_id,
            )
            .order_by(AuditEvent.seq.desc())
            .limit(1)
        )
    reason = str(event.data.get("reason") or "") if event is not None else ""
    since = event.at.isoformat() if event is not None else None
    why = f" since {since} (reason recorded: {reason!r})" if event is not None else ""
    return Suspended(
        f"agency {agency_id} is suspended by the emergency switch (R15){why}: it cannot publish, "
        "catalogue, submit, review, request, decide, revoke or change anything until the bus "
        f"administrator resumes it (POST /v1/emergency/resume, `databus resume agency {agency_id} "
        "--reason ...`); reading its catalogue entries and grants stays allowed",
        agency=agency_id,
        suspended_since=since,
        reason=reason or None,
        lifted_by="admin",
    )


def publishing_principal(request: Request) -> Principal:
    """The caller, without refusing a suspended agency: only for HTTP publishing, whose admission step
    refuses it with ``suspended`` and records the attempt as an incident (R15)."""
    principal = authenticate(ctx_of(request), bearer(request))
    request.state.principal = principal
    return principal


def current_principal(request: Request) -> Principal:
    """FastAPI dependency: every endpoint but /healthz authenticates. A suspended agency is refused
    (``suspended``) on every request but a read (GET, HEAD, OPTIONS): fail closed for every write."""
    principal = publishing_principal(request)
    if principal.suspended and request.method.upper() not in READ_METHODS:
        raise suspended_refusal(ctx_of(request), principal.id)
    return principal


def require(*roles: str):  # type: ignore[no-untyped-def]
    """Dependency factory: the caller must hold one of ``roles`` (the admin key holds all)."""

    def _dep(principal: Principal = Depends(current_principal)) -> Principal:
        if not principal.has(*roles):
            raise AuthForbidden(f"this needs one of the roles: {', '.join(sorted(roles))}")
        return principal

    return _dep


def require_admin(principal: Principal = Depends(current_principal)) -> Principal:
    if not principal.is_admin:
        raise AuthForbidden("this needs the admin key")
    return principal
