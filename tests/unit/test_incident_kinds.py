"""R15: every error code maps to one incident kind of ``bus.vocab.IncidentKind``, every kind to a severity."""

from __future__ import annotations

import pytest

from bus.errors import all_codes
from bus.lineage.incidents import SEVERITIES, SEVERITY, _normalise, kind_for, severity_of
from bus.vocab import IncidentKind, Severity, ViolationKind


@pytest.mark.parametrize(
    ("code", "kind", "severity"),
    [
        ("forwarding.detected", IncidentKind.FORWARDING, Severity.CRITICAL),
        ("recollection.detected", IncidentKind.RECOLLECTION, Severity.HIGH),
        ("recollection.overlap", IncidentKind.RECOLLECTION, Severity.HIGH),
        ("egress.refused", IncidentKind.EGRESS, Severity.HIGH),
        ("record.unauthenticated", IncidentKind.BAD_SIGNATURE, Severity.LOW),
        ("suspended", IncidentKind.SUSPENDED, Severity.LOW),
        ("auth.forbidden", IncidentKind.ACCESS_REFUSED, Severity.MEDIUM),
        ("sharing.not_eligible", IncidentKind.ACCESS_REFUSED, Severity.MEDIUM),
        ("grant.not_active", IncidentKind.ACCESS_REFUSED, Severity.MEDIUM),
        ("dataset.not_approved", IncidentKind.ACCESS_REFUSED, Severity.MEDIUM),
        ("record.invalid", IncidentKind.RECORD_REFUSED, Severity.LOW),
        ("something.else", IncidentKind.VIOLATION, Severity.MEDIUM),
        (None, IncidentKind.VIOLATION, Severity.MEDIUM),
    ],
)
def test_r15_codes_classify_into_kinds_and_severities(
    code: str | None, kind: IncidentKind, severity: Severity
) -> None:
    assert kind_for(code) is kind and severity_of(kind) is severity


def test_r15_every_kind_has_a_severity_and_every_code_a_kind() -> None:
    assert set(SEVERITY) == set(IncidentKind)
    assert {kind_for(k) for k in ViolationKind} <= set(IncidentKind)
    assert list(SEVERITIES) == [Severity.LOW, Severity.MEDIUM, Severity.HIGH, Severity.CRITICAL]
    assert {kind_for(c) for c in all_codes()} <= set(IncidentKind)


@pytest.mark.parametrize(
    ("given", "kind", "grant", "count"),
    [
        ({"code": "record.invalid", "record_ids": ["a", "b"]}, "record_refused", None, 2),
        ({"kind": "forwarding.detected", "grant": "g1"}, "forwarding", "g1", 1),  # a code given as kind
        ({"kind": "refusal_spike", "count": 7}, "refusal_spike", None, 7),
        ({"kind": "custom", "code": "x.y"}, "custom", None, 1),  # a caller's own kind is kept
    ],
)
def test_r15_violations_are_normalised_with_todays_keys(
    given: dict[str, object], kind: str, grant: str | None, count: int
) -> None:
    item = _normalise(given)
    assert (item["kind"], item["grant_id"], item["count"]) == (kind, grant, count)
