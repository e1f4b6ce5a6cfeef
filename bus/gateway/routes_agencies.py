"""Agencies and keys: ``POST /v1/agencies`` (admin), ``GET /v1/agencies`` (admin, auditor), one agency."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from bus.catalog import agencies
from bus.catalog.requests import AgencyIn, no_nul_in_params
from bus.errors import AuthForbidden
from bus.gateway.auth import Principal, ctx_of, current_principal, require, require_admin
from bus.vocab import Role

router = APIRouter(prefix="/v1/agencies", tags=["agencies"], dependencies=[Depends(no_nul_in_params)])


@router.post("", status_code=201, summary="Register an agency; its API key is shown only in this response")
def create_agency(
    body: AgencyIn, request: Request, principal: Principal = Depends(require_admin)
) -> JSONResponse:
    return JSONResponse(agencies.create_agency(ctx_of(request), principal.id, body), status_code=201)


@router.get("", summary="Every agency (admin, auditor)")
def list_agencies(
    request: Request, principal: Principal = Depends(require(Role.AUDITOR))
) -> list[dict[str, Any]]:
    return agencies.list_agencies(ctx_of(request))


@router.get("/{agency_id}", summary="One agency (admin, auditor, or the agency itself)")
def get_agency(
    agency_id: str, request: Request, principal: Principal = Depends(current_principal)
) -> dict[str, Any]:
    if principal.id != agency_id and not principal.has(Role.AUDITOR):
        raise AuthForbidden("an agency can read only its own record; admins and auditors read any")
    return agencies.get_agency(ctx_of(request), agency_id)
