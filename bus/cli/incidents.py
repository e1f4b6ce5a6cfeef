"""``databus incidents [show ID | resolve ID]``: incidents raised by violations (R15)."""

from __future__ import annotations

import typer

from bus.cli._http import Api, JsonOpt, KeyOpt, UrlOpt, console, emit, given, table_of

app = typer.Typer(help="Incidents raised by violations (R15): list, show, resolve.")


@app.callback(invoke_without_command=True)
def incidents(
    ctx: typer.Context,
    agency: str | None = typer.Option(None, "--agency", help="only incidents of this agency"),
    dataset: str | None = typer.Option(None, "--dataset", help="only incidents about this dataset"),
    kind: str | None = typer.Option(
        None, "--kind", help="forwarding, recollection, egress, access_refused, bad_signature_burst, ..."
    ),
    severity: str | None = typer.Option(None, "--severity", help="low | medium | high | critical (or worse)"),
    status: str | None = typer.Option(None, "--status", help="open | resolved"),
    since: str | None = typer.Option(None, "--since", help="last seen at or after this ISO 8601 time"),
    limit: int = typer.Option(100, "--limit", help="at most this many (1-1000)"),
    url: str | None = UrlOpt,
    key: str | None = KeyOpt,
    as_json: bool = JsonOpt,
) -> None:
    """List incidents, newest first."""
    if ctx.invoked_subcommand is not None:
        return
    params = given(
        agency=agency, dataset=dataset, kind=kind, severity=severity, status=status, since=since, limit=limit
    )
    out = Api(url, key).call("GET", "/v1/incidents", params=params)
    if as_json:
        emit(out, True)
        return
    rows = [{**i, "last_at": i["last_at"][:19].replace("T", " ")} for i in out["incidents"]]
    console.print(
        table_of(
            rows,
            ["id", "severity", "kind", "agency_id", "dataset_id", "grant_id", "count", "last_at", "status"],
            title=f"incidents ({out['total']})",
        )
    )


@app.command("show")
def show(
    incident_id: int = typer.Argument(..., help="incident id"),
    url: str | None = UrlOpt,
    key: str | None = KeyOpt,
) -> None:
    """One incident with all its evidence (JSON)."""
    emit(Api(url, key).call("GET", f"/v1/incidents/{incident_id}"), True)


@app.command("resolve")
def resolve(
    incident_id: int = typer.Argument(..., help="incident id"),
    note: str = typer.Option(..., "--note", help="how it was handled"),
    url: str | None = UrlOpt,
    key: str | None = KeyOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Close an incident as handled (admin key)."""
    out = Api(url, key).call("POST", f"/v1/incidents/{incident_id}/resolve", json={"note": note})
    if as_json:
        emit(out, True)
    else:
        console.print(f"incident {out['id']} resolved")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="incidents")
