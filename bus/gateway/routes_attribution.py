"""Leak attribution (R8): which grant were the pseudonyms in a leaked copy issued to? Auditors only.

``POST /v1/audit/attribute`` takes the leaked data as JSON (a record, a list of records, or
``{"records": [...], "originals": [...]}``), JSON lines, or plain text (a CSV export, a log), finds every
bus pseudonym in it (``ps-<tag>-<mac>``), maps each tag to its grant (tags are recomputed from the grants
in the store with the bus's key, so only the bus can do this), and answers per grant: agency, dataset,
scenario, legal basis, validity and when it was delivered. When the auditor also supplies the original
values, each pseudonym's MAC is recomputed under the grant's key, which proves the attribution rather than
only matching the tag. The query itself is an audit event.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select

from bus.context import BusContext
from bus.errors import RequestInvalid
from bus.gateway.auth import Principal, ctx_of, require
from bus.lineage import audit
from bus.lineage.queries import grant_deliveries
from bus.policy.fingerprint import find_pseudonyms, tag_index
from bus.policy.pseudonyms import grant_key, pseudonym
from bus.store.models import Grant
from bus.vocab import Role

router = APIRouter(prefix="/v1/audit", tags=["audit"])

MAX_BYTES = 20 * 1024 * 1024
MAX_ORIGINALS = 10_000
SHOWN_PSEUDONYMS = 20


def parse_leak(raw: bytes) -> tuple[list[Any], list[str]]:
    """``(records, originals)`` from JSON, JSON lines or plain text."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    if not text.strip():
        raise RequestInvalid("the leaked data is empty: send a record, a list of records, JSON lines or text")
    try:
        doc = json.loads(text)
    except ValueError:
        lines = [ln for ln in text.splitlines() if ln.strip()]
        try:
            records: list[Any] = [json.loads(ln) for ln in lines]
        except ValueError:
            records = [text]  # not JSON at all: scan it as text
        return records, []
    if isinstance(doc, dict) and isinstance(doc.get("records"), list):
        originals = doc.get("originals") or []
        if not isinstance(originals, list) or len(originals) > MAX_ORIGINALS:
            raise RequestInvalid(f"'originals' must be a list of at most {MAX_ORIGINALS} values")
        return list(doc["records"]), [str(v) for v in originals if v is not None]
    if isinstance(doc, list):
        return doc, []
    return [doc], []


def _tags(request: Request, ctx: BusContext, grant_ids: list[str]) -> dict[str, str]:
    """``tag -> grant``; tags of grants already seen are kept on the app (one HMAC per new grant)."""
    known: dict[str, str] = getattr(request.app.state, "grant_tags", None) or {}
    index = tag_index(ctx.master_secret, grant_ids, known)
    request.app.state.grant_tags = {gid: tag for tag, gid in index.items()}
    return index


