"""Sample data of the licence-like dataset used by the demo, the tests and the benchmarks.

The schema is ``schemas/examples/licence.avsc``: 12 fields, ~250 B encoded, with public, internal,
personal and sensitive fields and semantics, so one record exercises every masking rule.
"""

from __future__ import annotations

from typing import Any

from bus.schemas import load_schema


def licence_schema() -> dict[str, Any]:
    """A fresh copy of the licence schema (callers may change it)."""
    return load_schema("examples/licence")


def licence_record(i: int) -> dict[str, Any]:
    """The ``i``-th sample licence; values differ per ``i`` (ids repeat every 10,000)."""
    return {
        "licence_no": f"LIC{i:08d}",
        "credit_code": f"91140900MA{i:08d}",
        "enterprise_name": f"Xinzhou Trading Co. {i}",
        "legal_rep_name": f"Zhang San {i}",
        "legal_rep_id": f"14090019800101{i % 10000:04d}",
        "phone": f"1390000{i % 10000:04d}",
        "address": f"{i} Heping Street, Xinfu District",
        "region_code": "140902",
        "business_scope": "wholesale and retail of general merchandise",
        "registered_capital": 1_000_000 + i,
        "issued_on": "2026-01-15",
        "status": "active",
    }
