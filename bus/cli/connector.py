"""``databus connector add|start|stop|status|list|delete|kinds``: connectors admins register (admin key)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
import yaml

from bus.cli._http import Api, JsonOpt, KeyOpt, UrlOpt, console, emit, err_console, table_of

app = typer.Typer(
    help="Connectors: sources into catalogued datasets, sinks into grantees' systems (admin).",
    no_args_is_help=True,
)

STATUS_COLUMNS = [
    "name",
    "kind",
    "agency",
    "bound to",
    "desired",
    "state",
    "in",
    "out",
    "dead letters",
    "errors",
    "lag",
    "last error",
]


def status_row(c: dict[str, Any]) -> dict[str, Any]:
    """One connector as a row of the status table (also used by the demo)."""
    st = c.get("status") or {}
    lag = st.get("lag")
    last = st.get("last_error") or {}
    return {
        "name": c["name"],
        "kind": c["kind"],
        "agency": c["agency"],
        "bound to": f"dataset {c['dataset']}" if c.get("role") == "source" else f"grant {c['grant']}",
        "desired": c["desired_state"],
        "state": st.get("state", ""),
        "in": st.get("records_in", 0),
        "out": st.get("records_out", 0),
        "dead letters": st.get("dead_letters", 0),
        "errors": st.get("errors", 0),
        "lag": "" if lag is None else f"{lag} {st.get('lag_unit', '')}".strip(),
        "last error": (last.get("detail") or "")[:80] or st.get("blocked_reason", ""),
    }


def _config(config: str | None, sets: list[str]) -> dict[str, Any]:
    """``--config`` as JSON/YAML text or ``@file``, then ``--set key=value`` on top (dotted keys nest)."""
    out: dict[str, Any] = {}
    if config:
        text = Path(config[1:]).read_text() if config.startswith("@") else config
        loaded = yaml.safe_load(text)  # YAML is a superset of JSON
        if not isinstance(loaded, dict):
            err_console.print("[red]--config must be a JSON or YAML object[/]")
            raise typer.Exit(2)
        out = loaded
    for item in sets:
        k, sep, v = item.partition("=")
        if not sep or not k:
            err_console.print(f"[red]--set wants key=value, got {item!r}[/]")
            raise typer.Exit(2)
        target = out
        *parents, leaf = k.split(".")
        for p in parents:
            target = target.setdefault(p, {})
        target[leaf] = yaml.safe_load(v) if v else v
    return out


@app.command("add")
def add(
    name: str = typer.Argument(..., help="connector name: lower-case letters, digits and '-' (at most 63)"),
    kind: str = typer.Option(
        ...,
        "--kind",
        help="file-source, sql-source, mqtt-source, http-sink, sql-sink, "
        "file-sink (see 'databus connector kinds')",
    ),
    agency: str = typer.Option(
        ..., "--agency", help="the agency it acts for (a source's owner, a sink's grantee)"
    ),
    dataset: str | None = typer.Option(
        None, "--dataset", help="sources: the catalogued dataset it feeds (R13)"
    ),
    grant: str | None = typer.Option(
        None, "--grant", help="sinks: the grant whose delivered view it writes (R8)"
    ),
    config: str | None = typer.Option(None, "--config", help="the kind's config: JSON/YAML text or @file"),
    sets: list[str] = typer.Option(
        [], "--set", help="one config value, key=value (repeatable, dotted keys nest)"
    ),
    start: bool = typer.Option(False, "--start", help="start it at once"),
    url: str | None = UrlOpt,
    key: str | None = KeyOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Register a connector; its config is checked per kind and secrets are never shown back."""
    body = {
        "name": name,
        "kind": kind,
        "agency": agency,
        "dataset": dataset,
        "grant": grant,
        "config": _config(config, sets),
        "start": start,
    }
    out = Api(url, key).call("POST", "/v1/connectors", json=body)
    if as_json:
        emit(out, True)
        return
    console.print(table_of([status_row(out)], STATUS_COLUMNS[:6], title="connector registered"))
    console.print(json.dumps(out["config"], indent=2, ensure_ascii=False))


def _state(name: str, action: str, url: str | None, key: str | None, as_json: bool) -> None:
    out = Api(url, key).call("POST", f"/v1/connectors/{name}/{action}")
    emit(out, as_json, table_of([status_row(out)], STATUS_COLUMNS, title=f"connector {action}"))


@app.command("start")
def start_(
    name: str = typer.Argument(...),
    url: str | None = UrlOpt,
    key: str | None = KeyOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Run a connector (also restarts one that failed)."""
    _state(name, "start", url, key, as_json)


@app.command("stop")
def stop_(
    name: str = typer.Argument(...),
    url: str | None = UrlOpt,
    key: str | None = KeyOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Stop a connector at its next batch boundary (its position is kept)."""
    _state(name, "stop", url, key, as_json)


@app.command("status")
def status(
    name: str | None = typer.Argument(None, help="one connector (default: all)"),
    url: str | None = UrlOpt,
    key: str | None = KeyOpt,
    as_json: bool = JsonOpt,
) -> None:
    """State, records in/out, dead letters, errors, last error and lag."""
    api = Api(url, key)
    rows = (
        [api.call("GET", f"/v1/connectors/{name}")]
        if name
        else api.call("GET", "/v1/connectors")["connectors"]
    )
    emit(
        rows if not name else rows[0],
        as_json,
        table_of([status_row(c) for c in rows], STATUS_COLUMNS, title="connectors"),
    )


@app.command("list")
def list_(url: str | None = UrlOpt, key: str | None = KeyOpt, as_json: bool = JsonOpt) -> None:
    """Every connector with its status."""
    rows = Api(url, key).call("GET", "/v1/connectors")["connectors"]
    emit(rows, as_json, table_of([status_row(c) for c in rows], STATUS_COLUMNS, title="connectors"))


@app.command("delete")
def delete(
    name: str = typer.Argument(...),
    url: str | None = UrlOpt,
    key: str | None = KeyOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Stop and remove a connector."""
    out = Api(url, key).call("DELETE", f"/v1/connectors/{name}")
    emit(out, as_json, table_of([status_row(out["deleted"])], STATUS_COLUMNS[:6], title="connector deleted"))


@app.command("kinds")
def kinds(url: str | None = UrlOpt, key: str | None = KeyOpt, as_json: bool = JsonOpt) -> None:
    """Connector kinds and their config fields."""
    out = Api(url, key).call("GET", "/v1/connectors/kinds")["kinds"]
    rows = [
        {
            "kind": k["kind"],
            "role": k["role"],
            "what": k["doc"],
            "required": ", ".join(k["config_schema"].get("required", [])),
        }
        for k in out
    ]
    emit(out, as_json, table_of(rows, ["kind", "role", "required", "what"], title="connector kinds"))


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="connector")
