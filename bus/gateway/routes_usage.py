"""Usage metering (R18): ``GET /v1/usage``, records and bytes per hour, dataset, grant and agency.

Auditors and the admin only.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request

from bus.catalog.requests import no_nul_in_params
from bus.errors import RequestInvalid
from bus.gateway.auth import Principal, ctx_of, require
from bus.lineage.usage import query_usage
from bus.vocab import Role

router = APIRouter(prefix="/v1", tags=["usage"], dependencies=[Depends(no_nul_in_params)])


def _utc(dt: datetime | None) -> datetime | None:
    if dt is not None and dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    return dt


@router.get("/usage", summary="Records and bytes published, refused, delivered and consumed, per hour")
def usage(
    request: Request,
    principal: Principal = Depends(require(Role.AUDITOR)),
    dataset: str | None = Query(None, max_length=64),
    grant: str | None = Query(None, max_length=64),
    agency: str | None = Query(None, max_length=64, description="publisher or grantee"),
    since: datetime | None = Query(
        None, alias="from", description="from this time (ISO 8601, rounded down to the hour)"
    ),
    until: datetime | None = Query(None, alias="to", description="before this time (ISO 8601, exclusive)"),
    by: Literal["hour", "total"] = Query("hour", description="one row per hour, or totals over the period"),
) -> dict[str, Any]:
    since, until = _utc(since), _utc(until)
    if since is not None and until is not None and until <= since:
        raise RequestInvalid("'to' must be later than 'from'")
    with ctx_of(request).store.session() as s:
        return query_usage(s, dataset=dataset, grant=grant, agency=agency, since=since, until=until, by=by)
