"""Catalogue endpoints (R1-R6): entries, submission, review, retirement, schema versions, statistics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import JSONResponse

from bus.catalog import service
from bus.catalog.requests import DatasetIn, ReviewIn, no_nul_in_params
from bus.gateway.auth import Principal, ctx_of, current_principal
from bus.vocab import Category, DatasetStatus, Grade, SharingAttribute

router = APIRouter(tags=["catalogue"], dependencies=[Depends(no_nul_in_params)])


@router.post("/v1/datasets", status_code=201, summary="Catalogue a dataset (agency) -> draft")
def create_dataset(
    body: DatasetIn, request: Request, principal: Principal = Depends(current_principal)
) -> JSONResponse:
    return JSONResponse(service.create_dataset(ctx_of(request), principal, body), status_code=201)


@router.get("/v1/datasets", summary="The catalogue, filtered (not-shared entries show metadata only)")
def list_datasets(
    request: Request,
    principal: Principal = Depends(current_principal),
    owner: str | None = Query(None, max_length=64, description="owner agency id"),
    category: Category | None = None,
    grade: Grade | None = None,
    attribute: SharingAttribute | None = Query(None, description="sharing attribute"),
    status: DatasetStatus | None = None,
    limit: int = Query(200, ge=1, le=1000),
    offset: int = Query(0, ge=0, le=1_000_000),
) -> dict[str, Any]:
    return service.list_datasets(
        ctx_of(request),
        principal,
        owner=owner,
        category=category.value if category else None,
        grade=grade.value if grade else None,
        attribute=attribute.value if attribute else None,
        status=status.value if status else None,
        limit=limit,
        offset=offset,
    )


@router.get("/v1/datasets/{dataset_id}", summary="One catalogue entry")
def get_dataset(
    dataset_id: str, request: Request, principal: Principal = Depends(current_principal)
) -> dict[str, Any]:
    return service.get_dataset(ctx_of(request), principal, dataset_id)


@router.post(
    "/v1/datasets/{dataset_id}/submit", summary="Submit for review (owner); may refuse re-collection (R9)"
)
def submit(
    dataset_id: str, request: Request, principal: Principal = Depends(current_principal)
) -> dict[str, Any]:
    return service.submit(ctx_of(request), principal, dataset_id)


@router.post(
    "/v1/datasets/{dataset_id}/review", summary="Approve or reject (reviewer; never one's own entry)"
)
def review(
    dataset_id: str, body: ReviewIn, request: Request, principal: Principal = Depends(current_principal)
) -> dict[str, Any]:
    return service.review(ctx_of(request), principal, dataset_id, body)


@router.post("/v1/datasets/{dataset_id}/retire", summary="Retire an approved entry (owner, admin)")
def retire(
    dataset_id: str, request: Request, principal: Principal = Depends(current_principal)
) -> dict[str, Any]:
    return service.retire(ctx_of(request), principal, dataset_id)


@router.put(
    "/v1/datasets/{dataset_id}/schema",
    summary="Add a schema version (owner); refused if incompatible or re-collecting (R9)",
)
def put_schema(
    dataset_id: str,
    request: Request,
    principal: Principal = Depends(current_principal),
    body: Any = Body(..., description='the Avro record schema, or {"schema": <schema>}'),
) -> JSONResponse:
    raw = body["schema"] if isinstance(body, dict) and "schema" in body and "fields" not in body else body
    view, created = service.add_schema_version(ctx_of(request), principal, dataset_id, raw)
    return JSONResponse(view, status_code=201 if created else 200)


@router.get("/v1/datasets/{dataset_id}/schema", summary="A schema version (default: the current one)")
def get_schema(
    dataset_id: str,
    request: Request,
    principal: Principal = Depends(current_principal),
    version: int | None = Query(None, ge=1, le=1_000_000),
) -> dict[str, Any]:
    return service.get_schema(ctx_of(request), principal, dataset_id, version)


@router.get("/v1/datasets/{dataset_id}/schemas", summary="Every schema version of the dataset")
def list_schemas(
    dataset_id: str, request: Request, principal: Principal = Depends(current_principal)
) -> dict[str, Any]:
    return service.schema_versions(ctx_of(request), principal, dataset_id)


@router.get(
    "/v1/catalog/stats", summary="Counts by agency, category, grade, attribute, status; review times (R2)"
)
def stats(request: Request, principal: Principal = Depends(current_principal)) -> dict[str, Any]:
    return service.stats(ctx_of(request))
