"""Who received data about this person or enterprise (R14, R12): ``GET /v1/lineage/subjects``.

Auditors and the admin only; ``reason`` is required and every call is itself audited
(``lineage.subject_lookup``, with the reason and the keyed value, never the raw value).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request

from bus.catalog.requests import no_nul_in_params
from bus.errors import RequestInvalid
from bus.gateway.auth import Principal, ctx_of, require
from bus.lineage import audit, subjects
from bus.policy.fingerprint import is_identifier
from bus.vocab import Role

router = APIRouter(prefix="/v1/lineage", tags=["lineage"], dependencies=[Depends(no_nul_in_params)])


@router.get(
    "/subjects",
    summary="Datasets that carried a person's or enterprise's identifier, and the grants that received them",
)
def subject_lookup(
    request: Request,
    semantic: str = Query(
        ...,
        min_length=3,
        max_length=128,
        pattern=r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$",
        description="an identifier semantic of catalogue fields, e.g. person.id_number",
    ),
    value: str = Query(..., min_length=1, max_length=256, description="the identifier (kept only keyed)"),
    reason: str = Query(..., min_length=3, max_length=2000, description="why you ask (audited)"),
    limit: int = Query(subjects.MAX_RECORDS, ge=1, le=subjects.MAX_RECORDS),
    principal: Principal = Depends(require(Role.AUDITOR)),
) -> dict[str, Any]:
    if not reason.strip():
        raise RequestInvalid("reason: say why you ask (it is recorded in the audit log)")
    if not is_identifier(semantic):
        raise RequestInvalid(
            f"{semantic!r} is not an identifier semantic: only fields whose semantic ends in "
            "id, id_number, credit_code, number, no or uid are indexed"
        )
    ctx = ctx_of(request)
    with ctx.store.session() as s:
        answer = subjects.lookup(s, ctx.master_secret, semantic, value, limit)
        audit.append(
            s,
            principal.id,
            "lineage.subject_lookup",
            "semantic",
            semantic,
            {
                "reason": reason.strip(),
                "value_key": subjects.semantic_key(ctx.master_secret, semantic, value),
                "records": answer.records,
                "grants": sorted(answer.recipients),
            },
        )
    body = answer.to_json()
    body["reason"] = reason.strip()
    return body
