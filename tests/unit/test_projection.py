"""R7, R8, R12: granted fields only, personal fields masked, sensitive fields pseudonymised per grant."""

from __future__ import annotations

import io

import fastavro
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bus.policy.projection import (
    MASK,
    PSEUDONYM,
    RAW,
    compile_projector,
    compile_view_encoder,
    field_rules,
    mask_personal,
    shared_view,
    strip_logical_types,
    view_schema,
)
from bus.policy.pseudonyms import grant_key, grant_tag, parse_pseudonym, pseudonym
from tests.helpers import licence_record, licence_schema

MASTER = bytes(range(32))
ALL = [f["name"] for f in licence_schema()["fields"]]


def projector(grant: str, fields=ALL, unmasked=()):
    rules = field_rules(licence_schema(), fields, unmasked)
    return compile_projector(rules, grant_key(MASTER, grant), grant_tag(MASTER, grant)), rules


def roundtrip(schema: dict, value: dict) -> dict:
    parsed = fastavro.parse_schema(schema)
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, parsed, value)
    return fastavro.schemaless_reader(io.BytesIO(buf.getvalue()), parsed)


MASKS = [
    ("13900001234", "*******1234"),
    ("Zhang San 5", "*******an 5"),
    ("abcdefgh", "****efgh"),
    ("abcd", "**cd"),
    ("abc", "**c"),
    ("ab", "*b"),
    ("a", "*"),
    ("", ""),
    ("张三丰先生", "***先生"),
]


@pytest.mark.parametrize(("raw", "masked"), MASKS)
def test_r12_personal_strings_keep_at_most_their_last_four_characters(raw: str, masked: str) -> None:
    assert mask_personal(raw) == masked


@given(st.text())
def test_r12_masking_never_reveals_more_than_four_characters_or_half(text: str) -> None:
    m = mask_personal(text)
    hidden = len(text) - min(4, len(text) // 2)
    assert len(m) == len(text)
    assert m[:hidden] == "*" * hidden  # everything but the kept tail is hidden
    assert m[hidden:] == text[hidden:]
    assert len(text) - hidden <= 4 and len(text) - hidden <= len(text) // 2


RULES = [
    ("licence_no", RAW), ("credit_code", RAW), ("enterprise_name", RAW), ("legal_rep_name", MASK),
    ("legal_rep_id", PSEUDONYM), ("phone", MASK), ("address", RAW), ("registered_capital", RAW),
]


@pytest.mark.parametrize(("field", "how"), RULES)
def test_r12_each_sensitivity_gets_its_rule(field: str, how: str) -> None:
    rules = {r.name: r.how for r in field_rules(licence_schema(), ALL)}
    assert rules[field] == how


def test_r12_unmasked_fields_of_an_approved_grant_are_raw() -> None:
    project, _ = projector("g1", unmasked=["legal_rep_id", "phone"])
    rec = licence_record(7)
    out = project(rec)
    assert out["legal_rep_id"] == rec["legal_rep_id"] and out["phone"] == rec["phone"]
    assert out["legal_rep_name"] != rec["legal_rep_name"]


@given(st.sets(st.sampled_from(ALL)), st.integers(min_value=0, max_value=10**6))
def test_r7_no_field_outside_the_grant_appears_in_the_view_or_its_schema(fields: set[str], i: int) -> None:
    project, rules = projector("g1", fields=sorted(fields))
    out = project(licence_record(i))
    assert set(out) == fields
    schema = view_schema(licence_schema(), rules, "g1")
    assert {f["name"] for f in schema["fields"]} == fields
    assert roundtrip(schema, out) == out


def test_r12_personal_non_strings_are_dropped_from_the_view() -> None:
    schema = {"type": "record", "name": "P", "fields": [
        {"name": "id", "type": "string", "sensitivity": "public"},
        {"name": "age", "type": "int", "sensitivity": "personal"},
        {"name": "nick", "type": ["null", "string"], "sensitivity": "personal"},
        {"name": "secret_no", "type": ["null", "long"], "sensitivity": "sensitive"},
    ]}
    rules = field_rules(schema, ["id", "age", "nick", "secret_no"])
    assert [(r.name, r.how) for r in rules] == [("id", RAW), ("nick", MASK), ("secret_no", PSEUDONYM)]
    view = view_schema(schema, rules, "g9")
    project = compile_projector(rules, grant_key(MASTER, "g9"), grant_tag(MASTER, "g9"))
    out = project({"id": "x", "age": 40, "nick": None, "secret_no": 123456})
    assert out["nick"] is None and "age" not in out
    assert parse_pseudonym(out["secret_no"])
    assert roundtrip(view, out) == out
    again = project({"id": "x", "age": 1, "nick": "Lily", "secret_no": None})
    assert roundtrip(view, again)["nick"] == "**ly"


@given(st.text(min_size=1), st.text(min_size=1))
def test_r8_r12_pseudonyms_stable_within_a_grant_different_across_grants(value: str, other: str) -> None:
    p1, _ = projector("grant-a", fields=["legal_rep_id"])
    p2, _ = projector("grant-b", fields=["legal_rep_id"])
    a1 = p1({"legal_rep_id": value})["legal_rep_id"]
    assert a1 == p1({"legal_rep_id": value})["legal_rep_id"]
    assert a1 != p2({"legal_rep_id": value})["legal_rep_id"]
    assert parse_pseudonym(a1) is not None
    # the compiled projector is exactly the shared pseudonym scheme (leak attribution relies on it)
    assert a1 == pseudonym(grant_key(MASTER, "grant-a"), grant_tag(MASTER, "grant-a"), value)
    if other != value:
        assert a1 != p1({"legal_rep_id": other})["legal_rep_id"]


def test_r12_pseudonyms_do_not_contain_the_value() -> None:
    project, _ = projector("g1")
    rec = licence_record(42)
    out = project(rec)
    assert rec["legal_rep_id"] not in str(out) and rec["legal_rep_id"][-4:] not in out["legal_rep_id"]
    assert out["phone"] == "*******0042" and rec["legal_rep_name"][:5] not in out["legal_rep_name"]


def test_named_types_are_inlined_where_the_view_first_uses_them() -> None:
    schema = {"type": "record", "name": "Firm", "namespace": "gov.x", "fields": [
        {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["A", "B"]}},
        {"name": "addr", "type": {"type": "record", "name": "Addr", "fields": [
            {"name": "city", "type": "string"}]}, "sensitivity": "public"},
        {"name": "other_kind", "type": "Kind", "sensitivity": "public"},
        {"name": "when", "type": {"type": "long", "logicalType": "timestamp-millis"},
         "sensitivity": "public"},
    ]}
    rules = field_rules(schema, ["addr", "other_kind", "when"])
    view = view_schema(schema, rules, "g-1")
    fastavro.parse_schema(view)  # "Kind" is defined in the view although "kind" is not granted
    assert view["fields"][1]["type"]["name"] == "gov.x.Kind"
    raw_view = strip_logical_types(view)
    assert "logicalType" not in str(raw_view)
    value = {"addr": {"city": "Xinzhou"}, "other_kind": "B", "when": 1_700_000_000_000}
    assert roundtrip(raw_view, value) == value


