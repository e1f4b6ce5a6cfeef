"""The sealed envelope (R8, R12, R14): the documented test vectors, round trips, and every way a record may
be moved or altered failing to open (pure code, no I/O)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bus.exchange import keyring
from bus.exchange.envelope import EnvelopeError, Meta, Sealer, aad, partition_key
from bus.keys import signing_secret_for
from bus.vocab import TopicKind

DOC = Path(__file__).resolve().parents[2] / "docs" / "ENVELOPE.md"
KEY = bytes(range(32))
NONCE = bytes.fromhex("000102030405060708090a0b")
META = Meta("0190a1b2c3d4e5f60718293a4b5c6d7e", "market", "market-licences", 2, 1764748800000, "gr-1", "check", "k1")


def _vectors() -> dict[str, str]:
    text = DOC.read_text()
    block = text.split("```vectors\n", 1)[1].split("```", 1)[0]
    return dict(line.split(" = ", 1) for line in block.strip().splitlines())


@pytest.mark.parametrize("name", ["ingress", "deliver"])
def test_r14_docs_envelope_vectors_match_the_implementation(name: str) -> None:
    v = _vectors()
    kind, scope, meta = TopicKind(v[f"{name}.kind"]), v[f"{name}.scope"], bytes.fromhex(v[f"{name}.meta"])
    key = None if v[f"{name}.key"] == "-" else bytes.fromhex(v[f"{name}.key"])
    plain = bytes.fromhex(v[f"{name}.plaintext"])
    assert Meta.unpack(meta).pack() == meta
    assert aad(kind, scope, meta).hex() == v[f"{name}.aad"]
    sealer = Sealer(Meta.unpack(meta).kid, KEY)
    assert sealer.seal(kind, scope, meta, key, plain, nonce=NONCE).hex() == v[f"{name}.sealed"]
    assert sealer.open(kind, scope, meta, bytes.fromhex(v[f"{name}.sealed"])) == (key, plain)


def test_r14_docs_key_derivation_vectors_match() -> None:
    v = _vectors()
    secret = signing_secret_for(v["keys.api_key"])
    assert secret.hex() == v["keys.signing_secret"]
    assert keyring.ingress_key(secret).hex() == v["keys.ingress_key"]
    psecret = keyring.ingress_partition_secret(secret)
    assert psecret.hex() == v["keys.ingress_partition_secret"]
    assert partition_key(psecret, b"LIC00000001").hex() == v["keys.kafka_key_of_LIC00000001"]


def _sealed(key: bytes | None = b"k", value: bytes = b"value") -> tuple[Sealer, bytes, bytes]:
    sealer = Sealer("k1", KEY)
    meta = META.pack()
    return sealer, meta, sealer.seal(TopicKind.DELIVER, "gr-1", meta, key, value)


@pytest.mark.parametrize(
    "change",
    ["record_id", "publisher", "dataset", "schema_version", "published_at_ms", "grant", "scenario", "kid"],
)
def test_r8_r14_any_changed_bound_header_fails_to_open(change: str) -> None:
    sealer, _, sealed = _sealed()
    new = {"record_id": "f" * 32, "publisher": "other", "dataset": "other", "schema_version": 3,
           "published_at_ms": 1, "grant": "gr-2", "scenario": "x", "kid": "k2"}[change]
    moved = dataclasses.replace(META, **{change: new}).pack()
    with pytest.raises(EnvelopeError):
        sealer.open(TopicKind.DELIVER, "gr-1", moved, sealed)


@pytest.mark.parametrize(("kind", "scope"), [(TopicKind.DELIVER, "gr-2"), (TopicKind.DATA, "gr-1"),
                                             (TopicKind.INGRESS, "market-licences")])
def test_r8_a_ciphertext_moved_to_another_topic_or_grant_fails_to_open(kind: TopicKind, scope: str) -> None:
    sealer, meta, sealed = _sealed()
    with pytest.raises(EnvelopeError):
        sealer.open(kind, scope, meta, sealed)


def test_r14_another_key_a_flipped_bit_or_a_short_value_fails_to_open() -> None:
    sealer, meta, sealed = _sealed()
    with pytest.raises(EnvelopeError):
        Sealer("k1", bytes(32)).open(TopicKind.DELIVER, "gr-1", meta, sealed)
    flipped = sealed[:-1] + bytes([sealed[-1] ^ 1])
    for bad in (flipped, sealed[:20], b"", None):
        with pytest.raises(EnvelopeError):
            sealer.open(TopicKind.DELIVER, "gr-1", meta, bad)


def test_r12_each_record_gets_a_fresh_nonce_and_the_value_is_not_in_the_ciphertext() -> None:
    sealer, meta, a = _sealed(value=b"SECRET-VALUE" * 4)
    b = sealer.seal(TopicKind.DELIVER, "gr-1", meta, b"k", b"SECRET-VALUE" * 4)
    assert a[:12] != b[:12] and a != b and b"SECRET" not in a


@given(st.binary(max_size=64) | st.none(), st.binary(max_size=2000))
def test_r14_round_trip_of_any_key_and_value(key: bytes | None, value: bytes) -> None:
    sealer, meta, sealed = _sealed(key, value)
    assert sealer.open(TopicKind.DELIVER, "gr-1", meta, sealed) == (key, value)


@given(st.binary(max_size=200))
def test_r14_any_bytes_as_bus_meta_parse_or_raise_envelope_error(raw: bytes) -> None:
    try:
        meta = Meta.unpack(raw)
    except EnvelopeError:
        return
    assert meta.pack() == raw  # whatever parses is exactly what it says


@pytest.mark.parametrize("bad", [
    Meta("xyz", "p", "d", 1), Meta("0" * 32, "p", "d", 0), Meta("0" * 32, "p", "d", 2**31),
    Meta("0" * 32, "p" * 2000, "d", 1),
])
def test_r14_meta_out_of_range_is_refused_when_packed(bad: Meta) -> None:
    with pytest.raises(EnvelopeError):
        bad.pack()


def test_r8_wrapped_keys_open_only_for_their_purpose_and_bus() -> None:
    master = bytes(range(32))
    stored = keyring.wrap(master, "grant-key/gr-1/k1", KEY)
    assert keyring.is_wrapped(stored) and KEY.hex() not in stored
    assert keyring.unwrap(master, "grant-key/gr-1/k1", stored) == KEY
    with pytest.raises(ValueError):
        keyring.unwrap(master, "grant-key/gr-2/k1", stored)
    with pytest.raises(ValueError):
        keyring.unwrap(bytes(32), "grant-key/gr-1/k1", stored)
    legacy = "ab" * 32
    assert keyring.signing_secret_of(master, "a", legacy) == bytes.fromhex(legacy)
    wrapped = keyring.wrap_signing_secret(master, "a", b"s" * 32)
    assert keyring.signing_secret_of(master, "a", wrapped) == b"s" * 32
