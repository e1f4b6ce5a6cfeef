"""R11 end to end on the embedded broker: the executor inside the bus, results through the operator's grant.

Every expected figure is a reference computed here from the same records (their accepted-at times read
back from the lineage), minus the groups of fewer than k distinct subjects.
"""

from __future__ import annotations

import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from bus.operations.executor import OperatorWorker
from bus.store.models import AuditEvent, OperationCheckpoint, OperationResult, RecordLineage
from tests.helpers import poll_until
from tests.integration.dataplane_helpers import api
from tests.integration.operations_helpers import BOUNDS, approved_operation, company, rule_body

K = 3


@pytest.fixture
def database_url(sqlite_url: str) -> str:
    """End-to-end runs on SQLite only (the store paths are covered on both by the API and budget tests)."""
    return sqlite_url


@pytest.fixture
def settings(settings):  # type: ignore[no-untyped-def]
    return settings.model_copy(
        update={"min_group_size": 2, "window_idle_close_seconds": 1.0, "window_allowed_lateness_seconds": 0.5}
    )


@pytest.fixture
def world(ctx, bus_stack, agency_factory, dataset_factory) -> dict[str, Any]:
    market, market_key = agency_factory("market")
    _, oper_key = agency_factory("oper", roles=("operator",))
    source = dataset_factory(market, attribute="none")
    owner, oper = api(bus_stack, market_key), api(bus_stack, oper_key)
    assert owner.put(f"/v1/datasets/{source}/analysis-rule", json=rule_body()).status_code == 200
    executor = next(w for w in bus_stack.workers if w.name == "operator")
    yield {"source": source, "owner": owner, "oper": oper, "executor": executor, "stack": bus_stack}
    owner.close()
    oper.close()


def publish(owner: httpx.Client, source: str, records: list[dict[str, Any]]) -> list[str]:
    resp = owner.post(f"/v1/datasets/{source}/records", json={"records": records})
    assert resp.status_code == 200 and resp.json()["accepted"] == len(records), resp.text
    return list(resp.json()["record_ids"])


def accepted_at(ctx, ids: list[str]) -> dict[str, int]:
    with ctx.store.session() as s:
        rows = s.execute(
            select(RecordLineage.record_id, RecordLineage.published_at).where(
                RecordLineage.record_id.in_(ids)
            )
        )
        return {rid: int(at.timestamp() * 1000) for rid, at in rows}


def reference(
    ctx, batches: list[tuple[list[str], list[dict[str, Any]]]], window_s: int, group_by: str = "region_code"
) -> dict[tuple[int, str], dict[str, Any]]:
    """The expected rows: per window and group, count, clamped sum and max, only with >= K subjects."""
    groups: dict[tuple[int, str], list[dict[str, Any]]] = defaultdict(list)
    for ids, records in batches:
        at = poll_until(
            lambda ids=ids: (lambda m: m if len(m) == len(ids) else None)(accepted_at(ctx, ids)),
            what="lineage of the published records",
        )
        for rid, rec in zip(ids, records, strict=True):
            t = at[rid]
            groups[(t - t % (window_s * 1000), rec[group_by])].append(rec)
    out = {}
    for key, recs in groups.items():
        if len({r["credit_code"] for r in recs}) < K:
            continue
        capitals = [min(max(r["registered_capital"], BOUNDS[0]), BOUNDS[1]) for r in recs]
        out[key] = {
            "count_licence_no": len(recs),
            "sum_registered_capital": float(sum(capitals)),
            "max_registered_capital": float(max(capitals)),
        }
    return out


def read_rows(oper: httpx.Client, grant: str, want: int, timeout: float = 20.0) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    cursor: list[str | None] = [None]

    def more() -> bool:
        params = {"limit": 500, **({"after": cursor[0]} if cursor[0] else {})}
        page = oper.get(f"/v1/grants/{grant}/records", params=params)
        assert page.status_code == 200, page.text
        rows.extend(r["value"] for r in page.json()["records"])
        cursor[0] = page.json()["next"]
        return len(rows) >= want

    poll_until(more, timeout=timeout, interval=0.1, what=f"{want} result rows")
    return rows


def as_map(
    rows: list[dict[str, Any]], group_by: str = "region_code"
) -> dict[tuple[int, str], dict[str, Any]]:
    out = {}
    for r in rows:
        key = (r["window_start"], r[group_by])
        assert key not in out, f"window-group released twice: {key}"
        assert r["window_end"] - r["window_start"] in (1000, 10_000)
        out[key] = {c: r[c] for c in ("count_licence_no", "sum_registered_capital", "max_registered_capital")}
    return out


def batch_one(offset: int = 0) -> list[dict[str, Any]]:
    """Region A: 5 companies (released); B: 2 companies (suppressed); C: one company, 6 records (suppressed);
    D: 3 companies, one capital over the bound (released, clamped)."""
    recs = [company(offset + i, "A", 100 + i, 1000 * (i + 1)) for i in range(5)]
    recs += [company(offset + 10 + i, "B", 200 + i) for i in range(2)]
    recs += [company(offset + 20 + i, "C", 300) for i in range(6)]
    recs += [company(offset + 30 + i, "D", 400 + i, 5_000_000 if i == 0 else 10) for i in range(3)]
    return recs


