"""Record ids: 32 hex characters, time-ordered like UUIDv7 (48-bit milliseconds, then 80 random bits).

Sortable by publication time, unique without coordination, and cheap enough to make per record: the
random part is a per-process random prefix plus a counter, so no system call is made per id.
"""

from __future__ import annotations

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


def is_record_id(text: str) -> bool:
    return bool(_PATTERN.match(text))


def record_id_ms(record_id: str) -> int:
    """The publication time in epoch milliseconds a record id carries."""
    return int(record_id[:12], 16)
