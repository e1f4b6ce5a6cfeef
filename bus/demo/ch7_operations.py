"""Chapter 7: authorised operation (R11): an operator computes licences per county inside the bus.

The market bureau (chapter 2) allows aggregates on ``market-licences`` with an analysis rule; a licensed
operator asks for licences per county; grouping by the company and ``k=1`` are refused; the owner
approves; a county with fewer than k companies is suppressed; the operator reads the result rows
through its grant, never a licence; the source's lineage graph shows the derived product.
Windows are 5 seconds here so the demo sees one close (an hour in the README's example).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import httpx

from bus.demo import Demo

DATASET = "market-licences"
T = TypeVar("T")
BIG, SMALL = "140902", "140921"  # Xinfu District: 12 companies; Wutai County: 4 (fewer than k=10)
RULE = {
    "dimensions": ["region_code", "status"],
    "measures": [
        {"field": "licence_no", "functions": ["count"]},
        {"field": "registered_capital", "functions": ["sum", "avg"], "bounds": [0, 100_000_000]},
    ],
    "subject_field": "credit_code",
    "min_group_size": 10,
    "windows": [5, 3600],
    "epsilon_budget": {"per_operator_per_day": 1.0},
}


def _until(check: Callable[[], T], timeout: float = 30.0) -> T | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.2)
    return None


def _operation(**change: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "dataset": DATASET,
        "scenario": {
            "code": "licence-stats",
            "description": "business licences per county, for the provincial business-environment report",
        },
        "legal_basis": "Shanxi Data Work Management Measures, Art. 14 (authorised operation)",
        "group_by": ["region_code"],
        "measures": [{"field": "licence_no", "fn": "count"}, {"field": "registered_capital", "fn": "avg"}],
        "window_seconds": 5,
        "k": 10,
    }
    body.update(change)
    return body


def _licences() -> list[dict[str, Any]]:
    stamp = int(time.time()) % 10**6
    out = []
    for i in range(16):
        county = BIG if i < 12 else SMALL
        out.append(
            {
                "licence_no": f"LIC7{stamp:06d}{i:02d}",
                "credit_code": f"91140900MD{stamp:06d}{i:02d}",
                "enterprise_name": f"Operator Demo Co. {i}",
                "legal_rep_name": f"Sun Qi {i}",
                "legal_rep_id": f"14090019900101{i:04d}",
                "phone": f"1390007{i:04d}",
                "address": f"{i} Changzheng Street",
                "region_code": county,
                "business_scope": "retail",
                "registered_capital": 100_000 * (i + 1),
                "issued_on": "2026-07-07",
                "status": "active",
            }
        )
    return out


def run(demo: Demo) -> None:
    demo.chapter("7. Authorised operation: aggregates computed inside the bus, never the raw data (R11)")
    keys = demo.state.get("keys") or {}
    if not demo.expect("market" in keys, "chapter 2's market bureau is there"):
        return
    admin, market = demo.client(), demo.client(keys["market"])
    r = admin.post(
        "/v1/agencies",
        json={
            "id": "stats-op",
            "name": "Provincial statistics operator",
            "region": "140000",
            "roles": ["operator"],
        },
    )
    if not demo.expect(r.status_code == 201, "the admin registers a licensed operator (role operator)"):
        return
    oper = demo.client(r.json()["api_key"])
    r = market.put(f"/v1/datasets/{DATASET}/analysis-rule", json=RULE)
    demo.expect(
        r.status_code == 200,
        "the market bureau sets an analysis rule: group by county or status, "
        "count licences, average capital, k >= 10 companies",
    )
    by_company = oper.post("/v1/operations", json=_operation(group_by=["credit_code"])).json()
    demo.expect(
        by_company.get("code") == "operation.subject_output",
        f"grouping by the company itself is refused: {by_company.get('code')}",
    )
    k1 = oper.post("/v1/operations", json=_operation(k=1)).json()
    demo.expect(k1.get("code") == "operation.k_too_small", f"k=1 is refused: {k1.get('code')}")
    op = oper.post("/v1/operations", json=_operation()).json()
    if not demo.expect(op.get("status") == "pending", "licences per county: pending until the owner decides"):
        demo.say(f"  {op}")
        return
    op = market.post(f"/v1/operations/{op['id']}/decision", json={"decision": "approve"}).json()
    if not demo.expect(
        op.get("status") == "active",
        f"approved: derived dataset {op.get('derived_dataset')}, results through grant {op.get('grant')}",
    ):
        return
    # records accepted from the approval on are the operation's input, wherever the executor stands
    r = market.post(f"/v1/datasets/{DATASET}/records", json={"records": _licences()})
    demo.expect(
        r.status_code == 200 and r.json().get("accepted") == 16,
        f"the market bureau publishes 12 licences in {BIG} and 4 in {SMALL}",
    )

    _results(demo, admin, oper, op)


def _results(demo: Demo, admin: httpx.Client, oper: httpx.Client, op: dict[str, Any]) -> None:
    """The operator reads its rows; the source's graph and the row lineage show where they came from."""

    def rows() -> list[dict[str, Any]]:
        page = oper.get(f"/v1/grants/{op['grant']}/records", params={"limit": 100}).json()
        return [x["value"] for x in page.get("records", [])]

    got = _until(rows, timeout=40) or []
    for row in got:
        demo.say(
            f"    window {row['window_start']}..{row['window_end']} county {row['region_code']}: "
            f"{row['count_licence_no']} licences, average capital {row['avg_registered_capital']:.0f}"
        )
    demo.expect(
        [(x["region_code"], x["count_licence_no"]) for x in got] == [(BIG, 12)],
        f"the operator receives {BIG}: 12 licences; {SMALL} (4 companies < k) is suppressed",
    )
    demo.expect(
        all("credit_code" not in x and "licence_no" not in x for x in got),
        "no licence number or company code reaches the operator",
    )
    graph = admin.get(f"/v1/lineage/datasets/{DATASET}").json()
    derived = [e for e in graph.get("edges", []) if e.get("kind") == "derived"]
    demo.expect(
        any(e["to"] == f"dataset:{op['derived_dataset']}" for e in derived),
        "the source's lineage graph shows the derived product",
    )
    results = oper.get(f"/v1/operations/{op['id']}/results").json().get("results", [])
    if results:
        r0 = results[0]
        demo.say(
            f"    result {r0['record_id']}: rule v{r0['rule_version']}, k={r0['k']}, "
            f"epsilon={r0['epsilon']}, aggregates {r0['source_records']} source records"
        )
    demo.expect(
        bool(results) and results[0]["source_records"] == 12,
        "each result row's lineage names the operation, rule version, window, k and record count",
    )
