"""``databus grant request|decide|revoke|list|show|schema``: grants over HTTP (R5, R7, R10, R12)."""

from __future__ import annotations

import json
from typing import Any

import typer

from bus.cli._http import Api, JsonOpt, KeyOpt, UrlOpt, console, emit, table_of

app = typer.Typer(
    help="Grants: request shared data with a scenario, decide, revoke (R5, R7, R10).", no_args_is_help=True
)

COLUMNS = ["id", "dataset", "agency", "status", "scenario", "fields", "valid_until"]


def _row(g: dict[str, Any]) -> dict[str, Any]:
    return {**g, "scenario": g["scenario"]["code"], "fields": ", ".join(g["fields"])}


def _show(g: dict[str, Any]) -> None:
    console.print(table_of([_row(g)], COLUMNS, title=f"grant {g['id']}"))
    console.print(f"  scenario: [bold]{g['scenario']['code']}[/] - {g['scenario']['description']}")
    console.print(f"  legal basis: {g['legal_basis']}")
    if g.get("unmasked_fields"):
        console.print(f"  unmasked fields (owner-approved raw values): {', '.join(g['unmasked_fields'])}")
    if g.get("decision_reason"):
        console.print(f"  decision: {g['decision_reason']}")
    if g.get("topic"):
        console.print(f"  delivery topic: {g['topic']}")


@app.command("request")
def request(
    dataset: str = typer.Argument(..., help="dataset id"),
    fields: str = typer.Option(
        ..., "--fields", help="comma-separated fields you need (minimum necessary, R7)"
    ),
    scenario: str = typer.Option(..., "--scenario", help="scenario code, e.g. licence-check"),
    description: str = typer.Option(..., "--description", help="what duty the data serves"),
    legal_basis: str = typer.Option(..., "--legal-basis", help="the legal basis of that duty"),
    valid_until: str = typer.Option(
        None, "--valid-until", help="ISO date-time the grant ends [default: 1 year]"
    ),
    unmasked: str = typer.Option(
        None, "--unmasked", help="comma-separated fields wanted raw (owner approves)"
    ),
    url: str = UrlOpt,
    key: str = KeyOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Request a grant: active at once (unconditional), pending (conditional), or refused with a code."""
    body: dict[str, Any] = {
        "dataset": dataset,
        "fields": [f.strip() for f in fields.split(",") if f.strip()],
        "scenario": {"code": scenario, "description": description},
        "legal_basis": legal_basis,
    }
    if valid_until:
        body["valid_until"] = valid_until
    if unmasked:
        body["unmasked_fields"] = [f.strip() for f in unmasked.split(",") if f.strip()]
    g = Api(url, key).call("POST", "/v1/grants", json=body)
    if as_json:
        emit(g, True)
    else:
        _show(g)


@app.command("decide")
def decide(
    grant_id: str = typer.Argument(...),
    decision: str = typer.Argument(..., help="approve or deny"),
    reason: str = typer.Option(None, "--reason"),
    url: str = UrlOpt,
    key: str = KeyOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Approve or deny a pending grant on your dataset (R10)."""
    g = Api(url, key).call(
        "POST", f"/v1/grants/{grant_id}/decision", json={"decision": decision, "reason": reason}
    )
    emit(g, True) if as_json else _show(g)


@app.command("revoke")
def revoke(
    grant_id: str = typer.Argument(...),
    reason: str = typer.Option(None, "--reason"),
    url: str = UrlOpt,
    key: str = KeyOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Revoke a grant (dataset owner or admin); delivery stops within a second."""
    g = Api(url, key).call("POST", f"/v1/grants/{grant_id}/revoke", json={"reason": reason})
    emit(g, True) if as_json else _show(g)


@app.command("list")
def list_(
    status: str = typer.Option(None, "--status"),
    dataset: str = typer.Option(None, "--dataset"),
    role: str = typer.Option(None, "--role", help="grantee or owner"),
    url: str = UrlOpt,
    key: str = KeyOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Grants you hold or decide on (auditors and the admin: all)."""
    params = {k: v for k, v in {"status": status, "dataset": dataset, "role": role}.items() if v}
    data = Api(url, key).call("GET", "/v1/grants", params=params)
    emit(data, as_json, table_of([_row(g) for g in data["grants"]], COLUMNS, title="grants"))


@app.command("show")
def show(
    grant_id: str = typer.Argument(...), url: str = UrlOpt, key: str = KeyOpt, as_json: bool = JsonOpt
) -> None:
    """One grant."""
    g = Api(url, key).call("GET", f"/v1/grants/{grant_id}")
    emit(g, True) if as_json else _show(g)


@app.command("schema")
def schema(grant_id: str = typer.Argument(...), url: str = UrlOpt, key: str = KeyOpt) -> None:
    """The Avro schema of what the grant delivers (granted fields, masking per field)."""
    data = Api(url, key).call("GET", f"/v1/grants/{grant_id}/schema")
    typer.echo(json.dumps(data["schema"], indent=2, ensure_ascii=False))


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="grant")
