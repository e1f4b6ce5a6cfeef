"""Shared pieces of the connector runtime: timing constants, clock, backoff, control-flow signals."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import TypeVar

from connectors.base import RetryPolicy

T = TypeVar("T")

POLL_TIMEOUT = 0.5  # longest wait for new records, so a stop is noticed within about half a second
HEARTBEAT = 2.0  # idle connectors refresh their status (lag) this often
POLICY_RECHECK = 1.0  # an idle sink or source re-reads its grant / dataset this often


def now() -> datetime:
    return datetime.now(UTC)


def backoff(policy: RetryPolicy, attempt: int) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(max, initial * 2^(attempt-1))]."""
    cap = min(policy.max_backoff, policy.initial_backoff * (2 ** min(attempt - 1, 30)))
    return random.uniform(policy.initial_backoff / 2, cap) if cap > policy.initial_backoff / 2 else cap


class Stopped(Exception):
    """The runtime asked the connector to stop while it was waiting or retrying."""


class Reload(Exception):
    """The connector must restart to pick up a change (e.g. a new schema version)."""


class Blocked(Exception):
    """Policy forbids moving data right now (grant not active, dataset or agency suspended)."""
