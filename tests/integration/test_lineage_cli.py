"""R14, R18 from the command line: ``databus lineage`` and ``databus usage`` against a live gateway."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from bus.cli import app
from bus.context import BusContext
from bus.settings import Settings
from bus.stack import Stack
from tests.integration.lineage_helpers import World, rid

pytestmark = pytest.mark.integration


@pytest.fixture
def gateway(settings: Settings) -> Iterator[Stack]:
    stack = Stack(settings, workers=[]).start()
    yield stack
    stack.stop()


def run(stack: Stack, key: str, *args: str, code: int = 0) -> str:
    result = CliRunner().invoke(
        app, list(args), env={"BUS_URL": stack.url, "BUS_API_KEY": key, "COLUMNS": "220"}
    )
    assert result.exit_code == code, f"{args}: exit {result.exit_code}\n{result.output}"
    return result.output


def test_r14_lineage_command_prints_the_record_as_a_tree(
    ctx: BusContext, gateway: Stack, agency_factory: Any, dataset_factory: Any
) -> None:
    world = World(ctx, agency_factory, dataset_factory).full()
    _, key = agency_factory(roles=("auditor",))
    out = run(gateway, key, "lineage", rid(2))
    assert f"record {rid(2)}" in out and f"published by {world.owner}" in out
    assert f"grant {world.g_tax} to {world.tax}" in out and "scenario tax-audit" in out
    assert f"grant {world.g_health} to {world.health}" in out and "no consumption acknowledged" in out
    assert f"consumed by {world.tax} via sdk" in out
    assert json.loads(run(gateway, key, "lineage", rid(2), "--json"))["record_id"] == rid(2)
    graph = run(gateway, key, "lineage", "--dataset", world.dataset)
    assert f"dataset {world.dataset}" in graph and f"consumed by {world.tax}: 10 records" in graph
    events = [
        json.loads(line)
        for line in run(gateway, key, "lineage", "--dataset", world.dataset, "--openlineage").splitlines()
    ]
    assert {e["eventType"] for e in events} == {"COMPLETE"} and len(events) == 5
    assert "lineage.not_found" in run(gateway, key, "lineage", rid(404), code=1)
    run(gateway, key, "lineage", code=2)  # neither a record nor a dataset


def test_r18_usage_command_reports_totals(
    ctx: BusContext, gateway: Stack, agency_factory: Any, dataset_factory: Any
) -> None:
    world = World(ctx, agency_factory, dataset_factory).full()
    _, key = agency_factory(roles=("auditor",))
    data = json.loads(run(gateway, key, "usage", "--dataset", world.dataset, "--by", "total", "--json"))
    assert data["totals"]["delivered"]["records"] == 20 and data["totals"]["consumed"]["records"] == 10
    table = run(gateway, key, "usage", "--grant", world.g_tax)
    assert "delivered" in table and "consumed" in table and "totals: " in table
    _, agency_key = agency_factory()
    assert "auth.forbidden" in run(gateway, agency_key, "usage", code=1)
