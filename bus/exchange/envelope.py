"""The sealed record envelope (R8, R12, R14): what a bus record looks like on the broker.

Every bus topic that carries agency data holds sealed records: the value is ``nonce (12 bytes) ||
AES-256-GCM(key, plaintext, aad)``, the plaintext is the record's Kafka key (length-prefixed) followed by
its Avro value, and the bus's own metadata travels in **one** compact clear header, ``bus-meta``
(record id, publisher, dataset, schema version, accepted-at, grant, scenario, key id). The associated
data binds the ciphertext to where it belongs — topic kind, dataset or grant id, and every byte of
``bus-meta`` — so a ciphertext copied to another topic or grant, or with any bound header changed,
fails to open. The Kafka message key is replaced by a keyed hash of the record key, so per-key order
and partitioning hold while the key itself stays sealed.

Pure code (no I/O): ``docs/ENVELOPE.md`` specifies the layout with test vectors for other languages.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bus.vocab import TopicKind

META_HEADER = "bus-meta"
META_VERSION = 1
NONCE_BYTES = 12
TAG_BYTES = 16
KEY_BYTES = 32
_FIXED = struct.Struct(">B16sIQ")  # layout version, record id (16 raw bytes), schema version, accepted-at ms
_LEN = struct.Struct(">H")
_KEYLEN = struct.Struct(">I")
_NO_KEY = 0xFFFFFFFF
_AAD_PREFIX = b"databus/envelope/v1\x00"
_MAX_TEXT = 1024


class EnvelopeError(ValueError):
    """A header or value that is not a well-formed bus envelope, or that does not open."""


@dataclass(frozen=True, slots=True)
class Meta:
    """The bus's metadata of one record, carried in the clear ``bus-meta`` header (and bound by the AEAD)."""

    record_id: str  # 32 lowercase hex characters
    publisher: str
    dataset: str
    schema_version: int
    published_at_ms: int = 0  # when the bus accepted it (0 on ingress: not accepted yet)
    grant: str = ""  # on deliver.<grant>
    scenario: str = ""  # on deliver.<grant>
    kid: str = ""  # the key the value is sealed under

    def contract_headers(self) -> dict[str, str]:
        """The contract's header names and values (``bus-record-id``, ``bus-grant``, ...) as the SDK and the
        HTTP bodies show them: the compact layout stays an internal of the wire."""
        out = {"bus-record-id": self.record_id, "bus-publisher": self.publisher, "bus-dataset": self.dataset,
               "bus-schema-version": str(self.schema_version), "bus-published-at": str(self.published_at_ms)}
        if self.grant:
            out.update({"bus-grant": self.grant, "bus-scenario": self.scenario})
        return out

    def pack(self) -> bytes:
        try:
            rid = bytes.fromhex(self.record_id)
        except ValueError:
            raise EnvelopeError(f"record id {self.record_id!r} is not 32 hex characters") from None
        if len(rid) != 16:
            raise EnvelopeError(f"record id {self.record_id!r} is not 32 hex characters")
        if not 0 < self.schema_version < 2**31 or not 0 <= self.published_at_ms < 2**63:
            raise EnvelopeError("schema version or accepted-at out of range")
        parts = [_FIXED.pack(META_VERSION, rid, self.schema_version, self.published_at_ms)]
        for text in (self.publisher, self.dataset, self.grant, self.scenario, self.kid):
            raw = text.encode()
            if len(raw) > _MAX_TEXT:
                raise EnvelopeError("a bus-meta field is longer than 1024 bytes")
            parts += (_LEN.pack(len(raw)), raw)
        return b"".join(parts)

    @classmethod
    def unpack(cls, raw: bytes | None) -> Meta:
        """Parse ``bus-meta``; any malformed input (length, version, UTF-8, range) is an ``EnvelopeError``."""
        if not raw or len(raw) < _FIXED.size:
            raise EnvelopeError("missing or truncated bus-meta header")
        version, rid, schema_version, published = _FIXED.unpack_from(raw)
        if version != META_VERSION:
            raise EnvelopeError(f"bus-meta layout version {version} is not {META_VERSION}")
        if not 0 < schema_version < 2**31 or published >= 2**63:
            raise EnvelopeError("bus-meta schema version or accepted-at out of range")
        pos, texts = _FIXED.size, []
        for _ in range(5):
            if pos + 2 > len(raw):
                raise EnvelopeError("truncated bus-meta header")
            (n,) = _LEN.unpack_from(raw, pos)
            pos += 2
            if n > _MAX_TEXT or pos + n > len(raw):
                raise EnvelopeError("truncated bus-meta header")
            try:
                texts.append(raw[pos : pos + n].decode())
            except UnicodeDecodeError:
                raise EnvelopeError("bus-meta text is not UTF-8") from None
            pos += n
        if pos != len(raw):
            raise EnvelopeError("bus-meta header has trailing bytes")
        return cls(rid.hex(), texts[0], texts[1], schema_version, published, texts[2], texts[3], texts[4])


