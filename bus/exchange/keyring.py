"""Which key seals what (R8, R12, R14): derivations, wrapping, and the kids on the wire.

| topic | key | kid |
|---|---|---|
| ``ingress.<dataset>`` | the publishing agency's key, derived from its signing secret (SDK and bus share it) | ``i1`` |
| ``data.<dataset>`` | per dataset, derived from the master secret, versioned | ``d<version>`` |
| ``rejected.<dataset>`` | the ingress record as sent (still under the publisher's key: only it reads its refusals) | ``i1`` |
| ``deliver.<grant>`` | a random per-grant data key, versioned, stored wrapped (``bus.grants.keys``) | 8 hex |
| ``bus.deadletter`` | derived from the master secret | ``x1`` |

Pure code: secrets in, keys out. Wrapping (AES-256-GCM under a key derived from the master secret,
bound to what it wraps) keeps grant data keys and agencies' signing secrets unreadable in the store.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bus.keys import derive

INGRESS_KID = "i1"
DEADLETTER_KID = "x1"
DATASET_KEY_VERSION = 1
_WRAPPED = "w1:"


def _hkdf(secret: bytes, label: bytes) -> bytes:
    return hmac.new(secret, label, hashlib.sha256).digest()


def ingress_key(signing_secret: bytes) -> bytes:
    """The agency's sealing key for ``ingress.*``: the AEAD tag proves who wrote the record (R14)."""
    return _hkdf(signing_secret, b"databus/seal/ingress/v1")


def ingress_partition_secret(signing_secret: bytes) -> bytes:
    """Keys the hash that replaces record keys on ``ingress.*``."""
    return _hkdf(signing_secret, b"databus/partition-key/ingress/v1")


def dataset_kid(version: int = DATASET_KEY_VERSION) -> str:
    return f"d{version}"


def dataset_key(master: bytes, dataset_id: str, version: int = DATASET_KEY_VERSION) -> bytes:
    """The key of ``data.<dataset>`` (the accepted log, read only by the bus: operators, replay)."""
    return derive(master, "seal", "data", dataset_id, str(version))


def partition_secret(master: bytes, scope: str) -> bytes:
    """Keys the hash that replaces record keys on ``data.*`` and ``deliver.*`` (stable across rotation, so
    one key keeps one partition)."""
    return derive(master, "partition-key", scope)


def deadletter_key(master: bytes) -> bytes:
    return derive(master, "seal", "deadletter", "1")


def _wrapping(master: bytes) -> AESGCM:
    return AESGCM(derive(master, "wrap", "v1"))


def wrap(master: bytes, purpose: str, secret: bytes) -> str:
    """``secret`` encrypted under the master's wrapping key, bound to ``purpose`` (text, for the store)."""
    nonce = os.urandom(12)
    sealed = nonce + _wrapping(master).encrypt(nonce, secret, purpose.encode())
    return _WRAPPED + base64.urlsafe_b64encode(sealed).decode().rstrip("=")


def unwrap(master: bytes, purpose: str, stored: str) -> bytes:
    """The secret ``wrap`` stored; ``ValueError`` if it was wrapped for another purpose or another bus."""
    raw = base64.urlsafe_b64decode(stored[len(_WRAPPED) :] + "=" * (-len(stored) % 4))
    try:
        return _wrapping(master).decrypt(raw[:12], raw[12:], purpose.encode())
    except InvalidTag:
        raise ValueError(f"stored key for {purpose} does not unwrap under this bus's master secret") from None


def is_wrapped(stored: str) -> bool:
    return stored.startswith(_WRAPPED)


def signing_purpose(agency_id: str) -> str:
    return f"agency-signing-secret/{agency_id}"


def wrap_signing_secret(master: bytes, agency_id: str, secret: bytes) -> str:
    return wrap(master, signing_purpose(agency_id), secret)


def signing_secret_of(master: bytes, agency_id: str, stored: str) -> bytes:
    """An agency's signing secret as stored: wrapped (since sealing), or the hex of older rows."""
    if is_wrapped(stored):
        return unwrap(master, signing_purpose(agency_id), stored)
    return bytes.fromhex(stored)
