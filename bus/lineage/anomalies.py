"""R15 anomalies the bus detects from its own per-minute counters in Redis, and the incident thresholds.

* a **bad-signature burst**: at least ``burst_bad_signatures`` unauthenticated records from one agency
  in the current and previous minute together;
* a **sudden rise in refusals**: an agency's refusals in the current minute reach both
  ``spike_min_refusals`` and ``spike_factor`` times its average over the ``baseline_minutes`` before.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from bus.context import BusContext
from bus.lineage.rows import RecordedViolation
from bus.settings import Settings
from bus.vocab import IncidentKind

K = IncidentKind


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


def _rate_key(ctx: BusContext, what: str, agency: str, minute: int) -> str:
    return ctx.rkey("incident-rate", what, agency, str(minute))


def _anomaly(kind: IncidentKind, code: str | None, agency: str, detail: str) -> RecordedViolation:
    return {
        "kind": kind,
        "code": code,
        "agency_id": None if agency == "-" else agency,
        "dataset_id": None,
        "grant_id": None,
        "record_ids": [],
        "trace_ids": [],
        "count": 1,
        "detail": detail,
    }


def detect_anomalies(
    ctx: BusContext, items: list[RecordedViolation], policy: IncidentPolicy, now: datetime
) -> list[RecordedViolation]:
    """Count refusals and bad signatures per agency and minute; return burst / spike violations."""
    minute = int(now.timestamp() // 60)
    refusals: dict[str, int] = {}
    bad: dict[str, int] = {}
    for it in items:
        agency = it["agency_id"] or "-"
        refusals[agency] = refusals.get(agency, 0) + it["count"]
        if it["kind"] == K.BAD_SIGNATURE:
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
    found: list[RecordedViolation] = []
    for agency in refusals:
        current, _, before = next(replies), next(replies), next(replies)
        baseline = sum(int(b) for b in before if b) / policy.baseline_minutes
        if current >= policy.spike_min_refusals and current >= policy.spike_factor * baseline:
            detail = (
                f"{current} refusals this minute against an average of {baseline:.1f} "
                f"over the {policy.baseline_minutes} minutes before"
            )
            found.append(_anomaly(K.REFUSAL_SPIKE, None, agency, detail))
    for agency in bad:
        current, _, previous = next(replies), next(replies), next(replies)
        total = int(current) + int(previous or 0)
        if total >= policy.burst_bad_signatures:
            detail = (
                f"{total} records with a bad signature in two minutes: a wrong key, a "
                "forger or tampering on the way"
            )
            found.append(_anomaly(K.BAD_SIGNATURE_BURST, "record.unauthenticated", agency, detail))
    return found