def aad(kind: TopicKind, scope: str, meta_bytes: bytes) -> bytes:
    """What the tag binds besides the plaintext: the topic kind, its dataset or grant id, and ``bus-meta``."""
    return b"".join((_AAD_PREFIX, kind.value.encode(), b"\x00", scope.encode(), b"\x00", meta_bytes))


def _plaintext(key: bytes | None, value: bytes) -> bytes:
    if key is None:
        return _KEYLEN.pack(_NO_KEY) + value
    return _KEYLEN.pack(len(key)) + key + value


class Sealer:
    """One AES-256-GCM key: seals and opens records bound to a topic kind and scope."""

    __slots__ = ("kid", "_aead")

    def __init__(self, kid: str, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError("an envelope key is 32 bytes (AES-256)")
        self.kid = kid
        self._aead = AESGCM(key)

    def seal(
        self, kind: TopicKind, scope: str, meta_bytes: bytes, key: bytes | None, value: bytes,
        nonce: bytes | None = None,
    ) -> bytes:
        """``nonce || ciphertext || tag``; a fresh random 96-bit nonce per record (``nonce`` only for the
        test vectors)."""
        n = os.urandom(NONCE_BYTES) if nonce is None else nonce
        return n + self._aead.encrypt(n, _plaintext(key, value), aad(kind, scope, meta_bytes))

    def open(self, kind: TopicKind, scope: str, meta_bytes: bytes, sealed: bytes | None) -> tuple[bytes | None, bytes]:
        """``(key, value)`` of a sealed record, or ``EnvelopeError`` if it was not sealed here, under this key,
        for this place, with exactly these headers."""
        if sealed is None or len(sealed) < NONCE_BYTES + TAG_BYTES + _KEYLEN.size:
            raise EnvelopeError("the value is not a sealed bus record")
        try:
            plain = self._aead.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], aad(kind, scope, meta_bytes))
        except InvalidTag:
            raise EnvelopeError("the record does not open under this key at this place (tampered, moved "
                                "between topics, or sealed under another key)") from None
        (n,) = _KEYLEN.unpack_from(plain)
        if n == _NO_KEY:
            return None, plain[_KEYLEN.size :]
        if _KEYLEN.size + n > len(plain):
            raise EnvelopeError("sealed plaintext is truncated")
        return plain[_KEYLEN.size : _KEYLEN.size + n], plain[_KEYLEN.size + n :]


def partition_key(secret: bytes, key: bytes | None) -> bytes | None:
    """The Kafka message key on the broker: a keyed hash of the record key (same key, same partition and
    order; the key itself stays sealed). ``None`` stays ``None``."""
    if key is None:
        return None
    return hmac.new(secret, key, hashlib.sha256).digest()[:16]


def meta_of(headers: list[tuple[str, bytes | None]] | None) -> bytes | None:
    """The raw ``bus-meta`` header of a consumed message (the last one wins), without parsing it."""
    found = None
    for k, v in headers or ():
        if k == META_HEADER:
            found = v
    return found
