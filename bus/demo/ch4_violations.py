"""Chapter 4: the rules no other exchange enforces (R8, R9) and the response to violations (R15).

A tax bureau tries to catalogue what the market bureau already shares (refused at submit), then publishes
copies of licence records into an entry it did get approved (refused record by record). The public
security bureau republishes what it received under its grant (refused as forwarding, incident opened),
a file of what it received leaks and is attributed to its grant, and the emergency switch stops its
stream within a second. Needs chapter 2 (agencies and catalogue in ``demo.state``).
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from rich.table import Table

from bus.client import Subscriber
from bus.demo import Demo

BASE = 700_000  # licence numbers of this chapter's records, clear of earlier chapters'


def licence(i: int) -> dict[str, Any]:
    n = BASE + i
    return {
        "licence_no": f"LIC{n:08d}",
        "credit_code": f"91140900MA{n:08d}",
        "enterprise_name": f"Xinzhou Coal Trading Co. {n}",
        "legal_rep_name": f"Li Si {n}",
        "legal_rep_id": f"14090219750612{n % 10000:04d}",
        "phone": f"1380000{n % 10000:04d}",
        "address": f"{n % 500} Chang'an Road, Xinfu District",
        "region_code": "140902",
        "business_scope": "coal wholesale",
        "registered_capital": 5_000_000 + n,
        "issued_on": "2026-02-01",
        "status": "active",
    }


def _field(name: str, ftype: Any, semantic: str | None, sensitivity: str) -> dict[str, Any]:
    f: dict[str, Any] = {"name": name, "type": ftype, "sensitivity": sensitivity}
    if semantic:
        f["semantic"] = semantic
    return f


ENTERPRISE = [
    _field("credit_code", "string", "enterprise.credit_code", "public"),
    _field("enterprise_name", "string", "enterprise.name", "public"),
    _field("address", "string", "enterprise.address", "internal"),
]


def entry(dataset_id: str, title: str, fields: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": dataset_id,
        "title": title,
        "description": title,
        "category": "industry",
        "grade": "general",
        "tags": ["enterprise"],
        "domestic_only": True,
        "sharing": {
            "attribute": "conditional",
            "reason": "taxpayer data",
            "legal_basis": "Tax Administration Law",
            "eligible_agencies": ["market"],
        },
        "schema": {
            "type": "record",
            "name": dataset_id.replace("-", "_"),
            "namespace": "gov.demo",
            "fields": fields,
        },
    }


def _rows(title: str, columns: list[str], rows: list[list[Any]]) -> Table:
    t = Table(title=title, title_justify="left")
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*["" if v is None else str(v) for v in r])
    return t


def _submit_and_approve(
    demo: Demo, owner: httpx.Client, dmd: httpx.Client, body: dict[str, Any]
) -> dict | None:
    assert owner.post("/v1/datasets", json=body).status_code == 201
    sub = owner.post(f"/v1/datasets/{body['id']}/submit")
    if sub.status_code != 200:
        demo.expect(False, f"{body['id']} submitted ({sub.json().get('code')}: {sub.json().get('detail')})")
        return None
    report = sub.json().get("overlap")
    review = dmd.post(
        f"/v1/datasets/{body['id']}/review",
        json={"decision": "approve", "comment": "new fields justify the entry; request the rest"},
    )
    demo.expect(
        review.status_code == 200 and review.json()["status"] == "approved",
        f"dmd sees the partial overlap report and approves {body['id']}",
    )
    return report


def run(demo: Demo) -> None:
    demo.chapter("4. Re-collection, forwarding, leaks, incidents, emergency switch (R8, R9, R15)")
    keys: dict[str, str] = demo.state.get("keys") or {}
    if not {"market", "psb", "dmd", "audit-office"} <= keys.keys():
        demo.say("  [yellow]skipped:[/] needs the agencies and catalogue of chapter 2")
        return
    admin = demo.client()
    r = admin.post(
        "/v1/agencies", json={"id": "tax", "name": "Tax Bureau", "region": "140900", "roles": ["agency"]}
    )
    if r.status_code != 201:
        demo.expect(False, f"tax bureau registered ({r.text[:200]})")
        return
    keys["tax"] = r.json()["api_key"]
    market, tax, psb = demo.client(keys["market"]), demo.client(keys["tax"]), demo.client(keys["psb"])
    dmd, auditor = demo.client(keys["dmd"]), demo.client(keys["audit-office"])

    # --- R9 at submit: an entry that collects nothing new ----------------------------------------------
    demo.say(
        "\n[bold]R9, catalogue:[/] the tax bureau catalogues enterprise data the market bureau already shares"
    )
    tax.post("/v1/datasets", json=entry("tax-enterprises", "Enterprises (tax copy)", ENTERPRISE))
    r = tax.post("/v1/datasets/tax-enterprises/submit")
    body = r.json()
    demo.say(f"  POST /v1/datasets/tax-enterprises/submit -> {r.status_code} {body.get('code')}")
    demo.say(f"  {body.get('detail')}")
    demo.expect(
        r.status_code == 409
        and body.get("code") == "recollection.overlap"
        and body.get("request_instead", [{}])[0].get("dataset") == "market-licences",
        "submit refused with recollection.overlap, naming market-licences and the fields to request",
    )

    returns = entry(
        "tax-returns",
        "Enterprise tax returns",
        [
            *ENTERPRISE,
            _field("tax_period", "string", "tax.period", "internal"),
            _field("tax_due", "long", "tax.amount_due", "internal"),
        ],
    )
    report = _submit_and_approve(demo, tax, dmd, returns)
    if report is None:
        return
    demo.say(
        f"  partial overlap shown to the reviewer: covered {[c['field'] for c in report['covered_fields']]}, "
        f"new {report['new_fields']}, request instead {[s['dataset'] for s in report['request_instead']]}"
    )
    demo.expect(
        report["kind"] == "partial" and report["new_fields"] == ["tax_period", "tax_due"],
        "tax-returns is a partial overlap: accepted, reported to the reviewer",
    )

    # --- R9 at publish: copies of another agency's records ----------------------------------------------
    sent = market.post(
        "/v1/datasets/market-licences/records", json={"records": [licence(i) for i in range(10)]}
    )
    demo.expect(sent.status_code == 200 and sent.json()["accepted"] == 10, "market publishes 10 new licences")
    copies = [
        {
            "credit_code": licence(i)["credit_code"],
            "enterprise_name": licence(i)["enterprise_name"],
            "address": licence(i)["address"],
            "tax_period": "2026Q1",
            "tax_due": 1200 + i,
        }
        for i in range(3)
    ]
    new = {
        "credit_code": "91140900MA99000001",
        "enterprise_name": "Wutai Mountain Tea House",
        "address": "1 Temple Road",
        "tax_period": "2026Q1",
        "tax_due": 300,
    }
    same_enterprise = {**copies[0], "address": "moved: 9 Station Road"}  # names it, new attributes
    out = tax.post(
        "/v1/datasets/tax-returns/records", json={"records": [*copies, new, same_enterprise]}
    ).json()
    codes = [(x["index"], x["code"]) for x in out.get("rejected", [])]
    demo.console.print(
        _rows(
            "tax publishes 5 returns",
            ["#", "outcome", "detail"],
            [[x["index"], x["code"], x["detail"][:170]] for x in out.get("rejected", [])]
            + [[i, "accepted", ""] for i in (3, 4) if i not in dict(codes)],
        )
    )
    demo.expect(
        codes == [(0, "recollection.detected"), (1, "recollection.detected"), (2, "recollection.detected")]
        and out.get("accepted") == 2,
        "3 copies refused (recollection.detected); a new enterprise and a same-enterprise record with a "
        "new address pass",
    )

    # --- R8: a grantee republishes what it received -----------------------------------------------------
    demo.say("\n[bold]R8, forwarding:[/] the PSB receives licences under a grant and republishes them")
    g = psb.post(
        "/v1/grants",
        json={
            "dataset": "market-licences",
            "fields": ["credit_code", "enterprise_name", "address", "legal_rep_id"],
            "scenario": {"code": "PSB-ENT-RISK", "description": "enterprise risk screening"},
            "legal_basis": "People's Police Law, Art. 6",
        },
    ).json()
    demo.expect(g.get("status") == "active", f"psb holds grant {g.get('id')} (scenario PSB-ENT-RISK)")
    if g.get("status") != "active":
        return
    grant_id = g["id"]
    watch = entry(
        "psb-enterprise-watch",
        "Enterprise watch list",
        [
            *ENTERPRISE,
            _field("rep_ref", ["null", "string"], "person.id_number", "sensitive"),
            _field("risk_level", "string", "psb.risk_level", "internal"),
        ],
    )
    watch["schema"]["fields"][3]["default"] = None
    watch["sharing"] = {
        "attribute": "none",
        "reason": "police intelligence",
        "legal_basis": "People's Police Law",
    }
    if _submit_and_approve(demo, psb, dmd, watch) is None:
        return
    market.post("/v1/datasets/market-licences/records", json={"records": [licence(i) for i in range(10, 15)]})
    received = _read(psb, grant_id, {licence(i)["credit_code"] for i in range(10, 15)})
    demo.expect(
        len(received) == 5,
        f"psb received 5 records under {grant_id}; legal_rep_id arrives as "
        f"{received[0]['legal_rep_id'] if received else '?'}",
    )
    forwarded = [
        {
            "credit_code": v["credit_code"],
            "enterprise_name": v["enterprise_name"],
            "address": v["address"],
            "rep_ref": v["legal_rep_id"] if i < 2 else None,
            "risk_level": "low",
        }
        for i, v in enumerate(received[:3])
    ]
    out = psb.post("/v1/datasets/psb-enterprise-watch/records", json={"records": forwarded}).json()
    for x in out.get("rejected", []):
        demo.say(f"  record {x['index']}: {x['code']}: {x['detail'][:150]}")
    demo.expect(
        [x["code"] for x in out.get("rejected", [])] == ["forwarding.detected"] * 3,
        "all 3 refused as forwarding.detected: two carry the grant's pseudonyms, one matches by fingerprint",
    )

    wanted = {("psb", "forwarding"), ("tax", "recollection")}
    deadline = (
        time.monotonic() + 10
    )  # incidents are written with the batch's bookkeeping, just after the answer
    while True:
        incidents = auditor.get("/v1/incidents").json().get("incidents", [])
        if wanted <= {(i["agency_id"], i["kind"]) for i in incidents} or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    demo.console.print(
        _rows(
            "incidents (GET /v1/incidents, auditor)",
            ["id", "severity", "kind", "agency", "dataset", "count"],
            [
                [i["id"], i["severity"], i["kind"], i["agency_id"], i["dataset_id"], i["count"]]
                for i in incidents
            ],
        )
    )
    kinds = {(i["agency_id"], i["kind"]) for i in incidents}
    demo.expect(
        wanted <= kinds,
        "incidents opened: forwarding by psb (critical), re-collection by tax (high)",
    )

    # --- R8: a leaked file is attributed to its grant ---------------------------------------------------
    demo.say("\n[bold]R8, leak attribution:[/] a file of psb's records turns up outside the bus")
    with tempfile.TemporaryDirectory(prefix="databus-leak-") as tmp:
        leak = Path(tmp) / "leaked.jsonl"
        leak.write_text("".join(json.dumps(v) + "\n" for v in received))
        demo.say(f"  $ databus attribute {leak.name}   (POST /v1/audit/attribute, auditor key)")
        found = auditor.post(
            "/v1/audit/attribute", content=leak.read_bytes(), headers={"Content-Type": "application/x-ndjson"}
        ).json()
    demo.say(f"  {found.get('summary')}")
    top = (found.get("grants") or [{}])[0]
    demo.expect(
        found.get("attributed") and top.get("grant_id") == grant_id and top.get("agency_id") == "psb",
        f"the leak is attributed to grant {grant_id} (psb, scenario {top.get('scenario', {}).get('code')}, "
        f"first delivered {top.get('deliveries', {}).get('first_at')})",
    )

    # --- R15: the emergency switch stops a stream ---------------------------------------------------------
    _suspension(demo, admin, market, psb, keys["psb"], grant_id)


def _read(
    client: httpx.Client, grant_id: str, credit_codes: set[str], timeout: float = 15.0
) -> list[dict[str, Any]]:
    """Read the grant's records over HTTP until the ones with these credit codes arrived."""
    got: dict[str, dict[str, Any]] = {}
    cursor = None
    deadline = time.monotonic() + timeout
    while len(got) < len(credit_codes) and time.monotonic() < deadline:
        params: dict[str, Any] = {"limit": 500, "wait": 0.5}
        if cursor:
            params["after"] = cursor
        page = client.get(f"/v1/grants/{grant_id}/records", params=params).json()
        cursor = page.get("next", cursor)
        for rec in page.get("records", []):
            if rec["value"].get("credit_code") in credit_codes:
                got[rec["value"]["credit_code"]] = rec["value"]
    return [got[c] for c in sorted(got)]


