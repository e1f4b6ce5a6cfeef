"""Per-grant pseudonyms (R8, R12): keyed, irreversible, stable within a grant, different across grants.

A pseudonym reads ``ps-<tag>-<mac>``: ``mac`` is an HMAC-SHA256 of the value under the grant's own key
(derived from the bus's master secret), so the same value gives the same pseudonym within one grant
and unrelated ones across grants, and nobody without the bus's key can reverse or link them. ``tag``
is an opaque per-grant marker that only the bus can map back to its grant: it is how a leaked copy is
attributed to the grant it was delivered under.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

from bus.keys import derive

_PATTERN = re.compile(r"^ps-([a-z2-7]{8})-([a-z2-7]{20})$")


def _b32(digest: bytes, n: int) -> str:
    return base64.b32encode(digest).decode().lower()[:n]


def grant_key(master: bytes, grant_id: str) -> bytes:
    """The HMAC key of one grant's pseudonyms."""
    return derive(master, "pseudonym", grant_id)


def grant_tag(master: bytes, grant_id: str) -> str:
    """8 base32 characters naming the grant, meaningless without the master secret."""
    return _b32(derive(master, "grant-tag", grant_id), 8)


def pseudonym(key: bytes, tag: str, value: str) -> str:
    """The pseudonym of ``value`` under one grant (``key``, ``tag`` from that grant)."""
    mac = hmac.new(key, value.encode(), hashlib.sha256).digest()
    return f"ps-{tag}-{_b32(mac, 20)}"


def parse_pseudonym(text: str) -> tuple[str, str] | None:
    """``(tag, mac)`` when ``text`` looks like a pseudonym, else None."""
    m = _PATTERN.match(text)
    return (m.group(1), m.group(2)) if m else None
