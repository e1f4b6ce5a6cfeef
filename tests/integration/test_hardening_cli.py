"""The new-user path (issue 13, item 5; R14): what the CLI and the gateway answer to a first-time user."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from fastapi.testclient import TestClient
from typer.testing import CliRunner

from bus.cli import app
from bus.context import BusContext
from bus.gateway.app import create_app
from tests.helpers import ROOT

BIN = Path(sys.executable).parent


def test_r14_entry_file_with_sharing_as_a_word(ctx: BusContext, serve_app, agency_factory, tmp_path) -> None:
    """``sharing: unconditional`` in an entry file crashed ``databus catalog add`` with a traceback."""
    url = serve_app(create_app(ctx))
    _, key = agency_factory()
    entry = tmp_path / "entry.yaml"
    entry.write_text("id: word-sharing\ntitle: t\ncategory: basic\ngrade: general\nsharing: unconditional\n")
    out = CliRunner().invoke(app, ["catalog", "add", "-f", str(entry), "--schema",
                                   str(ROOT / "schemas/examples/licence.avsc"), "--json"],
                             env={"BUS_URL": url, "BUS_API_KEY": key})
    assert out.exit_code == 0, out.output
    assert '"attribute": "unconditional"' in out.stdout
    entry.write_text("id: x\nsharing: [1, 2]\n")
    env = {"BUS_URL": url, "BUS_API_KEY": key}
    bad = CliRunner().invoke(app, ["catalog", "add", "-f", str(entry)], env=env)
    assert bad.exit_code == 2 and "'sharing' must be" in bad.output
    assert isinstance(bad.exception, SystemExit)  # a clean exit, no traceback


def test_r14_example_entry_file_is_valid(ctx: BusContext, serve_app, agency_factory) -> None:
    url = serve_app(create_app(ctx))
    _, key = agency_factory()
    entry = ROOT / "schemas/examples/market-licences.yaml"
    out = CliRunner().invoke(app, ["catalog", "add", "-f", str(entry),
                                   "--schema", str(ROOT / "schemas/examples/licence.avsc"), "--json"],
                             env={"BUS_URL": url, "BUS_API_KEY": key})
    assert out.exit_code == 0, out.output
    assert '"status": "draft"' in out.stdout


def test_r14_error_details_are_printed_verbatim(ctx: BusContext, serve_app) -> None:
    """Rich markup stripped ``[a-z0-9]`` from a pattern in an error message."""
    url = serve_app(create_app(ctx))
    out = CliRunner().invoke(app, ["agency", "add", "Not A Slug!", "--name", "n", "--region", "140900"],
                             env={"BUS_URL": url, "BUS_API_KEY": ctx.admin_key, "COLUMNS": "300"})
    assert out.exit_code == 1
    assert "request.invalid" in out.output
    assert "[a-z0-9" in out.output, out.output


def test_r14_json_body_without_content_type_says_so(ctx: BusContext) -> None:
    client = TestClient(create_app(ctx))
    resp = client.post("/v1/agencies", content='{"id": "x"}',
                       headers={"Authorization": f"Bearer {ctx.admin_key}",
                                "content-type": "application/x-www-form-urlencoded"})
    assert resp.status_code == 422
    problem = resp.json()
    assert problem["code"] == "request.invalid"
    assert "Content-Type: application/json" in problem["detail"]
    admin = {"Authorization": f"Bearer {ctx.admin_key}"}
    with_type = client.post("/v1/agencies", json={"id": "x"}, headers=admin)
    assert with_type.status_code == 422 and "Content-Type" not in with_type.json()["detail"]


def test_r14_up_on_a_busy_port_fails_at_once_naming_it(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        done = subprocess.run([str(BIN / "databus"), "up", "--port", str(port), "--data-dir", str(tmp_path)],
                              capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert f"port {port} on 127.0.0.1 is in use" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    # refused before anything started (no 15 s wait for a gateway that cannot listen): no broker log
    assert not (tmp_path / "logs" / "broker.log").exists()
