"""R8/R9 record fingerprints, pure: normalisation, the copy rule, stored entries, pseudonyms in records."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bus.policy import fingerprint as fp
from bus.policy.overlap import Field, fields_of_schema
from bus.policy.pseudonyms import grant_key, grant_tag, pseudonym
from tests.helpers import licence_record, licence_schema

KEY = fp.fingerprint_key(b"\x01" * 32)
B = 1 << 16
LICENCE = fields_of_schema(licence_schema())


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("  Xinzhou  Trading\tCo. ", "xinzhou trading co."),
        ("ＡＢＣ１２３", "abc123"),  # full-width (NFKC)
        (1, "1"),
        (1.0, "1"),
        (1.5, "1.5"),
        (True, "true"),
        (False, "false"),
        ("", None),
        ("   ", None),
        (None, None),
        (float("nan"), None),
        ("*******1234", None),
        ("****", None),  # masked on delivery: unknown, not a contradiction
        ("ps-abcdefgh-abcdefghijklmnopqrst", None),  # a pseudonym: unknown
        ("a*b", "a*b"),
        (b"\x01\x02", "0102"),
    ],
)
def test_r9_normalise_table(value: object, expected: str | None) -> None:
    assert fp.normalise(value) == expected


@given(
    st.one_of(
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        st.decimals(allow_nan=False, allow_infinity=False),
    )
)
def test_r9_numbers_normalise_by_value_and_never_fail(number: object) -> None:
    text = fp.normalise(number)
    assert text is not None and "e" not in text.lower()
    if isinstance(number, float) and number.is_integer():
        assert text == fp.normalise(int(number))


@pytest.mark.parametrize(
    ("sems", "ok"),
    [
        ({"enterprise.credit_code", "enterprise.address"}, True),
        ({"person.id_number", "person.phone"}, True),
        ({"enterprise.credit_code"}, False),  # one field
        ({"enterprise.credit_code", "enterprise.name"}, False),  # only names its subject
        ({"enterprise.credit_code", "licence.number"}, False),  # only identifiers
        ({"enterprise.address", "person.phone"}, False),  # no identifier to look records up by
        ({"licence.number", "enterprise.name", "enterprise.address"}, True),
        (set(), False),
    ],
)
def test_r9_qualifies_table(sems: set[str], ok: bool) -> None:
    assert fp.qualifies(sems) is ok


def _probe(record: dict, only: set[str] | None = None) -> dict[str, fp.Digest]:
    return fp.record_digests(KEY, record, LICENCE, B, only)


def _stored(record: dict, rid: str = "r1") -> fp.Entry:
    stored = fp.entry_for(_probe(record), rid)
    assert stored is not None
    return fp.decode_entry(stored[1])


SHARED = frozenset({"enterprise.credit_code", "enterprise.name", "enterprise.address", "person.phone"})


def test_r9_exact_copy_is_a_copy() -> None:
    rec = licence_record(7)
    assert fp.compare(_probe(rec), SHARED, _stored(rec)).is_copy


def test_r9_same_enterprise_with_new_attributes_is_not_a_copy() -> None:
    """Only naming the same enterprise (credit code, name) with a different address is not re-collection."""
    original = licence_record(7)
    other = {**original, "address": "88 New Road", "phone": "13811112222"}
    agreement = fp.compare(_probe(other), SHARED, _stored(original))
    assert agreement.agree == {"enterprise.credit_code", "enterprise.name"}
    assert not agreement.is_copy


def test_r9_sharing_only_an_identifier_is_not_a_copy() -> None:
    original = licence_record(7)
    other = {"credit_code": original["credit_code"]}
    assert not fp.compare(_probe(other), SHARED, _stored(original)).is_copy


def test_r8_masked_view_of_a_record_is_still_a_copy() -> None:
    """A grantee republishing what it received (personal fields masked, sensitive ones pseudonymised)."""
    original = licence_record(7)
    received = {
        **original,
        "phone": "*******" + original["phone"][-4:],
        "legal_rep_name": "*" * 8 + "n 7",
        "legal_rep_id": "ps-abcdefgh-abcdefghijklmnopqrst",
    }
    agreement = fp.compare(_probe(received), SHARED | {"person.id_number"}, _stored(original))
    assert not agreement.disagree and agreement.is_copy


def test_r9_one_contradicting_field_means_not_a_copy() -> None:
    original = licence_record(7)
    other = {**original, "phone": "13800000000"}
    assert not fp.compare(_probe(other), SHARED, _stored(original)).is_copy


def test_r9_values_are_compared_after_normalisation() -> None:
    original = licence_record(7)
    other = {
        **original,
        "enterprise_name": original["enterprise_name"].upper() + "  ",
        "address": original["address"].replace(" ", "  "),
    }
    assert fp.compare(_probe(other), SHARED, _stored(original)).is_copy


def test_r9_anchors_are_identifier_values_only() -> None:
    probe = _probe(licence_record(1))
    assert [s for s, _ in fp.anchors_of(probe, SHARED)] == ["enterprise.credit_code"]
    stored = fp.entry_for(probe, "r1")
    assert stored is not None
    assert [s for s, _ in stored[0]] == ["enterprise.credit_code", "licence.number", "person.id_number"]


def test_r9_records_without_an_identifier_are_not_stored() -> None:
    assert fp.entry_for(_probe({"address": "x", "phone": "1"}), "r") is None
    assert fp.entry_for(_probe({"credit_code": "x"}), "r") is None  # nothing to compare with


def test_r9_digests_are_keyed() -> None:
    other_key = fp.fingerprint_key(b"\x02" * 32)
    a = fp.digest(KEY, "person.id_number", "140900198001010001", B)
    b = fp.digest(other_key, "person.id_number", "140900198001010001", B)
    assert a != b
    assert a == fp.digest(KEY, "person.id_number", "140900198001010001", B)
    assert a != fp.digest(KEY, "person.phone", "140900198001010001", B)  # the semantic is part of it


@given(
    st.lists(st.binary(min_size=4, max_size=4), max_size=40),
    st.one_of(st.uuids().map(lambda u: u.hex), st.text(min_size=1, max_size=40)),
)
def test_r9_entry_round_trip(tokens: list[bytes], record_id: str) -> None:
    entry = fp.decode_entry(fp.encode_entry(tokens, record_id))
    assert entry.tokens == frozenset(tokens)
    assert entry.record_id == record_id


def test_r9_hex_record_ids_are_stored_compactly() -> None:
    rid = "0123456789abcdef0123456789abcdef"
    assert len(fp.encode_entry([b"abcd"] * 7, rid)) == 1 + 28 + 1 + 16


@given(st.integers(0, 10_000), st.integers(0, 10_000))
def test_r9_two_different_licences_are_never_copies(i: int, j: int) -> None:
    if i == j:
        return
    assert not fp.compare(_probe(licence_record(i)), SHARED, _stored(licence_record(j))).is_copy


def test_r9_shared_semantics_need_a_qualifying_set() -> None:
    tax = [
        Field("cc", "enterprise.credit_code"),
        Field("nm", "enterprise.name"),
        Field("due", "tax.amount_due"),
    ]
    assert fp.shared_semantics(tax, LICENCE) is None  # only names the enterprise
    copier = [*tax, Field("addr", "enterprise.address")]
    assert fp.shared_semantics(copier, LICENCE) == {
        "enterprise.credit_code",
        "enterprise.name",
        "enterprise.address",
    }


def test_r8_pseudonyms_are_found_anywhere_and_mapped_to_their_grant() -> None:
    master = b"\x05" * 32
    tag = grant_tag(master, "g-1")
    ps = pseudonym(grant_key(master, "g-1"), tag, "140900198001010001")
    record = {"a": 1, "nested": {"list": ["x", f"id={ps};"]}, "b": ps}
    found = list(fp.find_pseudonyms(record))
    assert [(p, t) for _, p, t in found] == [(ps, tag), (ps, tag)]
    assert [path for path, _, _ in found] == ["nested.list[1]", "b"]
    index = fp.tag_index(master, ["g-1", "g-2"])
    assert index[tag] == "g-1" and len(index) == 2
    assert fp.tag_index(master, ["g-1"], {"g-1": "cached00"}) == {"cached00": "g-1"}


def test_r8_text_that_only_resembles_a_pseudonym_is_ignored() -> None:
    assert (
        list(
            fp.find_pseudonyms(
                {"a": "ps-ABCDEFGH-abcdefghijklmnopqrst", "b": "xps-abcdefgh-abcdefghijklmnopqrst"}
            )
        )
        == []
    )


_JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40)
    | st.sampled_from(["ps-abcdefgh-abcdefghijklmnopqrst", "x ps-abcdefgh-abcdefghijklmnopqrst y"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


@given(st.dictionaries(st.text(max_size=8), _JSONISH, max_size=6))
def test_r8_the_quick_pseudonym_precheck_never_hides_one(record: dict) -> None:
    """``may_carry_pseudonym`` only skips records in which ``find_pseudonyms`` finds nothing."""
    if list(fp.find_pseudonyms(record)):
        assert fp.may_carry_pseudonym(record)


def test_r8_a_plain_licence_record_needs_no_pseudonym_walk() -> None:
    assert not fp.may_carry_pseudonym(licence_record(1))
    assert fp.may_carry_pseudonym({**licence_record(1), "address": "ps-abcdefgh-abcdefghijklmnopqrst"})


_FIELDS = [
    Field("a", "person.id_number"),
    Field("b", "person.name"),
    Field("c", "person.id_number"),  # a second field of one semantic: the first one a record has wins
    Field("d", "enterprise.credit_code"),
    Field("e", None),
]
_VALUE = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12)
    | st.sampled_from(["****1234", " ＡＢＣ ", "ps-abcdefgh-abcdefghijklmnopqrst", "X  y"])
)


@given(st.lists(st.dictionaries(st.sampled_from("abcde"), _VALUE, max_size=5), max_size=6))
def test_r9_batched_stored_entries_equal_the_per_record_ones(records: list[dict]) -> None:
    """``stored_entries`` (the publish path's fast form) stores exactly what ``entry_for`` would."""
    ids = [f"{i:032x}" for i in range(len(records))]
    expected = []
    for rec, rid in zip(records, ids, strict=True):
        stored = fp.entry_for(fp.record_digests(KEY, rec, _FIELDS, B), rid)
        if stored is not None:
            expected.append(([(s, d.anchor, d.bucket) for s, d in stored[0]], stored[1]))
    assert fp.stored_entries(KEY, records, _FIELDS, B, ids) == expected


def test_r9_batched_stored_entries_of_licences() -> None:
    records = [licence_record(i) for i in range(20)]
    ids = [f"r{i}" for i in range(20)]
    got = fp.stored_entries(KEY, records, LICENCE, B, ids)
    assert len(got) == 20
    for (anchors, entry), rec, rid in zip(got, records, ids, strict=True):
        stored = fp.entry_for(fp.record_digests(KEY, rec, LICENCE, B), rid)
        assert stored is not None
        assert anchors == [(s, d.anchor, d.bucket) for s, d in stored[0]] and entry == stored[1]
