"""R15: violations open or update incidents; monitoring systems follow them on ``bus.incidents``.

The validator, the router and the gateway call ``record_violations`` once per batch. Violations of one
agency, of one kind, on one dataset are grouped into one open incident while they keep coming (each
arrives within ``window_seconds`` of the previous one): its count grows and its evidence (record ids,
trace ids, codes, grants, a few details) is kept up to a cap, instead of one incident per record.

Two anomalies are detected from per-minute counters in Redis (thresholds in ``IncidentPolicy``, built
from the ``BUS_INCIDENT_*`` settings by ``IncidentPolicy.from_settings``):

* a **bad-signature burst**: at least ``burst_bad_signatures`` unauthenticated records from one agency
  in the current and previous minute together;
* a **sudden rise in refusals**: an agency's refusals in the current minute reach both
  ``spike_min_refusals`` and ``spike_factor`` times its average over the ``baseline_minutes`` before.

Opening an incident is an audit event (hash chain). Each incident is published as JSON (shape in
``schemas/incident.avsc``) to ``<prefix>bus.incidents`` when it opens and when its count reaches a power
of two, so a flood yields a handful of messages.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from bus.context import BusContext
from bus.lineage import audit
from bus.settings import Settings
from bus.store.models import Incident

log = logging.getLogger(__name__)

# kind -> severity (critical > high > medium > low)
SEVERITY = {
    "forwarding": "critical",
    "forged_delivery": "critical",  # records on a deliver.<grant> topic that the bus did not seal there
    "recollection": "high",
    "egress": "high",
    "bad_signature_burst": "high",
    "refusal_spike": "high",
    "broker_lost": "critical",  # the broker came back without its topics (bus.exchange.broker_identity)
    "access_refused": "medium",
    "violation": "medium",
    "suspended": "low",
    "bad_signature": "low",
    "record_refused": "low",
}
SEVERITIES = ("low", "medium", "high", "critical")
_CODE_KIND = {
    "forwarding.detected": "forwarding",
    "recollection.detected": "recollection",
    "recollection.overlap": "recollection",
    "egress.refused": "egress",
    "record.unauthenticated": "bad_signature",
    "suspended": "suspended",
}
_CODE_PREFIX_KIND = (
    ("auth.", "access_refused"),
    ("sharing.", "access_refused"),
    ("grant.", "access_refused"),
    ("dataset.", "access_refused"),
    ("record.", "record_refused"),
)
_LOCK = threading.Lock()  # serialises grouping inside one process; the store lock covers processes


@dataclass(frozen=True)
class IncidentPolicy:
    """Grouping and anomaly thresholds."""

    window_seconds: float = 600.0
    evidence_cap: int = 50
    details_cap: int = 10
    burst_bad_signatures: int = 20
    spike_min_refusals: int = 50
    spike_factor: float = 5.0
    baseline_minutes: int = 10

    @classmethod
    def from_settings(cls, settings: Settings) -> IncidentPolicy:
        """The policy a running bus uses: window and thresholds from ``BUS_INCIDENT_*``."""
        return cls(
            window_seconds=settings.incident_window_seconds,
            burst_bad_signatures=settings.incident_signature_burst,
            spike_min_refusals=settings.incident_refusal_rise,
            spike_factor=settings.incident_refusal_rise_factor,
        )


DEFAULT_POLICY = IncidentPolicy()  # the documented defaults (Settings uses the same values)


def policy_for(ctx: BusContext) -> IncidentPolicy:
    settings = getattr(ctx, "settings", None)
    return IncidentPolicy.from_settings(settings) if settings is not None else DEFAULT_POLICY


def kind_for(code: str | None) -> str:
    """The incident kind of an error code (callers may also name the kind themselves)."""
    if not code:
        return "violation"
    if code in _CODE_KIND:
        return _CODE_KIND[code]
    for prefix, kind in _CODE_PREFIX_KIND:
        if code.startswith(prefix):
            return kind
    return "violation"


def severity_of(kind: str) -> str:
    return SEVERITY.get(kind, "medium")


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


def _normalise(v: Mapping[str, Any]) -> dict[str, Any]:
    code = v.get("code")
    kind = v.get("kind")
    if kind not in SEVERITY:  # no kind, or an error code given as the kind: classify by code
        mapped = kind_for(code or kind)
        kind = mapped if mapped != "violation" or not kind else kind
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


# --- anomalies (Redis counters) -------------------------------------------------------------------------
def _rate_key(ctx: BusContext, what: str, agency: str, minute: int) -> str:
    return ctx.rkey("incident-rate", what, agency, str(minute))


def _anomalies(
    ctx: BusContext, items: list[dict[str, Any]], policy: IncidentPolicy, now: datetime
) -> list[dict[str, Any]]:
    """Count refusals and bad signatures per agency and minute; return burst / spike violations."""
    minute = int(now.timestamp() // 60)
    refusals: dict[str, int] = {}
    bad: dict[str, int] = {}
    for it in items:
        agency = it["agency_id"] or "-"
        refusals[agency] = refusals.get(agency, 0) + it["count"]
        if it["kind"] == "bad_signature":
            bad[agency] = bad.get(agency, 0) + it["count"]
    ttl = (policy.baseline_minutes + 2) * 60
    pipe = ctx.redis.pipeline(transaction=False)
    for agency, n in refusals.items():
        pipe.incrby(_rate_key(ctx, "refused", agency, minute), n)
        pipe.expire(_rate_key(ctx, "refused", agency, minute), ttl)
        pipe.mget(
            [_rate_key(ctx, "refused", agency, minute - k) for k in range(1, policy.baseline_minutes + 1)]
        )
    for agency, n in bad.items():
        pipe.incrby(_rate_key(ctx, "badsig", agency, minute), n)
        pipe.expire(_rate_key(ctx, "badsig", agency, minute), ttl)
        pipe.get(_rate_key(ctx, "badsig", agency, minute - 1))
    replies = iter(pipe.execute())
    found: list[dict[str, Any]] = []
    for agency in refusals:
        current, _, before = next(replies), next(replies), next(replies)
        baseline = sum(int(b) for b in before if b) / policy.baseline_minutes
        if current >= policy.spike_min_refusals and current >= policy.spike_factor * baseline:
            found.append(
                {
                    "kind": "refusal_spike",
                    "code": None,
                    "agency_id": None if agency == "-" else agency,
                    "dataset_id": None,
                    "grant_id": None,
                    "record_ids": [],
                    "trace_ids": [],
                    "count": 1,
                    "detail": f"{current} refusals this minute against an average of {baseline:.1f} "
                    f"over the {policy.baseline_minutes} minutes before",
                }
            )
    for agency in bad:
        current, _, previous = next(replies), next(replies), next(replies)
        total = int(current) + int(previous or 0)
        if total >= policy.burst_bad_signatures:
            found.append(
                {
                    "kind": "bad_signature_burst",
                    "code": "record.unauthenticated",
                    "agency_id": None if agency == "-" else agency,
                    "dataset_id": None,
                    "grant_id": None,
                    "record_ids": [],
                    "trace_ids": [],
                    "count": 1,
                    "detail": f"{total} records with a bad signature in two minutes: a wrong key, a "
                    "forger or tampering on the way",
                }
            )
    return found


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
    old: Mapping[str, Any], group: list[dict[str, Any]], policy: IncidentPolicy
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
    violations: list[dict[str, Any]],
    *,
    policy: IncidentPolicy | None = None,
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """Each violation: ``{kind, code, agency_id, dataset_id, grant_id, record_ids, trace_ids, detail}``
    (``kind`` may be left out: it follows from ``code``; ``count`` defaults to the number of record ids).

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
        items.extend(_anomalies(ctx, items, policy, now))
    except Exception:  # counters are an extra; never lose the incident itself because Redis hiccupped
        log.warning("incident rate counters unavailable; burst and spike detection skipped", exc_info=True)
    groups: dict[tuple[str | None, str, str | None], list[dict[str, Any]]] = {}
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
