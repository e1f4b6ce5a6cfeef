"""R14: every control-plane change is a link of the hash chain; verify finds an edited or removed row."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

from bus.context import BusContext
from bus.lineage.audit import verify
from tests.helpers import licence_schema
from tests.integration.test_catalog_api import Bus, entry, problem

pytestmark = pytest.mark.integration


@pytest.fixture
def bus(ctx: BusContext) -> Iterator[Bus]:
    b = Bus(ctx)
    b.agency("market")
    b.agency("dmd", "reviewer")
    b.agency("audit-office", "auditor")
    b.approved("market", entry())  # created, submitted, reviewed
    yield b
    b.http.close()


def chain(bus: Bus) -> dict[str, Any]:
    r = bus.call("audit-office", "GET", "/v1/audit/verify")
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_r14_every_control_plane_change_is_audited_and_the_chain_verifies(bus: Bus) -> None:
    v2 = licence_schema()
    v2["fields"].append({"name": "email", "type": ["null", "string"], "default": None})
    bus.call("market", "PUT", "/v1/datasets/market-licences/schema", json=v2)
    bus.call("market", "POST", "/v1/datasets/market-licences/retire")
    events = bus.call("audit-office", "GET", "/v1/audit/events").json()["events"]
    assert [(e["actor"], e["action"], e["subject_id"]) for e in events] == [
        ("admin", "agency.created", "market"),
        ("admin", "agency.created", "dmd"),
        ("admin", "agency.created", "audit-office"),
        ("market", "dataset.created", "market-licences"),
        ("market", "dataset.submitted", "market-licences"),
        ("dmd", "dataset.reviewed", "market-licences"),
        ("market", "dataset.schema_added", "market-licences"),
        ("market", "dataset.retired", "market-licences"),
    ]
    assert events[0]["data"]["roles"] == ["agency"] and "api_key" not in str(events[0]["data"])
    assert events[5]["data"]["decision"] == "approve" and events[6]["data"]["version"] == 2
    assert all(e["prev_hash"] == p["hash"] for p, e in zip(events, events[1:], strict=False))
    result = chain(bus)
    assert (result["ok"], result["events"], result["first_bad"]) == (True, 8, None)
    assert bus.call("admin", "GET", "/v1/audit/verify").json()["ok"] is True


def test_r14_editing_one_stored_row_is_pinpointed(bus: Bus, ctx: BusContext) -> None:
    assert chain(bus)["ok"] is True
    with ctx.store.engine.begin() as conn:  # an insider edits the log behind the bus's back
        conn.execute(text("UPDATE audit_events SET actor = 'psb' WHERE seq = 5"))
    result = chain(bus)
    assert (result["ok"], result["first_bad"], result["events"]) == (False, 5, 4)
    assert verify(ctx.store)["first_bad"] == 5
    with ctx.store.engine.begin() as conn:
        conn.execute(text("UPDATE audit_events SET actor = 'market' WHERE seq = 5"))  # put back: intact again
    assert chain(bus)["ok"] is True


def test_r14_editing_the_data_of_a_row_is_pinpointed(bus: Bus, ctx: BusContext) -> None:
    with ctx.store.engine.begin() as conn:
        conn.execute(
            text("UPDATE audit_events SET data = :d WHERE seq = 6"),
            {"d": '{"decision": "reject", "comment": null, "status": "approved", "schema_version": 1}'},
        )
    assert chain(bus)["first_bad"] == 6


def test_r14_deleting_rows_is_detected(bus: Bus, ctx: BusContext) -> None:
    with ctx.store.engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_events WHERE seq = 3"))
    result = chain(bus)
    assert (result["ok"], result["first_bad"], result["events"]) == (False, 4, 2)
    with ctx.store.engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_events WHERE seq >= 3"))
    assert chain(bus)["ok"] is False and chain(bus)["first_bad"] == 3  # the tail is gone: the head remembers


def test_r14_only_auditors_and_admin_read_the_audit_log(bus: Bus) -> None:
    for who in ("market", "dmd"):
        problem(bus.call(who, "GET", "/v1/audit/verify"), 403, "auth.forbidden")
        problem(bus.call(who, "GET", "/v1/audit/events"), 403, "auth.forbidden")
    problem(bus.call(None, "GET", "/v1/audit/events"), 401, "auth.missing")


def test_r14_audit_events_filters_and_cursor(bus: Bus) -> None:
    def seqs(**params: Any) -> list[int]:
        r = bus.call("audit-office", "GET", "/v1/audit/events", params=params)
        assert r.status_code == 200, r.text
        return [e["seq"] for e in r.json()["events"]]

    assert seqs(actor="admin") == [1, 2, 3]
    assert seqs(action="dataset.submitted") == [5]
    assert seqs(action="dataset.*") == [4, 5, 6]
    assert seqs(subject="dmd") == [2]
    assert seqs(subject_type="dataset", actor="dmd") == [6]
    now = datetime.now(UTC)
    assert seqs(since=(now - timedelta(minutes=5)).isoformat()) == [1, 2, 3, 4, 5, 6]
    assert seqs(until=(now - timedelta(minutes=5)).isoformat()) == []
    page = bus.call("audit-office", "GET", "/v1/audit/events", params={"limit": 4}).json()
    assert [e["seq"] for e in page["events"]] == [1, 2, 3, 4] and page["next"] == 4
    rest = bus.call(
        "audit-office", "GET", "/v1/audit/events", params={"limit": 4, "after": page["next"]}
    ).json()
    assert [e["seq"] for e in rest["events"]] == [5, 6] and rest["next"] is None
    problem(bus.call("audit-office", "GET", "/v1/audit/events", params={"limit": 0}), 422, "request.invalid")
    problem(
        bus.call("audit-office", "GET", "/v1/audit/events", params={"since": "yesterday"}),
        422,
        "request.invalid",
    )


def test_r14_concurrent_changes_extend_one_unbroken_chain(bus: Bus) -> None:
    errors: list[str] = []

    def register(i: int) -> None:
        r = bus.call(
            "admin",
            "POST",
            "/v1/agencies",
            json={"id": f"county-{i}", "name": f"County {i}", "region": "140921", "roles": ["agency"]},
        )
        if r.status_code != 201:
            errors.append(r.text)

    threads = [threading.Thread(target=register, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    result = chain(bus)
    assert (result["ok"], result["events"]) == (True, 18)
