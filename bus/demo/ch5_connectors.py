"""Chapter 5: connectors admins register (R8, R13, R16).

The market bureau's systems never embed the SDK: a CSV export and a SQLite table flow onto
``market-licences`` through source connectors, and the public security bureau receives its view of
the dataset through a webhook sink into its own registered system (a small receiver the demo starts),
with signed batches and masked fields. A sink aimed at an unregistered destination is refused.
"""

from __future__ import annotations

import csv
import sqlite3
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bus.cli._http import table_of
from bus.cli.connector import status_row
from bus.demo import Demo
from connectors.webhook_receiver import WebhookReceiver

DATASET = "market-licences"
SECRET = "psb-inspection-webhook-secret"
COLUMNS = [
    "licence_no",
    "credit_code",
    "enterprise_name",
    "legal_rep_name",
    "legal_rep_id",
    "phone",
    "address",
    "region_code",
    "business_scope",
    "registered_capital",
    "issued_on",
    "status",
]
VIEW_FIELDS = ["licence_no", "enterprise_name", "legal_rep_name", "phone", "legal_rep_id", "status"]


def licence(i: int) -> dict[str, Any]:
    return {
        "licence_no": f"LIC5{i:07d}",
        "credit_code": f"91140900MC{i:08d}",
        "enterprise_name": f"Wutai Crafts Co. {i}",
        "legal_rep_name": f"Li Si {i}",
        "legal_rep_id": f"14092219850505{i % 10000:04d}",
        "phone": f"1350000{i % 10000:04d}",
        "address": f"{i} Jianshe Road, Wutai County",
        "region_code": "140922",
        "business_scope": "handicrafts",
        "registered_capital": 500_000 + i,
        "issued_on": "2026-02-01",
        "status": "active",
    }