def attribute(request: Request, ctx: BusContext, actor: str, raw: bytes) -> dict[str, Any]:
    records, originals = parse_leak(raw)
    found: dict[str, dict[str, Any]] = {}  # pseudonym -> {tag, paths}
    for i, rec in enumerate(records):
        for path, ps, tag in find_pseudonyms(rec, f"[{i}]" if len(records) > 1 else ""):
            entry = found.setdefault(ps, {"tag": tag, "paths": [], "occurrences": 0})
            entry["occurrences"] += 1
            if len(entry["paths"]) < 5:
                entry["paths"].append(path or "(text)")
    with ctx.store.session() as s:
        grant_ids = list(s.scalars(select(Grant.id)))
        index = _tags(request, ctx, grant_ids)
        per_grant: dict[str, list[str]] = {}
        unknown: list[str] = []
        for ps, info in found.items():
            gid = index.get(info["tag"])
            (per_grant.setdefault(gid, []) if gid else unknown).append(ps)
        grants = (
            {g.id: g for g in s.scalars(select(Grant).where(Grant.id.in_(list(per_grant))))}
            if per_grant
            else {}
        )
        deliveries = grant_deliveries(s, list(per_grant))
        answers = []
        for gid, pss in sorted(per_grant.items(), key=lambda kv: -len(kv[1])):
            g = grants[gid]
            verified = _verify(ctx.master_secret, gid, pss, originals) if originals else None
            d = deliveries.get(gid)
            fields = sorted({_field_of(p) for ps in pss for p in found[ps]["paths"]} - {""})
            answers.append(
                {
                    "grant_id": gid,
                    "agency_id": g.agency_id,
                    "dataset_id": g.dataset_id,
                    "scenario": {"code": g.scenario_code, "description": g.scenario_description},
                    "legal_basis": g.legal_basis,
                    "status": g.status,
                    "requested_at": g.requested_at.isoformat(),
                    "decided_at": g.decided_at.isoformat() if g.decided_at else None,
                    "valid_until": g.valid_until.isoformat() if g.valid_until else None,
                    "ended_at": g.ended_at.isoformat() if g.ended_at else None,
                    "deliveries": {
                        "count": d[0] if d else 0,
                        "first_at": d[1].isoformat() if d and d[1] else None,
                        "last_at": d[2].isoformat() if d and d[2] else None,
                    },
                    "pseudonyms": len(pss),
                    "occurrences": sum(found[p]["occurrences"] for p in pss),
                    "fields": fields,
                    "examples": pss[:SHOWN_PSEUDONYMS],
                    "verified": None if verified is None else verified > 0,
                    "verified_pseudonyms": verified,
                }
            )
        summary = _summary(answers, unknown, len(found))
        digest = hashlib.sha256(raw).hexdigest()
        audit.append(
            s,
            actor,
            "leak.attributed",
            "leak",
            digest[:16],
            {
                "sha256": digest,
                "records": len(records),
                "pseudonyms": len(found),
                "grants": [a["grant_id"] for a in answers],
                "unknown": len(unknown),
            },
        )
    return {
        "attributed": bool(answers),
        "summary": summary,
        "records": len(records),
        "pseudonyms_found": len(found),
        "grants": answers,
        "unknown_pseudonyms": unknown[:SHOWN_PSEUDONYMS],
        "originals_checked": len(originals),
    }


def _verify(master: bytes, grant_id: str, pseudonyms: list[str], originals: list[str]) -> int:
    """How many of the pseudonyms are reproduced from one of the original values under the grant's key."""
    key = grant_key(master, grant_id)
    wanted = set(pseudonyms)
    tag = pseudonyms[0].split("-")[1]
    hits = set()
    for value in originals:
        for candidate in dict.fromkeys((value, value.strip())):
            ps = pseudonym(key, tag, candidate)
            if ps in wanted:
                hits.add(ps)
    return len(hits)


def _field_of(path: str) -> str:
    """The top-level field a pseudonym sat in: ``[3].legal_rep_id`` -> ``legal_rep_id``."""
    if path.startswith("["):
        path = path.split("]", 1)[1].lstrip(".")
    return re.split(r"[.\[]", path, maxsplit=1)[0] if path else ""


def _summary(answers: list[dict[str, Any]], unknown: list[str], total: int) -> str:
    if not total:
        return "no bus pseudonym in the data: it cannot be attributed to a grant"
    if not answers:
        return (
            f"{total} value(s) look like pseudonyms but none was issued by this bus "
            "(no grant has their tag): not attributable"
        )
    parts = [
        f"{a['pseudonyms']} pseudonym(s) issued to grant {a['grant_id']} (agency {a['agency_id']}, "
        f"dataset {a['dataset_id']}, scenario {a['scenario']['code']})"
        + ("; verified against the original values" if a["verified"] else "")
        for a in answers
    ]
    if unknown:
        parts.append(f"{len(unknown)} unknown")
    return "; ".join(parts)


@router.post("/attribute", summary="Attribute a leaked copy to the grant its pseudonyms were issued to")
async def attribute_leak(
    request: Request, principal: Principal = Depends(require(Role.AUDITOR))
) -> dict[str, Any]:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BYTES:
        raise RequestInvalid(f"the leaked data is larger than {MAX_BYTES // (1024 * 1024)} MB; split it")
    raw = await request.body()
    if len(raw) > MAX_BYTES:
        raise RequestInvalid(f"the leaked data is larger than {MAX_BYTES // (1024 * 1024)} MB; split it")
    return await run_in_threadpool(attribute, request, ctx_of(request), principal.id, raw)
