"""``databus usage``: records and bytes published, refused, delivered, consumed (R18; auditor, admin)."""

from __future__ import annotations

import typer

from bus.cli._http import Api, JsonOpt, KeyOpt, UrlOpt, console, emit, table_of


def usage(
    dataset: str | None = typer.Option(None, "--dataset", help="only this dataset"),
    grant: str | None = typer.Option(None, "--grant", help="only this grant"),
    agency: str | None = typer.Option(None, "--agency", help="only this agency (publisher or grantee)"),
    since: str | None = typer.Option(
        None, "--from", help="from this ISO 8601 time (rounded down to the hour)"
    ),
    until: str | None = typer.Option(None, "--to", help="before this ISO 8601 time"),
    by: str = typer.Option("hour", "--by", help="'hour' (one row per hour) or 'total' over the period"),
    url: str | None = UrlOpt,
    key: str | None = KeyOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Usage metering per dataset, grant and agency."""
    params = {
        k: v
        for k, v in {
            "dataset": dataset,
            "grant": grant,
            "agency": agency,
            "from": since,
            "to": until,
            "by": by,
        }.items()
        if v
    }
    out = Api(url, key).call("GET", "/v1/usage", params=params)
    if as_json:
        emit(out, True)
        return
    columns = (["hour"] if by == "hour" else []) + [
        "direction",
        "dataset",
        "grant",
        "agency",
        "records",
        "bytes",
    ]
    console.print(table_of(out["rows"], columns, title="usage"))
    totals = ", ".join(f"{d} {t['records']} records / {t['bytes']} bytes" for d, t in out["totals"].items())
    console.print(f"totals: {totals}")


def register(root: typer.Typer) -> None:
    root.command("usage")(usage)
