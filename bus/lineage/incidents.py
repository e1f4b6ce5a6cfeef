"""R15: violations open or update incidents; monitoring systems follow them on ``bus.incidents``.

The validator, the router and the gateway call ``record_violations`` once per batch. Violations of one
agency, of one kind, on one dataset are grouped into one open incident while they keep coming (each
arrives within ``window_seconds`` of the previous one): its count grows and its evidence (record ids,
trace ids, codes, grants, a few details) is kept up to a cap, instead of one incident per record.

Two anomalies (a bad-signature burst, a sudden rise in refusals) are detected from per-minute counters
in Redis by ``bus.lineage.anomalies`` (thresholds in ``IncidentPolicy``, built from the
``BUS_INCIDENT_*`` settings by ``IncidentPolicy.from_settings``). Kinds and severities are
``bus.vocab.IncidentKind`` and ``Severity``; what callers pass is ``bus.lineage.rows.Violation``.

Opening an incident is an audit event (hash chain). Each incident is published as JSON (shape in
``schemas/incident.avsc``) to ``<prefix>bus.incidents`` when it opens and when its count reaches a power
of two, so a flood yields a handful of messages.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from bus.context import BusContext
from bus.lineage import audit
from bus.lineage.anomalies import IncidentPolicy, detect_anomalies
from bus.lineage.rows import RecordedViolation, Violation
from bus.store.models import Incident
from bus.vocab import IncidentKind, Severity

log = logging.getLogger(__name__)

K, S = IncidentKind, Severity
SEVERITY: dict[str, Severity] = {  # kind -> severity
    K.FORWARDING: S.CRITICAL,
    K.FORGED_DELIVERY: S.CRITICAL,  # records on a deliver.<grant> topic that the bus did not seal there
    K.RECOLLECTION: S.HIGH,
    K.EGRESS: S.HIGH,
    K.BAD_SIGNATURE_BURST: S.HIGH,
    K.REFUSAL_SPIKE: S.HIGH,
    K.ACCESS_REFUSED: S.MEDIUM,
    K.VIOLATION: S.MEDIUM,
    K.SUSPENDED: S.LOW,
    K.BAD_SIGNATURE: S.LOW,
    K.RECORD_REFUSED: S.LOW,
    K.BROKER_LOST: S.CRITICAL,  # the broker came back without its topics (bus.exchange.broker_identity)
    K.WORKER_STALLED: S.HIGH,  # records wait behind a batch a worker cannot finish (bus.exchange.stalls)
}
SEVERITIES = tuple(Severity)  # increasing
_CODE_KIND = {
    "forwarding.detected": K.FORWARDING,
    "recollection.detected": K.RECOLLECTION,
    "recollection.overlap": K.RECOLLECTION,
    "egress.refused": K.EGRESS,
    "record.unauthenticated": K.BAD_SIGNATURE,
    "suspended": K.SUSPENDED,
}
_CODE_PREFIX_KIND = (
    ("auth.", K.ACCESS_REFUSED),
    ("sharing.", K.ACCESS_REFUSED),
    ("grant.", K.ACCESS_REFUSED),
    ("dataset.", K.ACCESS_REFUSED),
    ("record.", K.RECORD_REFUSED),
)
_LOCK = threading.Lock()  # serialises grouping inside one process; the store lock covers processes


DEFAULT_POLICY = IncidentPolicy()  # the documented defaults (Settings uses the same values)


def policy_for(ctx: BusContext) -> IncidentPolicy:
    settings = getattr(ctx, "settings", None)
    return IncidentPolicy.from_settings(settings) if settings is not None else DEFAULT_POLICY


def kind_for(code: str | None) -> IncidentKind:
    """The incident kind of an error code (callers may also name the kind themselves)."""
    if not code:
        return K.VIOLATION
    if code in _CODE_KIND:
        return _CODE_KIND[code]
    for prefix, kind in _CODE_PREFIX_KIND:
        if code.startswith(prefix):
            return kind
    return K.VIOLATION


def severity_of(kind: str) -> Severity:
    return SEVERITY.get(kind, S.MEDIUM)


def incident_json(row: Incident) -> dict[str, Any]:
    return {
        "id": row.id,
        "kind": row.kind,
        "severity": row.severity,
        "status": row.status,
        "agency_id": row.agency_id,
        "dataset_id": row.dataset_id,
        "grant_id": row.grant_id,
        "count": row.count,
        "first_at": row.first_at.isoformat(),
        "last_at": row.last_at.isoformat(),
        "evidence": row.evidence or {},
    }


def _normalise(v: Violation | Mapping[str, Any]) -> RecordedViolation:
    code = v.get("code")
    kind = v.get("kind")
    if kind not in SEVERITY:  # no kind, or an error code given as the kind: classify by code
        mapped = kind_for(code or kind)
        kind = mapped if mapped != K.VIOLATION or not kind else kind
    return {
        "kind": str(kind),
        "code": code,
        "agency_id": v.get("agency_id"),
        "dataset_id": v.get("dataset_id"),
        "grant_id": v.get("grant_id") or v.get("grant"),
        "record_ids": [str(r) for r in v.get("record_ids") or () if r],
        "trace_ids": [str(t) for t in v.get("trace_ids") or () if t],
        "detail": v.get("detail"),
        "count": max(1, int(v.get("count") or max(1, len(v.get("record_ids") or ())))),
    }


# --- grouping (store) ---------------------------------------------------------------------------------
def _lock_incidents(session: Session) -> None:
    """Take the store-wide write lock for grouping, so two processes never open the same incident twice."""
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(7215001)"))
    else:  # SQLite: a no-op write takes the database write lock for this transaction
        session.execute(update(Incident).where(Incident.id == -1).values(count=Incident.count))


def _merge_list(old: list[Any], new: Iterable[Any], cap: int) -> list[Any]:
    out = list(old)
    seen = set(out)
    for x in new:
        if len(out) >= cap:
            break
        if x not in seen:
            out.append(x)
            seen.add(x)
    return out


def _merged_evidence(
    old: Mapping[str, Any], group: list[RecordedViolation], policy: IncidentPolicy
) -> dict[str, Any]:
    ev = dict(old)
    codes = dict(ev.get("codes") or {})
    for v in group:
        if v["code"]:
            codes[v["code"]] = codes.get(v["code"], 0) + v["count"]
    ev["codes"] = codes
    ev["record_ids"] = _merge_list(
        ev.get("record_ids") or [], (r for v in group for r in v["record_ids"]), policy.evidence_cap
    )
    ev["trace_ids"] = _merge_list(
        ev.get("trace_ids") or [], (t for v in group for t in v["trace_ids"]), policy.evidence_cap
    )
    ev["grants"] = _merge_list(
        ev.get("grants") or [], (v["grant_id"] for v in group if v["grant_id"]), policy.evidence_cap
    )
    details = [d for d in (v["detail"] for v in group) if d]
    ev["details"] = _merge_list(ev.get("details") or [], details, policy.details_cap)
    ev["last_detail"] = details[-1] if details else ev.get("last_detail")
    return ev


def _crossed_power_of_two(before: int, after: int) -> bool:
    return after.bit_length() > before.bit_length()


def record_violations(
    ctx: BusContext,
    violations: Sequence[Violation] | Sequence[Mapping[str, Any]],
    *,
    policy: IncidentPolicy | None = None,
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """Each violation (``bus.lineage.rows.Violation``): ``{kind, code, agency_id, dataset_id, grant_id,
    record_ids, trace_ids, detail}`` (``kind`` may be left out: it follows from ``code``; ``count``
    defaults to the number of record ids).

    Called once per batch by the validator, the router and the gateway; groups repeats per agency, kind
    and dataset. ``policy`` defaults to the one built from ``ctx.settings`` (``BUS_INCIDENT_*``).
    Returns the incidents opened or updated (as published).
    """
    if not violations:
        return []
    policy = policy or policy_for(ctx)
    now = now or datetime.now(UTC)
    items = [_normalise(v) for v in violations]
    try:
        items.extend(detect_anomalies(ctx, items, policy, now))
    except Exception:  # counters are an extra; never lose the incident itself because Redis hiccupped
        log.warning("incident rate counters unavailable; burst and spike detection skipped", exc_info=True)
    groups: dict[tuple[str | None, str, str | None], list[RecordedViolation]] = {}
    for it in items:
        groups.setdefault((it["agency_id"], it["kind"], it["dataset_id"]), []).append(it)
    horizon = now - timedelta(seconds=policy.window_seconds)
    out: list[dict[str, Any]] = []
    with _LOCK, ctx.store.session() as s:
        _lock_incidents(s)
        for (agency, kind, dataset), group in groups.items():
            n = sum(v["count"] for v in group)
            row = s.scalar(
                select(Incident)
                .where(
                    Incident.kind == kind,
                    Incident.status == "open",
                    Incident.last_at >= horizon,
                    Incident.agency_id.is_(None) if agency is None else Incident.agency_id == agency,
                    Incident.dataset_id.is_(None) if dataset is None else Incident.dataset_id == dataset,
                )
                .order_by(Incident.last_at.desc())
                .limit(1)
            )
            grant = next((v["grant_id"] for v in group if v["grant_id"]), None)
            if row is None:
                row = Incident(
                    kind=kind,
                    severity=severity_of(kind),
                    agency_id=agency,
                    dataset_id=dataset,
                    grant_id=grant,
                    status="open",
                    count=n,
                    first_at=now,
                    last_at=now,
                    evidence=_merged_evidence({}, group, policy),
                )
                s.add(row)
                s.flush()
                audit.append(
                    s,
                    "bus",
                    "incident.opened",
                    "incident",
                    str(row.id),
                    {
                        "kind": kind,
                        "severity": row.severity,
                        "agency_id": agency,
                        "dataset_id": dataset,
                        "grant_id": grant,
                        "count": n,
                        "codes": row.evidence.get("codes"),
                        "detail": row.evidence.get("last_detail"),
                    },
                )
                out.append({"event": "opened", **incident_json(row)})
                continue
            before = row.count
            row.count = before + n
            row.last_at = now
            row.grant_id = row.grant_id or grant
            row.evidence = _merged_evidence(row.evidence or {}, group, policy)
            if _crossed_power_of_two(before, row.count):
                out.append({"event": "updated", **incident_json(row)})
    _publish(ctx, out)
    return out


def _publish(ctx: BusContext, messages: list[dict[str, Any]]) -> None:
    if not messages:
        return
    try:
        producer = ctx.producer
        for m in messages:
            producer.produce(
                ctx.topics.incidents,
                json.dumps(m, default=str).encode(),
                key=str(m["id"]).encode(),
                headers=[("content-type", b"application/json")],
            )
        producer.poll(0)
    except Exception:  # the incident is in the store; monitoring catches up from GET /v1/incidents
        log.warning(
            "could not publish %d incident update(s) to %s",
            len(messages),
            ctx.topics.incidents,
            exc_info=True,
        )


# --- queries --------------------------------------------------------------------------------------------
def resolve(ctx: BusContext, incident_id: int, actor: str, note: str) -> dict[str, Any] | None:
    """Close an incident as handled (audited); None when it does not exist."""
    with ctx.store.session() as s:
        row = s.get(Incident, incident_id, with_for_update=True)
        if row is None:
            return None
        if row.status != "resolved":
            row.status = "resolved"
            row.evidence = {
                **(row.evidence or {}),
                "resolution": {"by": actor, "note": note, "at": datetime.now(UTC).isoformat()},
            }
            audit.append(s, actor, "incident.resolved", "incident", str(row.id), {"note": note})
        result = {"event": "resolved", **incident_json(row)}
    _publish(ctx, [result])
    return result