def _wait(check: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return check()


def _grant_for_psb(demo: Demo) -> dict[str, Any] | None:
    """A grant of its own for psb's inspection app (chapter 3's grants serve other scenarios, R7)."""
    psb = demo.client(demo.state["keys"]["psb"])
    r = psb.post(
        "/v1/grants",
        json={
            "dataset": DATASET,
            "fields": VIEW_FIELDS,
            "scenario": {
                "code": "inspection-dispatch",
                "description": "dispatch licence checks to patrol officers",
            },
            "legal_basis": "Public Security Administration Punishment Law, Art. 87",
            "valid_until": (datetime.now(UTC) + timedelta(days=30)).isoformat(),
        },
    )
    demo.expect(
        r.status_code == 201 and r.json().get("status") == "active",
        "psb is granted the licences for its inspection app (unconditional data, R10)",
    )
    return dict(r.json()) if r.status_code == 201 else None


def run(demo: Demo) -> None:
    demo.chapter("5. Connectors: agency systems without the SDK (R8, R13, R16)")
    keys = demo.state.get("keys") or {}
    if not {"market", "psb"} <= set(keys) or DATASET not in (demo.state.get("datasets") or {}):
        demo.say(
            "  [yellow]skipped:[/] needs the agencies and the approved market-licences entry of chapter 2"
        )
        return
    grant = _grant_for_psb(demo)
    if grant is None:
        return
    admin = demo.client()
    with tempfile.TemporaryDirectory(prefix="databus-ch5-") as tmp, WebhookReceiver(SECRET) as receiver:
        _sources_and_sink(demo, admin, Path(tmp), grant, receiver)


def _sources_and_sink(
    demo: Demo, admin: Any, tmp: Path, grant: dict[str, Any], receiver: WebhookReceiver
) -> None:
    grant_id = str(grant["id"])
    # R8: a sink writes only into a system registered to the grantee
    r = admin.post(
        "/v1/connectors",
        json={
            "name": "psb-leak",
            "kind": "http-sink",
            "agency": "psb",
            "grant": grant_id,
            "config": {"url": "https://collector.example.com/hook", "secret": SECRET},
        },
    )
    demo.say(
        f"  sink to an unregistered host -> {r.status_code} {r.json().get('code')}: {r.json().get('detail')}"
    )
    demo.expect(
        r.status_code == 403 and r.json().get("code") == "egress.refused",
        "R8: a sink aimed at a system not registered to the grantee is refused at registration",
    )

    r = admin.post(
        "/v1/agencies/psb/systems",
        json={"name": "psb-inspection-app", "url": receiver.url, "in_jurisdiction": True},
    )
    demo.expect(
        r.status_code == 201, f"admin registers psb's receiving system {receiver.url} (in jurisdiction)"
    )
    r = admin.post(
        "/v1/connectors",
        json={
            "name": "psb-webhook",
            "kind": "http-sink",
            "agency": "psb",
            "grant": grant_id,
            "start": True,
            "config": {"url": receiver.url, "secret": SECRET, "batch_size": 50},
        },
    )
    demo.expect(
        r.status_code == 201 and r.json()["config"]["secret"] == "***",
        "R8/R16: webhook sink registered into psb's own domestic system; its secret is never shown back",
    )

    # R13: sources bound to the catalogued dataset of their agency
    csv_path = tmp / "licences.csv"
    with csv_path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        w.writerows([licence(i)[c] for c in COLUMNS] for i in range(20))
    db = tmp / "licensing.db"
    with sqlite3.connect(db) as conn:
        conn.execute(f"CREATE TABLE issued (id INTEGER PRIMARY KEY, {', '.join(COLUMNS)})")
        conn.executemany(
            f"INSERT INTO issued VALUES (?, {', '.join('?' * len(COLUMNS))})",
            [(i, *[licence(i)[c] for c in COLUMNS]) for i in range(100, 130)],
        )
    bodies = [
        {
            "name": "market-csv",
            "kind": "file-source",
            "agency": "market",
            "dataset": DATASET,
            "start": True,
            "config": {"path": str(csv_path), "format": "csv", "key_field": "licence_no"},
        },
        {
            "name": "market-sql",
            "kind": "sql-source",
            "agency": "market",
            "dataset": DATASET,
            "start": True,
            "config": {
                "url": f"sqlite:///{db}",
                "table": "issued",
                "incremental_column": "id",
                "poll_interval": 0.2,
            },
        },
    ]
    for body in bodies:
        r = admin.post("/v1/connectors", json=body)
        demo.expect(
            r.status_code == 201, f"R13: {body['name']} ({body['kind']}) bound to {DATASET} of market"
        )

    wanted = 50

    def arrived() -> int:
        return len({x["value"].get("licence_no") for x in receiver.records} & expected)

    expected = {licence(i)["licence_no"] for i in [*range(20), *range(100, 130)]}
    got = _wait(lambda: arrived() >= wanted, 60)
    demo.expect(got, f"{wanted} licences from the CSV file and the SQL table reached psb's webhook")

    # the systems keep producing while the connectors run
    with csv_path.open("a", newline="") as f:
        csv.writer(f).writerows([licence(i)[c] for c in COLUMNS] for i in range(20, 25))
    with sqlite3.connect(db) as conn:
        conn.executemany(
            f"INSERT INTO issued VALUES (?, {', '.join('?' * len(COLUMNS))})",
            [(i, *[licence(i)[c] for c in COLUMNS]) for i in range(130, 135)],
        )
    wanted += 10
    expected |= {licence(i)["licence_no"] for i in [*range(20, 25), *range(130, 135)]}
    got = _wait(lambda: arrived() >= wanted, 30)
    demo.expect(got, "10 more rows appended to the file and inserted into the table arrive too")

    sample = next((x for x in receiver.records if x["value"].get("licence_no") == "LIC50000001"), None)
    if sample is not None:
        demo.say(f"  psb's webhook received: {sample['value']}")
        demo.say(f"  delivered under grant {grant_id}, trace context {sample['traceparent']}")
    view = sample["value"] if sample else {}
    granted = set(grant.get("fields") or [])
    protected = all(
        str(view.get(f, "")).startswith(prefix)
        for f, prefix in (("phone", "*"), ("legal_rep_id", "ps-"))
        if f in granted
    )
    demo.expect(
        bool(view) and set(view) == granted and protected,
        "R7/R12: only the granted fields; personal fields masked, sensitive ones pseudonymised",
    )
    demo.expect(receiver.bad_signatures == 0, "every batch carried a valid HMAC signature")

    def settled() -> bool:
        rows = admin.get("/v1/connectors").json()["connectors"]
        by = {c["name"]: c["status"] for c in rows}
        return (
            by.get("psb-webhook", {}).get("records_out", 0) >= wanted
            and by.get("market-csv", {}).get("lag") == 0
            and by.get("market-sql", {}).get("lag") == 0
        )

    _wait(settled, 10)
    rows = admin.get("/v1/connectors").json()["connectors"]
    columns = ["name", "kind", "state", "in", "out", "dead letters", "errors", "lag"]
    demo.console.print(table_of([status_row(c) for c in rows], columns, title="connector status"))
    by = {c["name"]: c["status"] for c in rows}
    demo.expect(
        by["market-csv"].get("records_out") == 25 and by["market-sql"].get("records_out") == 35,
        "sources report records in/out and no lag",
    )
    demo.expect(
        by["psb-webhook"].get("records_out", 0) >= wanted and by["psb-webhook"].get("state") == "running",
        "the sink reports what it delivered",
    )
    if sample is not None:
        demo.state["connector_record"] = sample["record_id"]

    # stop the sink before its receiver goes away with this chapter
    for name in ("psb-webhook", "market-csv", "market-sql"):
        admin.post(f"/v1/connectors/{name}/stop")
    stopped = _wait(
        lambda: all(
            c["status"].get("state") == "stopped" for c in admin.get("/v1/connectors").json()["connectors"]
        ),
        10,
    )
    demo.expect(stopped, "connectors stopped at a batch boundary, positions kept for a restart")
