"""Chapter 2: agencies, the data catalogue and its review (R1-R6, R9, R14).

Leaves ``demo.state["keys"] = {agency_id: api_key}`` and ``demo.state["datasets"] = {dataset_id: dataset
JSON}`` (``market-licences``, ``health-clinics``, ``psb-residents``, all approved) for later chapters.
"""

from __future__ import annotations

import time
from typing import Any

from rich.table import Table

from bus.catalog import events
from bus.demo import Demo
from bus.exchange.kafka import assign_from_committed, new_consumer
from bus.schemas import load_schema

AGENCIES = [
    ("psb", "Public Security Bureau", ["agency"]),
    ("market", "Market Regulation Bureau", ["agency"]),
    ("health", "Health Commission", ["agency"]),
    ("dmd", "Data Management Department", ["reviewer"]),
    ("audit-office", "Audit Office", ["auditor"]),
]
REGION = "140900"  # Xinzhou


def entries() -> list[tuple[str, dict[str, Any]]]:
    """The three catalogue entries: unconditional, conditional, not shared."""
    return [
        (
            "market",
            {
                "id": "market-licences",
                "title": "Business licences",
                "category": "basic",
                "grade": "general",
                "description": "Every business licence issued in the city, updated as licences are issued.",
                "tags": ["enterprise", "licence"],
                "domestic_only": True,
                "sharing": {"attribute": "unconditional"},
                "schema": load_schema("examples/licence"),
            },
        ),
        (
            "health",
            {
                "id": "health-clinics",
                "title": "Licensed medical institutions",
                "category": "industry",
                "grade": "important",
                "description": "Clinics, hospitals and pharmacies with their directors.",
                "tags": ["health"],
                "domestic_only": True,
                "sharing": {
                    "attribute": "conditional",
                    "reason": "directors' identity data is personal information",
                    "legal_basis": "Personal Information Protection Law, Art. 13, 34; Xinzhou Rules Art. 17",
                    "shareable_fields": [
                        "clinic_id",
                        "clinic_name",
                        "credit_code",
                        "address",
                        "region_code",
                        "clinic_type",
                        "director_name",
                        "director_id",
                        "licensed_until",
                    ],
                    "eligible_agencies": ["psb"],
                },
                "schema": load_schema("examples/clinic"),
            },
        ),
        (
            "psb",
            {
                "id": "psb-residents",
                "title": "Registered residents",
                "category": "basic",
                "grade": "core",
                "description": "Household registration of every resident.",
                "tags": ["population"],
                "domestic_only": True,
                "sharing": {
                    "attribute": "none",
                    "reason": "core population data; identity and household records",
                    "legal_basis": "Resident Identity Card Law, Art. 6; Data Security Law, Art. 21",
                },
                "schema": load_schema("examples/resident"),
            },
        ),
    ]


def _table(title: str, columns: list[str], rows: list[list[Any]]) -> Table:
    t = Table(title=title, title_justify="left")
    for i, c in enumerate(columns):
        first = max([len(c), *(len(str(r[0])) for r in rows)]) if i == 0 else None
        t.add_column(c, no_wrap=i < len(columns) - 1, min_width=first)
    for r in rows:
        t.add_row(*["" if v is None else str(v) for v in r])
    return t