def test_r11_executor_counts_equal_reference_minus_suppressed_groups(ctx, world) -> None:
    op = approved_operation(world["owner"], world["oper"], world["source"])
    poll_until(lambda: op["id"] in world["executor"].running(), what="executor picks up the operation")
    records = batch_one()
    ids = publish(world["owner"], world["source"], records)
    expected = reference(ctx, [(ids, records)], 1)
    assert {g for _, g in expected} == {"A", "D"}  # B and C have fewer than k companies
    rows = read_rows(world["oper"], op["grant"], len(expected))
    assert as_map(rows) == expected
    assert all("credit_code" not in r and "licence_no" not in r for r in rows)
    # each row's lineage: operation, rule version, window, k, epsilon, how many source records
    results = world["oper"].get(f"/v1/operations/{op['id']}/results").json()["results"]
    assert sorted(r["source_records"] for r in results) == [3, 5]
    assert {(r["k"], r["rule_version"], r["epsilon"]) for r in results} == {(K, 1, None)}
    # the source owner sees the derived product in its lineage graph (auditor view)
    with ctx.store.session() as s:
        from bus.lineage.queries import dataset_graph

        graph = dataset_graph(s, world["source"])
    derived = [e for e in graph["edges"] if e["kind"] == "derived"]
    assert derived and derived[0]["to"] == f"dataset:{op['derived_dataset']}" and derived[0]["records"] == 2
    from bus.lineage.openlineage import graph_events

    jobs = [e["job"]["name"] for e in graph_events(graph, kafka_namespace="kafka://bus")]
    assert f"databus.derive.{op['derived_dataset']}" in jobs  # the OpenLineage export has the derived edge
    with ctx.store.session() as s:
        windows = [
            e.data for e in s.scalars(select(AuditEvent).where(AuditEvent.action == "operation.window"))
        ]
    assert windows[0]["suppressed"] == 2 and windows[0]["records"] == len(records)


def test_r11_restart_mid_window_loses_and_doubles_nothing(ctx, world) -> None:
    """A crash after a checkpoint (the state since it abandoned) and a restart mid-window: the window's rows
    are exactly the reference, each window-group released once."""
    op = approved_operation(world["owner"], world["oper"], world["source"], window_seconds=10)
    executor: OperatorWorker = world["executor"]
    poll_until(lambda: op["id"] in executor.running(), what="executor picks up the operation")
    poll_until(lambda: time.time() % 10 < 1.0, timeout=11, what="the start of a 10 s window")
    first = batch_one()
    ids1 = publish(world["owner"], world["source"], first)
    poll_until(lambda: checkpointed_total(ctx, op["id"]) == len(first), what="the first batch checkpointed")
    executor.stop(checkpoint=False)  # as a crash: nothing after the last checkpoint is saved
    second = [company(1000 + i, "A", 100 + i, 7) for i in range(3)]
    second += [company(1100 + i, "B", 250 + i) for i in range(2)]
    ids2 = publish(world["owner"], world["source"], second)
    again = OperatorWorker(ctx)
    again.start()
    try:
        expected = reference(ctx, [(ids1, first), (ids2, second)], 10)
        rows = read_rows(world["oper"], op["grant"], len(expected), timeout=30)
        assert as_map(rows) == expected
        if len({k[0] for k in expected}) == 1:  # both batches in one window (the usual case)
            assert {g for _, g in expected} == {"A", "B", "D"}  # B reached k only with the second batch
            assert expected[next(k for k in expected if k[1] == "A")]["count_licence_no"] == 8
    finally:
        again.stop()


def checkpointed_total(ctx, op_id: str) -> int:
    with ctx.store.session() as s:
        ckpt = s.get(OperationCheckpoint, op_id)
        return sum(ckpt.offsets.values()) if ckpt else 0


def test_r11_revoked_operation_publishes_nothing_after_a_second(ctx, world) -> None:
    revoked = approved_operation(world["owner"], world["oper"], world["source"])
    control = approved_operation(world["owner"], world["oper"], world["source"], group_by=["status"])
    executor = world["executor"]
    poll_until(lambda: {revoked["id"], control["id"]} <= executor.running(), what="both running")
    assert world["owner"].post(f"/v1/operations/{revoked['id']}/revoke").status_code == 200
    at = datetime.now(UTC)
    poll_until(
        lambda: revoked["id"] not in executor.running(),
        timeout=2.0,
        what="executor drops it (it re-reads the status every 0.25 s)",
    )
    records = batch_one()
    publish(world["owner"], world["source"], records)

    def control_released() -> bool:
        with ctx.store.session() as s:
            return s.query(OperationResult).filter(OperationResult.operation_id == control["id"]).count() > 0

    poll_until(control_released, timeout=20, what="the control operation releases the window")
    with ctx.store.session() as s:
        late = (
            s.query(RecordLineage)
            .filter(
                RecordLineage.dataset_id == revoked["derived_dataset"],
                RecordLineage.published_at > at + timedelta(seconds=1),
            )
            .count()
        )
        results = s.query(OperationResult).filter(OperationResult.operation_id == revoked["id"]).count()
    assert late == 0 and results == 0
    page = world["oper"].get(f"/v1/grants/{revoked['grant']}/records")
    assert page.json()["code"] == "grant.not_active"


