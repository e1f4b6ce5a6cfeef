"""``databus agency add|list|show``: register agencies (admin key) and look them up."""

from __future__ import annotations

import typer

from bus.cli._http import Api, JsonOpt, KeyOpt, UrlOpt, console, emit, table_of

app = typer.Typer(help="Agencies and their API keys (admin).", no_args_is_help=True)

COLUMNS = ["id", "name", "region", "level", "roles", "key_prefix", "suspended", "created_at"]


@app.command("add")
def add(
    agency_id: str = typer.Argument(..., metavar="ID", help="agency id: lower-case letters, digits and '-'"),
    name: str = typer.Option(..., "--name", help="full name, e.g. 'Public Security Bureau'"),
    region: str = typer.Option(..., "--region", help="administrative region code, e.g. 140900"),
    role: list[str] = typer.Option(
        ["agency"], "--role", help="role, repeatable: agency, reviewer, auditor, operator"
    ),
    level: str = typer.Option("city", "--level", help="administrative level: province, city or county"),
    url: str | None = UrlOpt,
    key: str | None = KeyOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Register an agency and print its API key (shown only this once: store it now)."""
    body = {"id": agency_id, "name": name, "region": region, "roles": role, "level": level}
    out = Api(url, key).call("POST", "/v1/agencies", json=body)
    if as_json:
        emit(out, True)
        return
    console.print(
        table_of([out], ["id", "name", "region", "level", "roles", "created_at"], title="agency created")
    )
    console.print(f"[bold]API key[/] (shown once, store it now): [yellow]{out['api_key']}[/]")


@app.command("list")
def list_(url: str | None = UrlOpt, key: str | None = KeyOpt, as_json: bool = JsonOpt) -> None:
    """List every agency (admin or auditor key)."""
    out = Api(url, key).call("GET", "/v1/agencies")
    emit(out, as_json, table_of(out, COLUMNS, title="agencies"))


@app.command("show")
def show(
    agency_id: str = typer.Argument(..., metavar="ID", help="agency id"),
    url: str | None = UrlOpt,
    key: str | None = KeyOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Show one agency (admin, auditor, or the agency's own key)."""
    out = Api(url, key).call("GET", f"/v1/agencies/{agency_id}")
    emit(out, as_json, table_of([out], COLUMNS))


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="agency")
