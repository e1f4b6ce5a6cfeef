"""Record ids: 32 hex characters, time-ordered like UUIDv7 (48-bit milliseconds, then 80 random bits).

Sortable by publication time, unique without coordination, and cheap enough to make per record: the
random part is a per-process random prefix plus a counter, so no system call is made per id.

Source connectors use ``derived_record_id`` instead: the same 32 hex characters, but a keyed hash of
where the record came from, so a batch read and published again after a crash carries the ids it had
the first time. Such ids carry no publication time (``record_id_ms`` means nothing for them).
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import os
import re
import threading
import time

_PATTERN = re.compile(r"^[0-9a-f]{32}$")


class RecordIds:
    def __init__(self) -> None:
        self._prefix = os.urandom(5).hex()  # 40 random bits per generator
        self._counter = itertools.count(int.from_bytes(os.urandom(4), "big"))
        self._lock = threading.Lock()

    def new(self) -> str:
        with self._lock:
            n = next(self._counter) & 0xFFFFFFFFFF
        return f"{time.time_ns() // 1_000_000:012x}{self._prefix}{n:010x}"

    def made(self, record_id: str) -> bool:
        """Was ``record_id`` made by this generator?"""
        return record_id[12:22] == self._prefix


_default = RecordIds()


def _reseed() -> None:  # a forked child must not repeat its parent's ids
    global _default
    _default = RecordIds()


os.register_at_fork(after_in_child=_reseed)


def new_record_id() -> str:
    return _default.new()


def derived_record_id(key: bytes, *parts: str) -> str:
    """A record id that is a function of ``parts`` (e.g. connector, source position, content) under ``key``.

    The first 128 bits of HMAC-SHA256(key, parts), as 32 hex characters: a valid record id
    (``is_record_id``), the same for the same parts, and unpredictable without ``key``. Each part is
    length-prefixed, so ``("ab", "c")`` and ``("a", "bc")`` give different ids.
    """
    message = b"".join(len(raw).to_bytes(4, "big") + raw for raw in (p.encode() for p in parts))
    return hmac.new(key, message, hashlib.sha256).hexdigest()[:32]


def is_record_id(text: str) -> bool:
    return bool(_PATTERN.match(text))


def record_id_ms(record_id: str) -> int:
    """The publication time in epoch milliseconds a record id made by ``new_record_id`` carries."""
    return int(record_id[:12], 16)
