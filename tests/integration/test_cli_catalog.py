"""The catalogue from the command line (R1, R14): ``databus agency|catalog|audit`` against a live gateway."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from bus.cli import _http, app
from bus.settings import Settings
from bus.stack import Stack
from tests.helpers import ROOT

pytestmark = pytest.mark.integration


@pytest.fixture
def gateway(settings: Settings) -> Iterator[Stack]:
    """The gateway over HTTP on a free port (broker and Redis are the session's; no workers needed)."""
    stack = Stack(settings, workers=[]).start()
    yield stack
    stack.stop()


class Cli:
    def __init__(self, url: str, admin_key: str) -> None:
        self.runner = CliRunner()
        self.url = url
        self.keys = {"admin": admin_key}

    def run(self, who: str, *args: str, code: int = 0) -> str:
        result = self.runner.invoke(
            app, list(args), env={"BUS_URL": self.url, "BUS_API_KEY": self.keys[who], "COLUMNS": "200"}
        )
        assert result.exit_code == code, f"{args}: exit {result.exit_code}\n{result.output}"
        return result.output

    def json(self, who: str, *args: str) -> Any:
        return json.loads(self.run(who, *args, "--json"))


@pytest.fixture
def cli(gateway: Stack, monkeypatch: pytest.MonkeyPatch) -> Cli:
    assert gateway.ctx is not None
    monkeypatch.setattr(_http.console, "width", 200)  # Rich tables unwrapped, whatever the terminal
    return Cli(gateway.url, gateway.ctx.admin_key)


def test_r1_catalogue_workflow_from_the_command_line(cli: Cli, tmp_path: Path) -> None:
    for agency, role in (("market", "agency"), ("dmd", "reviewer"), ("audit-office", "auditor")):
        out = cli.json(
            "admin",
            "agency",
            "add",
            agency,
            "--name",
            f"{agency} bureau",
            "--region",
            "140900",
            "--role",
            role,
        )
        assert out["roles"] == [role] and out["api_key"].startswith("dbk_")
        cli.keys[agency] = out["api_key"]
    shown = cli.run("admin", "agency", "add", "health", "--name", "Health commission", "--region", "140900")
    assert "API key" in shown and "shown once" in shown
    assert {a["id"] for a in cli.json("audit-office", "agency", "list")} == {
        "market",
        "dmd",
        "audit-office",
        "health",
    }

    entry = tmp_path / "entry.yaml"
    entry.write_text(
        "id: market-licences\ntitle: Business licences\ncategory: basic\ngrade: general\n"
        "sharing:\n  attribute: unconditional\n"
    )
    created = cli.json(
        "market",
        "catalog",
        "add",
        "--file",
        str(entry),
        "--schema",
        str(ROOT / "schemas" / "examples" / "licence.avsc"),
        "--tag",
        "enterprise",
    )
    assert (created["status"], created["owner"], created["tags"]) == ("draft", "market", ["enterprise"])
    refused = cli.run(
        "market",
        "catalog",
        "add",
        "--id",
        "core-licences",
        "--title",
        "x",
        "--category",
        "basic",
        "--grade",
        "core",
        "--sharing",
        "unconditional",
        "--schema",
        str(ROOT / "schemas" / "examples" / "licence.avsc"),
        code=1,
    )
    assert "catalog.core_not_unconditional" in refused
    assert cli.json("market", "catalog", "submit", "market-licences")["status"] == "submitted"
    assert "auth.forbidden" in cli.run("market", "catalog", "review", "market-licences", "--approve", code=1)
    cli.run("dmd", "catalog", "review", "market-licences", "--approve", "--reject", code=2)
    approved = cli.run("dmd", "catalog", "review", "market-licences", "--approve", "--comment", "fine")
    assert "approved" in approved and "dmd" in approved
    listed = cli.run("market", "catalog", "list", "--status", "approved")
    assert "market-licences" in listed and "unconditional" in listed
    assert [d["id"] for d in cli.json("market", "catalog", "list", "--grade", "core")["datasets"]] == []
    show = cli.run("market", "catalog", "show", "market-licences")
    assert "legal_rep_id" in show and "sensitive" in show and "person.id_number" in show
    v1 = cli.json("market", "catalog", "show", "market-licences", "--version", "1")
    assert v1["version"] == 1

    bad = json.loads((ROOT / "schemas" / "examples" / "licence.avsc").read_text())
    bad["fields"].append({"name": "fax", "type": "string"})
    (tmp_path / "v2.avsc").write_text(json.dumps(bad))
    assert "schema.incompatible" in cli.run(
        "market", "catalog", "schema", "market-licences", "-f", str(tmp_path / "v2.avsc"), code=1
    )
    stats = cli.json("market", "catalog", "stats")
    assert stats["by_status"] == {"approved": 1} and stats["review_times"]["count"] == 1

    verified = cli.run("audit-office", "audit", "verify")
    assert "intact" in verified
    events = cli.json("audit-office", "audit", "events", "--action", "dataset.*")
    assert [e["action"] for e in events["events"]] == [
        "dataset.created",
        "dataset.submitted",
        "dataset.reviewed",
    ]
    assert "auth.forbidden" in cli.run("market", "audit", "verify", code=1)


def test_r14_audit_verify_exits_nonzero_on_a_tampered_log(cli: Cli, gateway: Stack) -> None:
    cli.json("admin", "agency", "add", "market", "--name", "Market", "--region", "140900")
    cli.json("admin", "agency", "add", "psb", "--name", "PSB", "--region", "140900")
    assert cli.json("admin", "audit", "verify")["ok"] is True
    assert gateway.ctx is not None
    with gateway.ctx.store.engine.begin() as conn:
        conn.execute(text("UPDATE audit_events SET subject_id = 'mallory' WHERE seq = 2"))
    out = cli.run("admin", "audit", "verify", code=1)
    assert "broken" in out and "seq 2" in out


@pytest.mark.parametrize("group", ["agency", "catalog", "audit"])
def test_every_command_and_option_has_help(group: str) -> None:
    runner = CliRunner()
    top = runner.invoke(app, [group, "--help"], env={"COLUMNS": "200"})
    assert top.exit_code == 0
    sub = {
        "agency": ["add", "list", "show"],
        "catalog": ["add", "submit", "review", "list", "show", "schema", "retire", "stats"],
        "audit": ["verify", "events"],
    }[group]
    import typer.main

    command = typer.main.get_command(app)
    grp = command.commands[group]  # type: ignore[attr-defined]
    for name in sub:
        cmd = grp.commands[name]
        assert cmd.help, f"{group} {name} has no help"
        for param in cmd.params:
            if param.name != "help":
                assert getattr(param, "help", None), f"{group} {name} {param.name} has no help"
