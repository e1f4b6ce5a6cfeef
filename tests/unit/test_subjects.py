"""R14/R12: the keyed subject index (bus.lineage.subjects.subject_keys) is a pure function of the
catalogue fields, the record and the master secret; it keeps identifiers only, keyed, never raw."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bus.catalog.schema import FieldSpec, catalog_fields
from bus.lineage.subjects import SubjectKey, normalise, semantic_key, subject_keys
from bus.vocab import Sensitivity
from tests.helpers import licence_record, licence_schema

SECRET = bytes(range(32))
OTHER = bytes(range(1, 33))


def spec(name: str, semantic: str | None) -> FieldSpec:
    return FieldSpec(name=name, type="string", sensitivity=Sensitivity.PUBLIC, semantic=semantic)


def test_r14_licence_record_is_keyed_on_its_three_identifiers_only() -> None:
    keys = subject_keys(catalog_fields(licence_schema()), licence_record(3), SECRET)
    assert [k.semantic for k in keys] == ["licence.number", "enterprise.credit_code", "person.id_number"]
    assert all(len(k.key) == 64 and int(k.key, 16) >= 0 for k in keys)


@pytest.mark.parametrize(
    ("semantic", "indexed"),
    [
        ("person.id_number", True),
        ("enterprise.credit_code", True),
        ("licence.number", True),
        ("vehicle.no", True),
        ("account.uid", True),
        ("clinic.id", True),
        ("person.name", False),
        ("person.phone", False),
        ("enterprise.address", False),
        (None, False),
    ],
)
def test_r12_only_identifier_semantics_are_indexed(semantic: str | None, indexed: bool) -> None:
    keys = subject_keys([spec("f", semantic)], {"f": "X123"}, SECRET)
    assert bool(keys) is indexed


@pytest.mark.parametrize("value", [None, "", "   ", {"a": 1}, ["x"], b"raw", True])
def test_r12_empty_and_structured_values_identify_no_one(value: Any) -> None:
    assert subject_keys([spec("f", "person.id_number")], {"f": value}, SECRET) == []


def test_r12_missing_field_is_skipped() -> None:
    assert subject_keys([spec("f", "person.id_number")], {}, SECRET) == []


@pytest.mark.parametrize(
    ("a", "b"),
    [("11010519491231002x", "11010519491231002X"), (" LIC1 ", "LIC1"), ("ＬＩＣ１", "LIC1"), (42, "42")],
)
def test_r14_equal_after_normalising_gives_the_same_key(a: Any, b: Any) -> None:
    assert semantic_key(SECRET, "person.id_number", a) == semantic_key(SECRET, "person.id_number", b)


def test_r14_the_key_depends_on_the_semantic_and_the_secret() -> None:
    base = semantic_key(SECRET, "person.id_number", "X1")
    assert semantic_key(SECRET, "enterprise.credit_code", "X1") != base
    assert semantic_key(OTHER, "person.id_number", "X1") != base
    assert semantic_key(SECRET, "person.id_number", "X2") != base


def test_r14_two_fields_of_one_semantic_with_one_value_give_one_key() -> None:
    fields = [spec("a", "person.id_number"), spec("b", "person.id_number")]
    keys = subject_keys(fields, {"a": "P1", "b": "p1"}, SECRET)
    assert keys == [SubjectKey("person.id_number", semantic_key(SECRET, "person.id_number", "P1"))]


@given(st.text(min_size=1, max_size=40).filter(lambda v: normalise(v) != ""))
def test_r12_the_index_never_holds_the_value(value: str) -> None:
    """Hypothesis: whatever the value, what is stored is a fixed-size HMAC-SHA256 hex digest (no length,
    no characters of the value), and the same value always gives the same key."""
    (k,) = subject_keys([spec("f", "person.id_number")], {"f": value}, SECRET)
    assert len(k.key) == 64 and set(k.key) <= set("0123456789abcdef")
    assert k.key == semantic_key(SECRET, "person.id_number", value)
    assert subject_keys([spec("f", "person.id_number")], {"f": value}, SECRET) == [k]