def _written(schema: dict, rules, grant: str, record: dict) -> bytes:
    parsed = fastavro.parse_schema(strip_logical_types(view_schema(schema, rules, grant)), named_schemas={})
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, parsed, projector_of(rules, grant)(record))
    return buf.getvalue()


def projector_of(rules, grant: str):
    return compile_projector(rules, grant_key(MASTER, grant), grant_tag(MASTER, grant))


def encoded_in_parts(schema: dict, rules, grant: str, record: dict) -> bytes:
    shared = shared_view(schema, rules)
    encode = compile_view_encoder(shared, grant_key(MASTER, grant), grant_tag(MASTER, grant))
    return encode(record, shared.parts(record))


@given(
    st.sets(st.sampled_from(ALL), min_size=1),
    st.sets(st.sampled_from(ALL)),
    st.integers(min_value=0, max_value=10**6),
)
def test_r8_r12_views_encoded_in_shared_parts_are_the_bytes_of_the_projected_view(
    fields: set[str], unmasked: set[str], i: int
) -> None:
    rules = field_rules(licence_schema(), sorted(fields), sorted(unmasked & fields))
    rec = licence_record(i)
    for grant in ("g1", "g2"):  # one shared part, per-grant pseudonyms
        expected = _written(licence_schema(), rules, grant, rec)
        assert encoded_in_parts(licence_schema(), rules, grant, rec) == expected


def test_r8_r12_shared_parts_keep_nullable_pseudonyms_and_named_types_across_runs() -> None:
    schema = {"type": "record", "name": "Firm", "namespace": "gov.x", "fields": [
        {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["A", "B"]},
         "sensitivity": "public"},
        {"name": "secret_no", "type": ["null", "long"], "sensitivity": "sensitive"},
        {"name": "other_kind", "type": "Kind", "sensitivity": "public"},
        {"name": "card", "type": ["string", "null"], "sensitivity": "sensitive"},
        {"name": "nick", "type": ["null", "string"], "sensitivity": "personal"},
        {"name": "id_no", "type": "string", "sensitivity": "sensitive"},
    ]}
    rules = field_rules(schema, [f["name"] for f in schema["fields"]])
    for rec in (
        {"kind": "A", "secret_no": 123456, "other_kind": "B", "card": "6222", "nick": "Lily",
         "id_no": "x" * 70},
        {"kind": "B", "secret_no": None, "other_kind": "A", "card": None, "nick": None, "id_no": ""},
    ):
        assert encoded_in_parts(schema, rules, "g-1", rec) == _written(schema, rules, "g-1", rec)
