"""``databus grant``, ``databus publish`` and ``databus tail`` against a running gateway (R7, R10, R13)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from bus.cli import app
from tests.helpers import licence_record


def test_r7_grant_publish_and_tail_from_the_command_line(
    ctx, agency_factory, dataset_factory, bus_stack, tmp_path
) -> None:
    market, market_key = agency_factory("market")
    psb, psb_key = agency_factory("psb")
    ds = dataset_factory(market)
    runner = CliRunner()
    as_psb = {"BUS_URL": bus_stack.url, "BUS_API_KEY": psb_key}
    as_market = {"BUS_URL": bus_stack.url, "BUS_API_KEY": market_key}

    refused = runner.invoke(
        app,
        [
            "grant",
            "request",
            ds,
            "--fields",
            "licence_no",
            "--scenario",
            "x",
            "--description",
            "d",
            "--legal-basis",
            " ",
        ],
        env=as_psb,
    )
    assert refused.exit_code == 1 and "grant.legal_basis_required" in refused.output

    out = runner.invoke(
        app,
        [
            "grant",
            "request",
            ds,
            "--fields",
            "licence_no,phone",
            "--scenario",
            "licence-check",
            "--description",
            "inspections",
            "--legal-basis",
            "Licensing Law art. 61",
            "--json",
        ],
        env=as_psb,
    )
    assert out.exit_code == 0, out.output
    grant = json.loads(out.output)
    assert grant["status"] == "active"

    records = tmp_path / "licences.jsonl"
    lines = [json.dumps(licence_record(i)) for i in range(4)] + [json.dumps({"licence_no": "incomplete"})]
    records.write_text("\n".join(lines) + "\n")
    published = runner.invoke(app, ["publish", ds, str(records), "--batch", "2"], env=as_market)
    assert published.exit_code == 1  # one record was refused
    assert "4 accepted" in published.output and "line 5: record.invalid" in published.output

    tailed = runner.invoke(app, ["tail", grant["id"], "--limit", "4"], env=as_psb)
    assert tailed.exit_code == 0, tailed.output
    seen = [json.loads(line) for line in tailed.output.splitlines()]
    assert sorted(r["value"]["licence_no"] for r in seen) == [f"LIC{i:08d}" for i in range(4)]
    assert all(r["value"]["phone"].startswith("*") and r["scenario"] == "licence-check" for r in seen)

    listed = runner.invoke(app, ["grant", "list", "--json"], env=as_market)
    assert [g["id"] for g in json.loads(listed.output)["grants"]] == [grant["id"]]
    revoked = runner.invoke(
        app, ["grant", "revoke", grant["id"], "--reason", "done", "--json"], env=as_market
    )
    assert json.loads(revoked.output)["status"] == "revoked"
