"""Record signatures (R14): who wrote a record is proven by the record, not by the topic it came through.

``bus-signature`` is the hex HMAC-SHA256, under the publishing agency's signing secret, of a canonical
encoding of the record key, the value and the bus headers that say who published what: record id,
publisher, dataset, schema version. The lengths of all parts come first, so no two different records
share an encoding. The SDK derives the secret from its API key (`bus.keys.signing_secret_for`); the
bus keeps it as ``Agency.signing_secret``. Pure code: a ``Signer`` holds one agency's HMAC state.
"""

from __future__ import annotations

import hashlib
import hmac
import struct

from bus.vocab import Header

SIGNED_HEADERS = (Header.RECORD_ID, Header.PUBLISHER, Header.DATASET, Header.SCHEMA_VERSION)
_HEAD = struct.Struct(">6I")  # the six lengths, then the six parts
_NONE = 0xFFFFFFFF  # the length of a missing key or value
_PREFIX = b"databus-record-v1"


def canonical(key: bytes | None, value: bytes | None, record_id: str, publisher: str, dataset: str,
              schema_version: str) -> bytes:
    """The bytes a signature covers: the six lengths (a missing key or value has length 2^32-1), then the
    six parts, so no two different records share an encoding."""
    k = b"" if key is None else key
    v = b"" if value is None else value
    rid, pub, ds, ver = record_id.encode(), publisher.encode(), dataset.encode(), schema_version.encode()
    return b"".join((_PREFIX, _HEAD.pack(_NONE if key is None else len(k), _NONE if value is None else len(v),
                                         len(rid), len(pub), len(ds), len(ver)), k, v, rid, pub, ds, ver))


class Signer:
    """Signs and verifies records of one agency; HMAC state is computed once and copied per record."""

    def __init__(self, secret: bytes) -> None:
        self._base = hmac.new(secret, digestmod=hashlib.sha256)

    def sign(self, key: bytes | None, value: bytes | None, record_id: str, publisher: str, dataset: str,
             schema_version: str) -> str:
        h = self._base.copy()
        h.update(canonical(key, value, record_id, publisher, dataset, schema_version))
        return h.hexdigest()

    def verify(self, signature: str | None, key: bytes | None, value: bytes | None, record_id: str,
               publisher: str, dataset: str, schema_version: str) -> bool:
        if not signature:
            return False
        expected = self.sign(key, value, record_id, publisher, dataset, schema_version)
        return hmac.compare_digest(expected, signature)


def sign_record(secret: bytes, key: bytes | None, value: bytes | None, record_id: str, publisher: str,
                dataset: str, schema_version: str) -> str:
    """One-off signature (the SDK and the tests keep a ``Signer`` instead)."""
    return Signer(secret).sign(key, value, record_id, publisher, dataset, schema_version)
