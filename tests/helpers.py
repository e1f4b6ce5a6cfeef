"""Small helpers shared by tests: polling with a deadline (never sleeps as synchronisation), sample data."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from bus.samples import licence_record, licence_schema

__all__ = ["ROOT", "catalog_entry", "licence_record", "licence_schema", "poll_until"]

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent


def poll_until(
    check: Callable[[], T], timeout: float = 10.0, interval: float = 0.02, what: str = "condition"
) -> T:
    """Call ``check`` until it returns something truthy; fail with ``what`` when the deadline passes."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what} not reached within {timeout}s (last: {last!r})")


def catalog_entry(
    dataset_id: str, schema: dict[str, Any] | None = None, sharing: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The smallest valid ``POST /v1/datasets`` body: basic, general, unconditional, the licence schema
    unless another is given."""
    return {
        "id": dataset_id,
        "title": dataset_id,
        "description": "test",
        "category": "basic",
        "grade": "general",
        "sharing": sharing or {"attribute": "unconditional"},
        "schema": schema or licence_schema(),
    }