class _Stream(threading.Thread):
    """The market bureau publishing a steady stream over HTTP (5 records every 50 ms)."""

    def __init__(self, market: httpx.Client) -> None:
        super().__init__(daemon=True)
        self.market = market
        self.sent_at: dict[str, float] = {}  # credit code -> when its batch was acknowledged
        self.stop = threading.Event()

    def run(self) -> None:
        i = 1000
        while not self.stop.is_set():
            batch = [licence(i + k) for k in range(5)]
            self.market.post("/v1/datasets/market-licences/records", json={"records": batch})
            now = time.monotonic()
            for rec in batch:
                self.sent_at[rec["credit_code"]] = now
            i += 5
            self.stop.wait(0.05)


def _suspension(
    demo: Demo, admin: httpx.Client, market: httpx.Client, psb: httpx.Client, psb_key: str, grant_id: str
) -> None:
    demo.say("\n[bold]R15, emergency switch:[/] the admin suspends psb's grant while records stream")
    sub = Subscriber.from_gateway(demo.url, psb_key, grant_id, group=f"demo-ch4-{time.time_ns()}")
    stream = _Stream(market)
    stream.start()
    after: list[tuple[str, float]] = []
    try:
        began, flowing = time.monotonic(), 0
        while time.monotonic() < began + 15 and (flowing < 20 or time.monotonic() < began + 1.0):
            flowing += len(sub.poll(1000, 0.2))
        r = admin.post(
            "/v1/emergency/suspend",
            json={"kind": "grant", "id": grant_id, "reason": "forwarding incident under investigation"},
        )
        at = time.monotonic()
        demo.say(
            f"  POST /v1/emergency/suspend -> {r.status_code}, "
            f"policy version {r.json().get('policy_version')}",
        )
        while time.monotonic() < at + 2.5:
            after.extend((d.value.get("credit_code", ""), time.monotonic() - at) for d in sub.poll(1000, 0.1))
    finally:
        stream.stop.set()
        stream.join(10)
        sub.close()
    late = [c for c, _ in after if stream.sent_at.get(c, 0.0) > at + 1.0]
    published_after = sum(1 for t in stream.sent_at.values() if t > at + 1.0)
    last = max((t for _, t in after), default=0.0)
    demo.say(
        f"  {flowing} deliveries before the switch, {len(after)} after it (the last {last:.2f}s after it); "
        f"{published_after} records published more than 1 s after the switch, {len(late)} of them delivered"
    )
    demo.expect(
        r.status_code == 200 and not late and published_after > 0,
        "nothing published more than 1 s after the suspension reaches psb",
    )
    read = psb.get(f"/v1/grants/{grant_id}/records", params={"limit": 1})
    demo.expect(
        read.status_code == 423 and read.json().get("code") == "suspended",
        f"psb's HTTP read is refused: {read.status_code} {read.json().get('code')}",
    )
    r = admin.post(
        "/v1/emergency/resume", json={"kind": "grant", "id": grant_id, "reason": "incident handled"}
    )
    demo.expect(
        r.status_code == 200 and not r.json().get("suspended"), "the admin resumes the grant (audited)"
    )
