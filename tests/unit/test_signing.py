"""R14: record signatures prove who published a record; any change to what they cover breaks them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bus.exchange.record_ids import is_record_id, new_record_id, record_id_ms
from bus.exchange.signing import Signer, canonical, sign_record
from bus.keys import signing_secret_for

SECRET = signing_secret_for("dbk_test")
ARGS = (b"key", b"value", "0192abcd", "market", "market-licences", "1")


def test_r14_a_signature_verifies_only_under_its_agency_secret() -> None:
    sig = sign_record(SECRET, *ARGS)
    assert Signer(SECRET).verify(sig, *ARGS)
    assert not Signer(signing_secret_for("dbk_other")).verify(sig, *ARGS)
    assert not Signer(SECRET).verify(None, *ARGS)
    assert not Signer(SECRET).verify("", *ARGS)


@pytest.mark.parametrize("index", range(len(ARGS)))
def test_r14_changing_any_covered_part_breaks_the_signature(index: int) -> None:
    sig = sign_record(SECRET, *ARGS)
    changed = list(ARGS)
    changed[index] = changed[index] + (b"x" if isinstance(changed[index], bytes) else "x")
    assert not Signer(SECRET).verify(sig, *changed)


def test_r14_a_forged_publisher_header_does_not_verify() -> None:
    sig = sign_record(SECRET, *ARGS)
    assert not Signer(SECRET).verify(sig, b"key", b"value", "0192abcd", "psb", "market-licences", "1")


blobs = st.one_of(st.none(), st.binary(max_size=20))
texts = st.text(max_size=10)


@given(blobs, blobs, texts, texts, blobs, blobs, texts, texts)
def test_r14_canonical_encoding_is_injective(k1, v1, r1, p1, k2, v2, r2, p2) -> None:
    a = canonical(k1, v1, r1, p1, "d", "1")
    b = canonical(k2, v2, r2, p2, "d", "1")
    assert (a == b) == ((k1, v1, r1, p1) == (k2, v2, r2, p2))


def test_record_ids_are_unique_and_time_ordered() -> None:
    ids = [new_record_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids) and all(is_record_id(i) for i in ids)
    assert ids == sorted(ids)
    assert record_id_ms(ids[-1]) >= record_id_ms(ids[0])