def test_r11_noise_spends_budget_and_refuses_when_exhausted(ctx, world) -> None:
    op = approved_operation(
        world["owner"],
        world["oper"],
        world["source"],
        epsilon=0.6,
        measures=[{"field": "licence_no", "fn": "count"}],
    )
    poll_until(lambda: op["id"] in world["executor"].running(), what="running")
    publish(world["owner"], world["source"], batch_one())
    rows = read_rows(world["oper"], op["grant"], 2)
    assert all(isinstance(r["count_licence_no"], int) and r["count_licence_no"] >= 0 for r in rows)
    publish(world["owner"], world["source"], batch_one(100))

    def refused() -> bool:
        with ctx.store.session() as s:
            return s.query(AuditEvent).filter(AuditEvent.action == "operation.budget_exhausted").count() == 1

    poll_until(refused, timeout=20, what="the second window refused for the budget")
    from bus.operations import budget

    with ctx.store.session() as s:
        assert budget.spent(s, "oper", world["source"]) == pytest.approx(0.6)
        assert s.query(OperationResult).filter(OperationResult.operation_id == op["id"]).count() == 2


def test_r11_operator_never_reads_source_records_through_any_endpoint(ctx, world) -> None:
    """Every GET of the gateway with the operator's key, path parameters filled with the source dataset,
    its records, grants and the operation: no raw value of a source record ever comes back."""
    op = approved_operation(world["owner"], world["oper"], world["source"])
    records = batch_one()
    ids = publish(world["owner"], world["source"], records)
    read_rows(world["oper"], op["grant"], 2)
    secrets = {r["credit_code"] for r in records} | {r["licence_no"] for r in records}
    refused = world["oper"].post(
        "/v1/grants",
        json={
            "dataset": world["source"],
            "fields": ["licence_no"],
            "legal_basis": "x",
            "scenario": {"code": "c", "description": "d"},
        },
    )
    assert refused.json()["code"] == "sharing.not_shared"
    values = {
        "dataset_id": world["source"],
        "record_id": ids[0],
        "grant_id": op["grant"],
        "operation_id": op["id"],
        "agency_id": "market",
    }
    paths = world["oper"].get("/openapi.json").json()["paths"]
    checked = 0
    for path, ops in paths.items():
        if "get" not in ops or path.endswith("/stream") or not set(_params(path)) <= set(values):
            continue
        url = path.format(**values)
        for params in ({}, {"dataset": world["source"]}):
            resp = world["oper"].get(url, params=params)
            assert resp.status_code < 500, (url, resp.text)
            leaked = [v for v in secrets if v in resp.text]
            assert not leaked, f"{url} returned source values {leaked[:3]}"
            checked += 1
    assert checked > 20


def _params(path: str) -> list[str]:
    import re

    return re.findall(r"{(\w+)}", path)


def test_r11_idle_close_releases_a_quiet_stream(ctx, world) -> None:
    """One batch and then silence: the window still closes on the wall clock."""
    op = approved_operation(world["owner"], world["oper"], world["source"])
    poll_until(lambda: op["id"] in world["executor"].running(), what="running")
    started = time.monotonic()
    publish(world["owner"], world["source"], batch_one())
    read_rows(world["oper"], op["grant"], 2)
    assert time.monotonic() - started < 15


def test_r11_r15_suspended_operator_releases_nothing_until_resumed(ctx, world) -> None:
    """The emergency switch on the operator: windows still close (stored), nothing is released; resumed,
    the stored release goes out."""
    from bus.store.models import OperationRelease

    op = approved_operation(world["owner"], world["oper"], world["source"])
    poll_until(lambda: op["id"] in world["executor"].running(), what="running")
    admin = api(world["stack"], world["stack"].ctx.admin_key)
    switch = {"kind": "agency", "id": "oper", "reason": "suspected misuse"}
    assert admin.post("/v1/emergency/suspend", json=switch).status_code == 200
    publish(world["owner"], world["source"], batch_one())

    def stored() -> bool:
        with ctx.store.session() as s:
            return s.query(OperationRelease).filter(OperationRelease.status == "pending").count() == 1

    poll_until(stored, timeout=20, what="the window closed and stored")
    with ctx.store.session() as s:
        assert s.query(OperationResult).count() == 0
    assert admin.post("/v1/emergency/resume", json=switch).status_code == 200

    def released() -> bool:
        with ctx.store.session() as s:
            return s.query(OperationResult).filter(OperationResult.operation_id == op["id"]).count() == 2

    poll_until(released, timeout=20, what="the stored release published after the resume")
    admin.close()
