"""R14 (issue 13, item 2): ``databus lineage undelivered --since T`` lists the records accepted since T
that no grant delivered: after a broker loss, what the operator re-sends."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from typer.testing import CliRunner

from bus.cli import app
from bus.context import BusContext
from bus.lineage import queries
from bus.settings import Settings
from bus.stack import Stack
from tests.integration.lineage_helpers import T0, World, rid


@pytest.fixture
def world(ctx: BusContext, agency_factory: Any, dataset_factory: Any) -> World:
    w = World(ctx, agency_factory, dataset_factory)
    w.publish(10, refused=2)
    w.deliver(w.g_tax, w.tax, "tax-audit", range(6))  # 6..9 accepted, never delivered
    return w


def test_r14_undelivered_query_lists_accepted_records_without_delivery(ctx: BusContext, world: World) -> None:
    with ctx.store.session() as s:
        ids = [r["record_id"] for r in queries.undelivered(s, T0)]
        later = [r["record_id"] for r in queries.undelivered(s, T0 + timedelta(seconds=8))]
        window = queries.undelivered(s, T0, T0 + timedelta(seconds=7), dataset_id=world.dataset, limit=1)
        other = queries.undelivered(s, T0, dataset_id="nothing-here")
    assert ids == [rid(i) for i in range(6, 10)]  # refused records are not "undelivered"
    assert later == [rid(8), rid(9)]
    assert [r["record_id"] for r in window] == [rid(6)] and window[0]["dataset"] == world.dataset
    assert other == []


@pytest.fixture
def gateway(settings: Settings) -> Iterator[Stack]:
    stack = Stack(settings, workers=[]).start()
    yield stack
    stack.stop()


def test_r14_lineage_undelivered_command(
    ctx: BusContext, world: World, gateway: Stack, agency_factory: Any
) -> None:
    _, key = agency_factory(roles=("auditor",))
    env = {"BUS_URL": gateway.url, "BUS_API_KEY": key, "COLUMNS": "200"}
    runner = CliRunner()
    out = runner.invoke(app, ["lineage", "undelivered", "--since", T0.isoformat()], env=env)
    assert out.exit_code == 0, out.output
    lines = [line.split("\t") for line in out.stdout.splitlines() if "\t" in line]
    assert [line[0] for line in lines] == [rid(i) for i in range(6, 10)]
    assert {line[1] for line in lines} == {world.dataset}
    as_json = runner.invoke(app, ["lineage", "undelivered", "--since", T0.isoformat(), "--limit", "2",
                                  "--json"], env=env)
    body = json.loads(as_json.stdout)
    assert body["count"] == 2 and body["complete"] is False
    assert runner.invoke(app, ["lineage", "undelivered"], env=env).exit_code == 2  # --since is needed
    _, agency_key = agency_factory()
    refused = runner.invoke(app, ["lineage", "undelivered", "--since", T0.isoformat()],
                            env={**env, "BUS_API_KEY": agency_key})
    assert refused.exit_code == 1 and "auth.forbidden" in refused.output
