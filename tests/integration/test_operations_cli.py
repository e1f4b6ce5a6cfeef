"""R11 from the command line: ``databus operation ...`` against a live gateway, tables and --json."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bus.cli import _http, app
from bus.settings import Settings
from bus.stack import Stack
from tests.integration.operations_helpers import rule_body

pytestmark = pytest.mark.integration


@pytest.fixture
def database_url(sqlite_url: str) -> str:
    return sqlite_url


@pytest.fixture
def settings(settings):  # type: ignore[no-untyped-def]
    return settings.model_copy(update={"min_group_size": 2})


@pytest.fixture
def gateway(settings: Settings) -> Iterator[Stack]:
    stack = Stack(settings, workers=[]).start()
    yield stack
    stack.stop()


class Cli:
    def __init__(self, url: str, keys: dict[str, str]) -> None:
        self.runner, self.url, self.keys = CliRunner(), url, keys

    def run(self, who: str, *args: str, code: int = 0) -> str:
        env = {"BUS_URL": self.url, "BUS_API_KEY": self.keys[who], "COLUMNS": "200"}
        result = self.runner.invoke(app, list(args), env=env)
        assert result.exit_code == code, f"{args}: exit {result.exit_code}\n{result.output}"
        return result.output

    def json(self, who: str, *args: str) -> Any:
        return json.loads(self.run(who, *args, "--json"))


def test_r11_operation_commands(
    gateway: Stack, agency_factory, dataset_factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_http.console, "width", 200)
    market, market_key = agency_factory("market")
    _, oper_key = agency_factory("oper", roles=("operator",))
    source = dataset_factory(market, attribute="none")
    cli = Cli(gateway.url, {"market": market_key, "oper": oper_key})
    rule_file = tmp_path / "rule.json"
    rule_file.write_text(json.dumps(rule_body()))
    assert cli.json("market", "operation", "rule-set", source, "-f", str(rule_file))["version"] == 1
    assert cli.json("oper", "operation", "rule", source)["subject_field"] == "credit_code"
    base = [
        "operation",
        "request",
        source,
        "--measure",
        "count:licence_no",
        "--window",
        "3600",
        "--scenario",
        "stats",
        "--description",
        "licences per county",
        "--legal-basis",
        "art. 14",
    ]
    refused = cli.run("oper", *base, "--k", "1", "--group-by", "region_code", code=1)
    assert "operation.k_too_small" in refused
    assert "operation.subject_output" in cli.run(
        "oper", *base, "--k", "3", "--group-by", "credit_code", code=1
    )
    op = cli.json("oper", *base, "--k", "3", "--group-by", "region_code", "--filter", "status=active,revoked")
    assert op["status"] == "pending" and op["filters"][0]["op"] == "in"
    shown = cli.run("oper", "operation", "show", op["id"])
    assert op["id"] in shown and "count(licence_no)" in shown
    active = cli.json("market", "operation", "decide", op["id"], "approve")
    assert active["status"] == "active" and active["derived_dataset"] == f"derived-{op['id']}"
    assert "synthetic" in cli.run("oper", "operation", "dry-run", op["id"])
    assert cli.json("oper", "operation", "dry-run", op["id"])["synthetic"] is True
    assert [o["id"] for o in cli.json("market", "operation", "list")["operations"]] == [op["id"]]
    assert cli.json("oper", "operation", "results", op["id"])["results"] == []
    assert cli.json("market", "operation", "suspend", op["id"])["status"] == "suspended"
    assert cli.json("market", "operation", "resume", op["id"])["status"] == "active"
    assert cli.json("oper", "operation", "revoke", op["id"])["status"] == "revoked"
