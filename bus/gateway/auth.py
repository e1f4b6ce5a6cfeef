"""Who is calling (admin key or agency API key, ``Authorization: Bearer <key>``) and what they may do."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Depends, Request
from sqlalchemy import select

from bus.context import BusContext
from bus.errors import AuthForbidden, AuthInvalid, AuthMissing
from bus.keys import constant_time_equal, hash_key
from bus.store.models import Agency
from bus.vocab import Role


@dataclass(frozen=True)
class Principal:
    id: str
    roles: frozenset[str]
    region: str | None = None

    @property
    def is_admin(self) -> bool:
        return Role.ADMIN in self.roles

    def has(self, *roles: str) -> bool:
        return self.is_admin or any(r in self.roles for r in roles)


ADMIN_ID = "admin"


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
        return Principal(agency.id, frozenset(agency.roles), agency.region)


def current_principal(request: Request) -> Principal:
    """FastAPI dependency: every endpoint but /healthz authenticates."""
    principal = authenticate(ctx_of(request), bearer(request))
    request.state.principal = principal
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
