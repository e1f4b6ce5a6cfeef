"""Shared pieces of the R11 integration tests: the licence rule, an operation body, the parties."""

from __future__ import annotations

from typing import Any

import httpx

from bus.samples import licence_record

BOUNDS = [0, 2_000_000]


def rule_body(**change: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "dimensions": ["region_code", "status"],
        "measures": [
            {"field": "licence_no", "functions": ["count"]},
            {"field": "registered_capital", "functions": ["sum", "avg", "min", "max"], "bounds": BOUNDS},
        ],
        "subject_field": "credit_code",
        "min_group_size": 3,
        "windows": [1, 10, 3600],
        "epsilon_budget": {"per_operator_per_day": 1.0},
    }
    body.update(change)
    return body


def operation_body(dataset: str, **change: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "dataset": dataset,
        "scenario": {"code": "licence-stats", "description": "licences per county per window"},
        "legal_basis": "Measures for Public Data Authorised Operation art. 14",
        "group_by": ["region_code"],
        "measures": [
            {"field": "licence_no", "fn": "count"},
            {"field": "registered_capital", "fn": "sum"},
            {"field": "registered_capital", "fn": "max"},
        ],
        "window_seconds": 1,
        "k": 3,
    }
    body.update(change)
    return body


def company(i: int, region: str, company_no: int, capital: int | None = None) -> dict[str, Any]:
    """A licence record of ``company_no`` (its credit code is the subject) in ``region``."""
    rec = licence_record(i)
    rec["region_code"] = region
    rec["credit_code"] = f"91140900MA{company_no:08d}"
    if capital is not None:
        rec["registered_capital"] = capital
    return rec


def approved_operation(
    owner: httpx.Client, operator: httpx.Client, dataset: str, **change: Any
) -> dict[str, Any]:
    """Request an operation as ``operator`` and approve it as ``owner``: the active operation's JSON."""
    resp = operator.post("/v1/operations", json=operation_body(dataset, **change))
    assert resp.status_code == 201, resp.text
    op = resp.json()
    assert op["status"] == "pending"
    ok = owner.post(f"/v1/operations/{op['id']}/decision", json={"decision": "approve"})
    assert ok.status_code == 200, ok.text
    return dict(ok.json())