def run(demo: Demo) -> None:
    demo.chapter("2. The data catalogue: agencies, entries, review, audit (R1-R6, R9, R14)")
    admin = demo.client()

    # --- agencies and keys ----------------------------------------------------------------------------
    keys: dict[str, str] = {}
    rows = []
    for agency_id, name, roles in AGENCIES:
        r = admin.post("/v1/agencies", json={"id": agency_id, "name": name, "region": REGION, "roles": roles})
        if r.status_code == 201:
            keys[agency_id] = r.json()["api_key"]
            rows.append([agency_id, name, ", ".join(roles), r.json()["api_key"][:10] + "..."])
    demo.console.print(
        _table(
            "agencies registered by the admin (each key shown once, stored as a hash)",
            ["agency", "name", "roles", "API key"],
            rows,
        )
    )
    demo.expect(len(keys) == len(AGENCIES), f"{len(AGENCIES)} agencies registered, each with its own API key")
    demo.state["keys"] = keys
    if len(keys) < len(AGENCIES):
        return
    client = {a: demo.client(k) for a, k in keys.items()}

    # --- catalogue entries, and the ones refused -----------------------------------------------------
    for owner, body in entries():
        r = client[owner].post("/v1/datasets", json=body)
        demo.expect(
            r.status_code == 201 and r.json()["status"] == "draft",
            f"{owner} catalogues {body['id']} ({body['sharing']['attribute']}, grade {body['grade']}) "
            "as a draft",
        )
    refusals = [
        (
            "R3",
            "psb",
            {**dict(entries()[2][1]), "id": "psb-residents-open", "sharing": {"attribute": "unconditional"}},
            "catalog.core_not_unconditional",
        ),
        (
            "R6",
            "health",
            {
                **dict(entries()[1][1]),
                "id": "health-staff",
                "sharing": {"attribute": "conditional", "eligible_agencies": ["psb"]},
            },
            "catalog.reason_required",
        ),
        (
            "R5",
            "market",
            {
                **dict(entries()[0][1]),
                "id": "market-extra",
                "sharing": {
                    "attribute": "conditional",
                    "reason": "x",
                    "legal_basis": "y",
                    "shareable_fields": ["licence_no", "salary"],
                },
            },
            "catalog.unknown_field",
        ),
    ]
    for rule, owner, body, code in refusals:
        r = client[owner].post("/v1/datasets", json=body)
        code_got = r.json().get("code")
        detail = r.json().get("detail")
        demo.say(f"  [dim]{rule}: {owner} tries {body['id']} -> {r.status_code} {code_got}: {detail}[/]")
        demo.expect(r.status_code == 422 and code_got == code, f"{rule}: a refused entry says why ({code})")

    # --- review: submit, overlap report, approve --------------------------------------------------------
    r = client["market"].post("/v1/datasets/market-licences/review", json={"decision": "approve"})
    demo.expect(
        r.status_code == 403 and r.json()["code"] == "auth.forbidden",
        "R1: an agency cannot approve entries (only the reviewer role)",
    )
    review_rows = []
    for owner, body in entries():
        sub = client[owner].post(f"/v1/datasets/{body['id']}/submit")
        overlap = sub.json().get("overlap") if sub.status_code == 200 else None
        rev = client["dmd"].post(
            f"/v1/datasets/{body['id']}/review",
            json={"decision": "approve", "comment": "accurate, complete, lawful sharing"},
        )
        ok = sub.status_code == 200 and rev.status_code == 200 and rev.json()["status"] == "approved"
        demo.expect(ok, f"{body['id']} submitted by {owner} and approved by dmd")
        review_rows.append(
            [
                body["id"],
                owner,
                body["sharing"]["attribute"],
                body["grade"],
                rev.json().get("status") if rev.status_code == 200 else rev.json().get("code"),
                _overlap_text(overlap),
            ]
        )
    demo.console.print(
        _table(
            "review by the data management department",
            ["dataset", "owner", "sharing", "grade", "status", "overlap (R9), for the reviewer"],
            review_rows,
        )
    )

    # --- what other agencies see -------------------------------------------------------------------------
    listing = client["market"].get("/v1/datasets").json()["datasets"]
    demo.console.print(
        _table(
            "the catalogue as market sees it",
            ["dataset", "owner", "sharing", "grade", "status", "schema fields"],
            [
                [
                    d["id"],
                    d["owner"],
                    d["sharing"]["attribute"],
                    d["grade"],
                    d["status"],
                    f"{len(d['schema']['fields'])} shown"
                    + (
                        f", {d['schema']['redacted_fields']} withheld"
                        if d["schema"].get("redacted_fields")
                        else ""
                    ),
                ]
                for d in listing
            ],
        )
    )
    residents = next((d for d in listing if d["id"] == "psb-residents"), None)
    demo.expect(
        residents is not None
        and residents["schema"].get("redacted_fields", 0) > 0
        and all(f.get("sensitivity") not in ("personal", "sensitive") for f in residents["schema"]["fields"]),
        "R5: a not-shared entry is listed with its metadata, without its personal/sensitive fields",
    )

    stats = client["audit-office"].get("/v1/catalog/stats").json()
    demo.say(
        f"  catalogue stats (R2): by agency {stats['by_agency']}, by attribute {stats['by_attribute']}, "
        f"by grade {stats['by_grade']}; median review time {stats['review_times']['median_seconds']} s"
    )
    demo.expect(stats["by_status"].get("approved") == 3, "R2: statistics count three approved entries")

    # --- agency systems follow the catalogue on bus.catalog ---------------------------------------------
    ctx = demo.stack.ctx
    assert ctx is not None
    ctx.producer.flush(10)
    consumer = new_consumer(ctx.bootstrap, "demo-catalog-follower", ctx.settings)
    got: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + 10
        while not assign_from_committed(consumer, [ctx.topics.catalog]) and time.monotonic() < deadline:
            time.sleep(0.05)
        while len(got) < 9 and time.monotonic() < deadline:
            got.extend(
                events.decode(m.value() or b"") for m in consumer.consume(100, 0.1) if m.error() is None
            )
    finally:
        consumer.close()
    demo.say("  bus.catalog events: " + ", ".join(sorted({e["action"] for e in got})))
    demo.expect(
        len(got) >= 9,
        f"R2: {len(got)} Avro catalogue events on {ctx.topics.catalog} (3 created, 3 submitted, 3 reviewed)",
    )

    # --- the audit log -----------------------------------------------------------------------------------
    audit_events = client["audit-office"].get("/v1/audit/events", params={"limit": 1000}).json()["events"]
    actions: dict[str, int] = {}
    for e in audit_events:
        actions[e["action"]] = actions.get(e["action"], 0) + 1
    demo.say(f"  audit log: {actions}")
    verify = client["audit-office"].get("/v1/audit/verify").json()
    demo.expect(
        verify.get("ok") is True and verify.get("events", 0) >= len(audit_events),
        f"R14: the hash chain verifies ({verify.get('events')} events, first_bad={verify.get('first_bad')})",
    )

    demo.state["datasets"] = {
        d["id"]: d
        for d in client["dmd"].get("/v1/datasets").json()["datasets"]
        if d["id"] in {b["id"] for _, b in entries()}
    }


def _overlap_text(report: dict[str, Any] | None) -> str:
    """The R9 report in a line: how many fields other agencies already share, and which datasets."""
    if not report:
        return "none"
    covered = report.get("covered_fields") or []
    sources = sorted({s.get("dataset", "?") for c in covered for s in c.get("available_from") or []})
    if not covered:
        return str(report.get("kind", report))[:60]
    return f"{report.get('kind', 'partial')}: {len(covered)} fields shared by {', '.join(sources)}"
