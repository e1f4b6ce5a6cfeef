"""Chapter 6: lineage for auditors (R14, R15, R18): one record's whole life, a dataset's graph, usage,
and a log that proves it was not edited.

Uses the agencies and ``market-licences`` of chapter 2 and the grants earlier chapters made on it; it
adds what it needs so that one fresh record crosses at least two grants, psb's and health's. psb
reads it over HTTP; health never does. The auditor then asks the bus what happened to that record.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import httpx

from bus.cli.lineage import graph_tree, record_tree
from bus.demo import Demo

DATASET = "market-licences"
T = TypeVar("T")
GRANTS = {
    "psb": ("licence-check", "verify business licences during public-security inspections"),
    "health": ("clinic-licence-verification", "check that clinics hold a valid business licence"),
}


def _until(check: Callable[[], T], timeout: float = 15.0) -> T | None:
    """Poll ``check`` until it returns something truthy (None when the deadline passes)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.1)
    return None


def _grant_for(demo: Demo, admin: httpx.Client, agency: str) -> str | None:
    """The agency's active grant on the dataset: an earlier chapter's, or a new one (unconditional)."""
    listed = admin.get("/v1/grants", params={"dataset": DATASET, "status": "active"}).json().get("grants", [])
    for g in listed:
        if g["agency"] == agency:
            return str(g["id"])
    code, description = GRANTS[agency]
    r = demo.client(demo.state["keys"][agency]).post(
        "/v1/grants",
        json={
            "dataset": DATASET,
            "fields": ["licence_no", "enterprise_name", "legal_rep_name", "status"],
            "scenario": {"code": code, "description": description},
            "legal_basis": "Xinzhou Implementing Rules for Data Work, Art. 13",
        },
    )
    if r.status_code != 201 or r.json().get("status") != "active":
        demo.say(f"  [red]could not obtain a grant for {agency}:[/] {r.status_code} {r.text[:200]}")
        return None
    return str(r.json()["id"])


def _record() -> dict[str, Any]:
    stamp = int(time.time() * 1000) % 10**8
    return {
        "licence_no": f"LIC6{stamp:08d}",
        "credit_code": f"91140900MC{stamp:08d}",
        "enterprise_name": "Wutai Mountain Tea House",
        "legal_rep_name": "Zhao Liu",
        "legal_rep_id": f"1409001985020{stamp % 100000:05d}",
        "phone": "13900006006",
        "address": "6 Qiyun Road, Xinfu District",
        "region_code": "140902",
        "business_scope": "catering services",
        "registered_capital": 600_000,
        "issued_on": "2026-03-06",
        "status": "active",
    }


def run(demo: Demo) -> None:
    demo.chapter("6. Lineage for auditors: one record's life, a dataset's graph, usage, tamper evidence")
    keys = demo.state.get("keys") or {}
    if not demo.expect(
        all(k in keys for k in ("market", "psb", "health", "audit-office")), "chapter 2's agencies are there"
    ):
        return
    admin = demo.client()
    auditor = demo.client(keys["audit-office"])
    grants = {a: _grant_for(demo, admin, a) for a in GRANTS}
    if not demo.expect(all(grants.values()), f"two active grants on {DATASET}: psb's and health's"):
        return

    r = demo.client(keys["market"]).post(f"/v1/datasets/{DATASET}/records", json={"records": [_record()]})
    accepted = r.status_code == 200 and r.json().get("accepted") == 1
    if not demo.expect(accepted, "the market bureau publishes one more licence over HTTP"):
        demo.say(f"  {r.status_code} {r.text[:300]}")
        return
    record_id = r.json()["record_ids"][0]

    psb = demo.client(keys["psb"])
    seen = _until(
        lambda: any(
            x["record_id"] == record_id
            for x in psb.get(f"/v1/grants/{grants['psb']}/records", params={"limit": 5000, "wait": 1})
            .json()
            .get("records", [])
        )
    )
    demo.expect(bool(seen), "psb reads it over HTTP (health never reads it)")

    def lineage() -> dict[str, Any] | None:
        body = auditor.get(f"/v1/lineage/records/{record_id}").json()
        grants_seen = {d["grant"] for d in body.get("deliveries", [])}
        done = grants_seen >= set(grants.values()) and body.get("consumptions")
        return body if done else None

    out = _until(lineage)
    if not demo.expect(out is not None, "the lineage shows the deliveries and psb's consumption"):
        demo.say(f"  lineage: {auditor.get(f'/v1/lineage/records/{record_id}').text[:1500]}")
        return
    assert out is not None
    demo.say(f"\n[bold]databus lineage {record_id}[/] (as the audit office):")
    demo.console.print(record_tree(out))
    demo.say(f"  in the console: {demo.url}/console#/record/{record_id}")
    delivered = {d["grant"]: d for d in out["deliveries"]}
    demo.expect(
        out["publisher"] == "market" and out["validation"]["outcome"] == "accepted",
        "published by the market bureau, accepted by the validator",
    )
    demo.expect(
        bool(out["trace_id"]) and len(out["spans"]) >= 2,
        f"one trace id across the hops ({len(out['spans'])} spans kept by the embedded bus)",
    )
    health = delivered[grants["health"] or ""]
    demo.expect(
        len(delivered) >= 2
        and all(d["scenario"]["code"] for d in delivered.values())
        and health["scenario"]["code"] == GRANTS["health"][0],
        f"delivered under {len(delivered)} grants, each stamped with its own scenario (R7)",
    )
    demo.expect(
        [(c["grant"], c["agency"], c["via"]) for c in out["consumptions"]] == [(grants["psb"], "psb", "http")]
        and health["consumed"] == [],
        "consumed by psb only, under the grant it read: health's delivery shows no acknowledgement",
    )

    graph = auditor.get(f"/v1/lineage/datasets/{DATASET}").json()
    demo.say(f"\n[bold]databus lineage --dataset {DATASET}[/]:")
    demo.console.print(graph_tree(graph))
    types = [n["type"] for n in graph["nodes"]]
    demo.expect(
        types.count("grant") >= 2 and "publisher" in types and "consumer" in types,
        "the dataset graph links the publisher, the grants and the consumer agencies",
    )

    usage = auditor.get("/v1/usage", params={"dataset": DATASET, "by": "total"}).json()["totals"]
    demo.say(
        "\n[bold]databus usage --dataset market-licences --by total[/] (R18): "
        + ", ".join(f"{d} {t['records']} records / {t['bytes']} bytes" for d, t in usage.items())
    )
    demo.expect(
        usage["published"]["records"] >= 1
        and usage["delivered"]["records"] >= 2
        and usage["consumed"]["records"] >= 1,
        "usage is metered per dataset, grant and agency",
    )

    events = auditor.get(f"/v1/lineage/datasets/{DATASET}/openlineage").json()["events"]
    demo.expect(len(events) >= 3, f"the graph exports as {len(events)} OpenLineage run events")

    verified = auditor.get("/v1/audit/verify").json()
    lineage_rows = (verified.get("lineage") or {}).get("rows", 0)
    demo.say(
        f"  GET /v1/audit/verify -> ok={verified['ok']}, {verified['events']} events, "
        f"{lineage_rows} lineage rows checked against their digests"
    )
    demo.expect(
        verified["ok"] and lineage_rows > 0,
        "the audit chain and every lineage row verify: nothing was edited (R14)",
    )
