"""Grant endpoints (R5, R7, R10, R12): request, owner decision, revocation, reads and the view schema."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from bus.gateway.auth import Principal, ctx_of, current_principal
from bus.grants import service
from bus.grants.keys import ALG, GrantKeys, grantee_keys
from bus.lineage import audit
from bus.vocab import GrantStatus

router = APIRouter(tags=["grants"])


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ScenarioIn(_Body):
    code: Annotated[str, Field(max_length=200)] | None = None
    description: Annotated[str, Field(max_length=4000)] | None = None


class GrantIn(_Body):
    dataset: Annotated[str, Field(min_length=1, max_length=64)]
    fields: Annotated[list[Annotated[str, Field(max_length=200)]], Field(max_length=2000)]
    scenario: ScenarioIn | None = Field(
        None, description="the application scenario (R7): {code, description}"
    )
    legal_basis: Annotated[str, Field(max_length=4000)] | None = None
    valid_until: datetime | None = Field(None, description="when the grant ends (default: one year)")
    unmasked_fields: Annotated[list[Annotated[str, Field(max_length=200)]], Field(max_length=2000)] = Field(
        default_factory=list, description="fields delivered raw (needs the owner's approval, R12)"
    )


class DecisionIn(_Body):
    decision: Literal["approve", "deny"]
    reason: Annotated[str, Field(max_length=4000)] | None = None


class RevokeIn(_Body):
    reason: Annotated[str, Field(max_length=4000)] | None = None


@router.post("/v1/grants", status_code=201, summary="Request a grant (agency) -> active, pending, or refused")
def request_grant(
    body: GrantIn, request: Request, principal: Principal = Depends(current_principal)
) -> JSONResponse:
    req = service.GrantRequestIn(
        dataset=body.dataset,
        fields=body.fields,
        scenario_code=body.scenario.code if body.scenario else None,
        scenario_description=body.scenario.description if body.scenario else None,
        legal_basis=body.legal_basis,
        valid_until=body.valid_until,
        unmasked_fields=tuple(body.unmasked_fields),
    )
    return JSONResponse(service.request_grant(ctx_of(request), principal, req), status_code=201)


@router.get("/v1/grants", summary="Grants the caller holds or decides on (auditors, admin: all)")
def list_grants(
    request: Request,
    principal: Principal = Depends(current_principal),
    status: GrantStatus | None = None,
    dataset: str | None = Query(None, max_length=64),
    role: Literal["grantee", "owner"] | None = None,
    limit: int = Query(200, ge=1, le=1000),
    offset: int = Query(0, ge=0, le=1_000_000),  # unbounded, a huge offset overflowed the store (500)
) -> dict[str, Any]:
    return service.list_grants(
        ctx_of(request),
        principal,
        status=status.value if status else None,
        dataset=dataset,
        role=role,
        limit=limit,
        offset=offset,
    )


@router.get("/v1/grants/{grant_id}", summary="One grant (grantee, dataset owner, auditors, admin)")
def get_grant(
    grant_id: str, request: Request, principal: Principal = Depends(current_principal)
) -> dict[str, Any]:
    return service.get_grant(ctx_of(request), principal, grant_id)


@router.post("/v1/grants/{grant_id}/decision", summary="Approve or deny a pending grant (dataset owner)")
def decide(
    grant_id: str, body: DecisionIn, request: Request, principal: Principal = Depends(current_principal)
) -> dict[str, Any]:
    return service.decide(ctx_of(request), principal, grant_id, body.decision, body.reason)


@router.post(
    "/v1/grants/{grant_id}/revoke", summary="Revoke a grant (owner, admin): delivery stops within 1 s"
)
def revoke(
    grant_id: str,
    request: Request,
    body: RevokeIn | None = None,
    principal: Principal = Depends(current_principal),
) -> dict[str, Any]:
    return service.revoke(ctx_of(request), principal, grant_id, body.reason if body else None)


@router.get("/v1/grants/{grant_id}/schema", summary="Avro schema of the records the grant delivers")
def grant_schema(
    grant_id: str, request: Request, principal: Principal = Depends(current_principal)
) -> dict[str, Any]:
    return service.grant_schema(ctx_of(request), principal, grant_id)


@router.get(
    "/v1/grants/{grant_id}/keys",
    summary="The grant's data keys (grantee, active grants only; every call audited)",
)
def grant_keys(grant_id: str, request: Request, principal: Principal = Depends(current_principal)) -> dict[str, Any]:
    """The keys records on ``deliver.<grant>`` are sealed under (``docs/ENVELOPE.md``), for the grantee of an
    active grant only: anyone else ``auth.forbidden``, a grant that is not active ``grant.not_active``."""
    ctx = ctx_of(request)
    readable = service.readable(ctx, principal, grant_id)
    GrantKeys(ctx).current(readable.grant_id, readable.version)  # the key the next record will use
    keys = grantee_keys(ctx, readable.grant_id)
    with ctx.store.session() as s:
        audit.append(s, principal.id, "grant.keys_fetched", "grant", grant_id,
                     {"agency": principal.id, "scenario": readable.scenario_code, "kids": [k.kid for k in keys]})
    return {
        "grant": grant_id,
        "keys": [
            {
                "kid": k.kid,
                "alg": ALG,
                "k": base64.urlsafe_b64encode(k.key).decode().rstrip("="),
                "not_before": k.not_before.isoformat(),
                "not_after": k.not_after.isoformat() if k.not_after else None,
            }
            for k in keys
        ],
    }
