"""``GET /v1/bus``: where the broker is and who the caller is, so the SDK needs only a URL and a key."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from bus.gateway.auth import Principal, ctx_of, current_principal

router = APIRouter(tags=["info"])


@router.get("/v1/bus", summary="Broker address, topic prefix and record size limit (any caller)")
def bus_info(request: Request, principal: Principal = Depends(current_principal)) -> dict[str, Any]:
    ctx = ctx_of(request)
    return {
        "bootstrap": ctx.bootstrap,
        "topic_prefix": ctx.topics.prefix,
        "max_record_bytes": ctx.settings.max_record_bytes,
        "agency": principal.id,
    }
