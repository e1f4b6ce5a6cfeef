"""R5, R7, R10, R12, R13: the grant decision and the grant lifecycle, exhaustively (pure code)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bus.errors import (
    AuthForbidden,
    BadState,
    BusError,
    DatasetNotApproved,
    FieldsNotShareable,
    GrantNotActive,
    LegalBasisRequired,
    NotEligible,
    NotShared,
    RequestInvalid,
    ScenarioRequired,
    Suspended,
)
from bus.policy.decision import (
    DatasetFacts,
    GrantRequest,
    check_readable,
    decide,
    deliverable,
    transition,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
FIELDS = ("licence_no", "enterprise_name", "legal_rep_name", "legal_rep_id", "phone")


def ds(**kw) -> DatasetFacts:
    base = {"id": "market-licences", "owner_id": "market", "status": "approved", "attribute": "unconditional",
            "fields": FIELDS}
    base.update(kw)
    return DatasetFacts(**base)


def req(**kw) -> GrantRequest:
    base = {"requester_id": "psb", "dataset_id": "market-licences", "fields": ["licence_no", "phone"],
            "scenario_code": "license-check", "scenario_description": "verify licences during inspections",
            "legal_basis": "Market Regulation Law art. 12", "valid_until": NOW + timedelta(days=30)}
    base.update(kw)
    return GrantRequest(**base)


REFUSALS = [
    # (rule, request overrides, dataset overrides, expected error)
    ("R7 no scenario code", {"scenario_code": None}, {}, ScenarioRequired),
    ("R7 blank scenario code", {"scenario_code": "  "}, {}, ScenarioRequired),
    ("R7 no scenario description", {"scenario_description": ""}, {}, ScenarioRequired),
    ("R7 overlong scenario code", {"scenario_code": "x" * 65}, {}, RequestInvalid),
    ("R7 no legal basis", {"legal_basis": None}, {}, LegalBasisRequired),
    ("R7 blank legal basis", {"legal_basis": " \t"}, {}, LegalBasisRequired),
    ("R13 draft dataset", {}, {"status": "draft"}, DatasetNotApproved),
    ("R13 submitted dataset", {}, {"status": "submitted"}, DatasetNotApproved),
    ("R13 retired dataset", {}, {"status": "retired"}, DatasetNotApproved),
    ("R15 suspended dataset", {}, {"suspended": True}, Suspended),
    ("R5 not shared", {}, {"attribute": "none"}, NotShared),
    ("R5 conditional, not eligible", {}, {"attribute": "conditional", "eligible_agencies": ["tax"]},
     NotEligible),
    ("R5 conditional, field outside shareable set", {"fields": ["licence_no", "legal_rep_id"]},
     {"attribute": "conditional", "shareable_fields": ["licence_no", "phone"]}, FieldsNotShareable),
    ("R5 unknown field", {"fields": ["licence_no", "no_such_field"]}, {}, FieldsNotShareable),
    ("R7 no fields", {"fields": []}, {}, RequestInvalid),
    ("R12 unmasked field not requested", {"unmasked_fields": ["legal_rep_id"]}, {}, RequestInvalid),
    ("valid_until in the past", {"valid_until": NOW - timedelta(seconds=1)}, {}, RequestInvalid),
    ("valid_until now", {"valid_until": NOW}, {}, RequestInvalid),
]


@pytest.mark.parametrize(("rule", "r", "d", "error"), REFUSALS, ids=[row[0] for row in REFUSALS])
def test_refusals_carry_their_stable_code(rule: str, r: dict, d: dict, error: type[BusError]) -> None:
    with pytest.raises(error) as info:
        decide(req(**r), ds(**d), NOW)
    assert info.value.code == error.code
    assert info.value.detail  # actionable text, never empty


OUTCOMES = [
    ("R10 unconditional grants at once", {}, {}, "active"),
    ("R10 conditional waits for the owner", {}, {"attribute": "conditional"}, "pending"),
    ("R10 conditional eligible waits for the owner", {},
     {"attribute": "conditional", "eligible_agencies": ["psb"]}, "pending"),
    ("R5 conditional inside the shareable set", {"fields": ["phone"]},
     {"attribute": "conditional", "shareable_fields": ["phone", "licence_no"]}, "pending"),
    ("R12 unmasked fields always need the owner",
     {"fields": ["legal_rep_id"], "unmasked_fields": ["legal_rep_id"]}, {}, "pending"),
]


@pytest.mark.parametrize(("rule", "r", "d", "status"), OUTCOMES, ids=[row[0] for row in OUTCOMES])
def test_outcomes(rule: str, r: dict, d: dict, status: str) -> None:
    assert decide(req(**r), ds(**d), NOW).status == status


def test_r7_fields_are_normalised_to_schema_order_without_duplicates() -> None:
    d = decide(req(fields=["phone", "licence_no", "phone"]), ds(), NOW)
    assert d.fields == ("licence_no", "phone")


def test_valid_until_defaults_to_one_year() -> None:
    assert decide(req(valid_until=None), ds(), NOW).valid_until == NOW + timedelta(days=365)


field_lists = st.lists(st.sampled_from(FIELDS + ("ghost",)), max_size=7)


@given(requested=field_lists, shareable=st.lists(st.sampled_from(FIELDS), max_size=5),
       eligible=st.lists(st.sampled_from(["psb", "tax", "health"]), max_size=3),
       attribute=st.sampled_from(["unconditional", "conditional", "none"]),
       unmasked=st.lists(st.sampled_from(FIELDS), max_size=3))
def test_r5_r10_a_grant_never_exceeds_what_the_dataset_shares(requested: list[str], shareable: list[str],
                                                               eligible: list[str], attribute: str,
                                                               unmasked: list[str]) -> None:
    """Whatever is asked, a grant that is not refused names only shareable fields, only for eligible agencies,
    is active only for unconditional data without raw values, and never for not-shared data."""
    facts = ds(attribute=attribute, shareable_fields=shareable or None, eligible_agencies=eligible or None)
    try:
        d = decide(req(fields=requested, unmasked_fields=unmasked), facts, NOW)
    except BusError:
        return
    assert attribute != "none"
    allowed = set(shareable) if attribute == "conditional" and shareable else set(FIELDS)
    assert set(d.fields) <= allowed and set(d.fields) == set(requested)
    assert set(d.unmasked_fields) <= set(d.fields)
    if attribute == "conditional" and eligible:
        assert "psb" in eligible
    assert (d.status == "active") == (attribute == "unconditional" and not d.unmasked_fields)


TRANSITIONS = [
    # status, action, actor, admin, expected (status or error)
    ("pending", "approve", "market", False, "active"),
    ("pending", "deny", "market", False, "denied"),
    ("pending", "approve", "psb", False, AuthForbidden),
    ("pending", "approve", "admin", True, AuthForbidden),
    ("active", "approve", "market", False, BadState),
    ("denied", "approve", "market", False, BadState),
    ("active", "deny", "market", False, BadState),
    ("active", "revoke", "market", False, "revoked"),
    ("active", "revoke", "admin", True, "revoked"),
    ("pending", "revoke", "market", False, "revoked"),
    ("suspended", "revoke", "market", False, "revoked"),
    ("active", "revoke", "psb", False, AuthForbidden),
    ("revoked", "revoke", "market", False, BadState),
    ("expired", "revoke", "market", False, BadState),
    ("denied", "revoke", "market", False, BadState),
    ("active", "expire", "market", False, "expired"),
    ("revoked", "expire", "market", False, BadState),
    ("active", "transfer", "market", False, RequestInvalid),
]


@pytest.mark.parametrize(("status", "action", "actor", "admin", "expected"), TRANSITIONS)
def test_r10_lifecycle_transitions(status: str, action: str, actor: str, admin: bool, expected) -> None:
    if isinstance(expected, str):
        assert transition(status, action, actor_id=actor, owner_id="market", is_admin=admin) == expected
    else:
        with pytest.raises(expected):
            transition(status, action, actor_id=actor, owner_id="market", is_admin=admin)


READABLE = [
    ("active", None, {}, None),
    ("active", NOW + timedelta(seconds=1), {}, None),
    ("active", NOW, {}, GrantNotActive),
    ("pending", None, {}, GrantNotActive),
    ("denied", None, {}, GrantNotActive),
    ("revoked", None, {}, GrantNotActive),
    ("expired", None, {}, GrantNotActive),
    ("suspended", None, {}, Suspended),
    ("active", None, {"grantee_suspended": True}, Suspended),
    ("active", None, {"dataset_suspended": True}, Suspended),
    ("active", None, {"owner_suspended": True}, Suspended),
    ("active", None, {"dataset_status": "retired"}, GrantNotActive),
    ("suspended", None, {"dataset_status": "retired"}, Suspended),
]


@pytest.mark.parametrize(("status", "until", "flags", "error"), READABLE)
def test_r14_only_an_active_unsuspended_unexpired_grant_is_readable(status, until, flags, error) -> None:
    if error is None:
        check_readable(status, until, NOW, **flags)
    else:
        with pytest.raises(error):
            check_readable(status, until, NOW, **flags)
    assert deliverable(status, until, NOW, **flags) == (error is None)
