"""R3, R5, R6: the sharing declaration of a catalogue entry, rule by rule (pure validation)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bus.catalog.schema import catalog_fields
from bus.catalog.sharing import sharing_problems, validate_sharing
from bus.errors import BusError
from bus.vocab import Grade, SharingAttribute
from tests.helpers import licence_schema

FIELDS = catalog_fields(licence_schema())
ALL = [f.name for f in FIELDS]
U, C, N = SharingAttribute.UNCONDITIONAL, SharingAttribute.CONDITIONAL, SharingAttribute.NONE
G, IMP, K = Grade.GENERAL, Grade.IMPORTANT, Grade.CORE
R, L = "protects personal data", "Personal Information Protection Law Art. 13"

# (rule, case, grade, attribute, reason, legal_basis, shareable_fields, eligible_agencies, expected code)
TABLE: list[tuple[str, str, Grade, SharingAttribute, Any, Any, Any, Any, str | None]] = [
    ("r5", "unconditional general entry", G, U, None, None, None, None, None),
    ("r5", "unconditional important entry", IMP, U, None, None, None, None, None),
    ("r5", "unconditional listing every field", G, U, None, None, ALL, None, None),
    ("r5", "conditional with shareable fields", G, C, R, L, ["licence_no", "status"], None, None),
    ("r5", "conditional with eligible agencies", IMP, C, R, L, None, ["psb"], None),
    ("r5", "conditional core with both", K, C, R, L, ["licence_no"], ["psb"], None),
    ("r5", "not shared core entry", K, N, R, L, None, None, None),
    ("r6", "conditional without reason", G, C, None, L, ["status"], None, "catalog.reason_required"),
    ("r6", "conditional without legal basis", G, C, R, None, ["status"], None, "catalog.reason_required"),
    ("r6", "conditional with blank reason", G, C, "   ", L, ["status"], None, "catalog.reason_required"),
    ("r6", "not shared without reason", G, N, None, L, None, None, "catalog.reason_required"),
    ("r6", "not shared without legal basis", G, N, R, "", None, None, "catalog.reason_required"),
    ("r6", "not shared without either", K, N, None, None, None, None, "catalog.reason_required"),
    ("r3", "core unconditional", K, U, None, None, None, None, "catalog.core_not_unconditional"),
    ("r3", "core unconditional even with reasons", K, U, R, L, None, None, "catalog.core_not_unconditional"),
    ("r5", "conditional without conditions", G, C, R, L, None, None, "catalog.conditions_required"),
    ("r5", "conditional with empty lists", G, C, R, L, [], [], "catalog.conditions_required"),
    (
        "r5",
        "unconditional with a field subset",
        G,
        U,
        None,
        None,
        ["status"],
        None,
        "catalog.invalid_sharing",
    ),
    (
        "r5",
        "unconditional with eligible agencies",
        G,
        U,
        None,
        None,
        None,
        ["psb"],
        "catalog.invalid_sharing",
    ),
    ("r5", "not shared with shareable fields", G, N, R, L, ["status"], None, "catalog.invalid_sharing"),
    ("r5", "not shared with eligible agencies", G, N, R, L, None, ["psb"], "catalog.invalid_sharing"),
    ("r5", "shareable field not in schema", G, C, R, L, ["status", "salary"], None, "catalog.unknown_field"),
]


@pytest.mark.parametrize(
    ("rule", "case", "grade", "attribute", "reason", "legal", "fields", "agencies", "code"),
    TABLE,
    ids=[f"{t[0]}-{t[1]}" for t in TABLE],
)
def test_r6_r5_r3_sharing_rules(
    rule: str,
    case: str,
    grade: Grade,
    attribute: SharingAttribute,
    reason: Any,
    legal: Any,
    fields: Any,
    agencies: Any,
    code: str | None,
) -> None:
    if code is None:
        sharing = validate_sharing(grade, attribute, reason, legal, fields, agencies, FIELDS)
        assert sharing.attribute is attribute
        return
    with pytest.raises(BusError) as err:
        validate_sharing(grade, attribute, reason, legal, fields, agencies, FIELDS)
    assert err.value.code == code
    assert err.value.status == 422
    assert err.value.extra["errors"][0]["code"] == code
    assert err.value.detail  # tells the caller what to fix


def test_r6_refusal_names_both_missing_parts() -> None:
    with pytest.raises(BusError) as err:
        validate_sharing(G, N, None, None, None, None, FIELDS)
    assert "sharing.reason and sharing.legal_basis" in err.value.detail


def test_r5_unknown_field_refusal_lists_the_schema_fields() -> None:
    with pytest.raises(BusError) as err:
        validate_sharing(G, C, R, L, ["salary"], None, FIELDS)
    assert "'salary'" in err.value.detail and "licence_no" in err.value.detail


def test_r3_r6_every_problem_is_reported_at_once() -> None:
    problems = sharing_problems(K, U, None, None, ["salary"], ["psb"], FIELDS)
    assert [p["code"] for _, p in problems] == [
        "catalog.core_not_unconditional",
        "catalog.invalid_sharing",
        "catalog.invalid_sharing",
        "catalog.unknown_field",
    ]


def test_r5_normalisation_trims_dedupes_and_drops_the_full_field_list() -> None:
    s = validate_sharing(G, C, f"  {R} ", L, ["status", "status", " licence_no "], ["psb", "psb"], FIELDS)
    assert s.reason == R and s.shareable_fields == ["status", "licence_no"] and s.eligible_agencies == ["psb"]
    assert validate_sharing(G, U, None, None, ALL, None, FIELDS).shareable_fields is None
    assert s.to_json()["attribute"] == "conditional"


texts = st.none() | st.text(max_size=5)
lists = st.none() | st.lists(st.sampled_from([*ALL[:3], "nope", " ", ""]), max_size=4)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(list(Grade)),
    st.sampled_from(list(SharingAttribute)),
    texts,
    texts,
    lists,
    st.none() | st.lists(st.sampled_from(["psb", "health", ""]), max_size=3),
)
def test_r5_r6_any_declaration_is_valid_or_refused_with_a_catalogue_code(
    grade: Grade, attr: SharingAttribute, reason: Any, legal: Any, fields: Any, agencies: Any
) -> None:
    try:
        s = validate_sharing(grade, attr, reason, legal, fields, agencies, FIELDS)
    except BusError as exc:
        assert exc.code.startswith("catalog.") and exc.status == 422
        return
    assert not (grade is K and s.attribute is U)
    if s.attribute is not U:
        assert s.reason and s.legal_basis
    assert set(s.shareable_fields or []) <= set(ALL)
