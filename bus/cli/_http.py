"""Shared plumbing of the HTTP-talking commands: where the gateway is, which key, how errors print."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import httpx
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

console = Console()
err_console = Console(stderr=True)

UrlOpt = typer.Option(None, "--url", envvar="BUS_URL", help="gateway URL [default: http://127.0.0.1:8000]")
KeyOpt = typer.Option(None, "--key", envvar="BUS_API_KEY",
                      help="API key (default: the admin key in BUS_DATA_DIR/admin.key)", show_default=False)
JsonOpt = typer.Option(False, "--json", help="print JSON for scripts")


def resolve_key(key: str | None) -> str:
    if key:
        return key
    if os.environ.get("BUS_ADMIN_KEY"):
        return os.environ["BUS_ADMIN_KEY"]
    path = Path(os.environ.get("BUS_DATA_DIR", ".databus")) / "admin.key"
    if path.exists():
        return path.read_text().strip()
    err_console.print("[red]no API key:[/] pass --key, set BUS_API_KEY, or run where the bus's data dir is")
    raise typer.Exit(2)


class Api:
    def __init__(self, url: str | None, key: str | None) -> None:
        self.url = (url or "http://127.0.0.1:8000").rstrip("/")
        self.client = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {resolve_key(key)}"},
                                   timeout=30)

    def call(self, method: str, path: str, **kw: Any) -> Any:
        try:
            resp = self.client.request(method, path, **kw)
        except httpx.HTTPError as exc:
            err_console.print(f"[red]cannot reach the gateway at {escape(self.url)}:[/] {escape(str(exc))}")
            raise typer.Exit(3) from None
        if resp.status_code >= 400:
            try:
                body = resp.json()
            except ValueError:
                body = {"status": resp.status_code, "detail": resp.text}
            print_problem(body.get("code", resp.status_code), body.get("detail", ""))
            raise typer.Exit(1)
        return resp.json() if resp.content else None


def print_problem(code: object, detail: object) -> None:
    """An error from the gateway on stderr, its text exactly as sent: a pattern like ``^[a-z0-9-]+$``
    in a detail is not Rich markup (it was printed mangled, issue 13)."""
    err_console.print(f"[red]{escape(str(code))}[/]: {escape(str(detail))}", highlight=False)


def given(**options: Any) -> dict[str, Any]:
    """Query parameters of the options that were given (an option left out is ``None``)."""
    return {k: v for k, v in options.items() if v is not None}


def emit(data: Any, as_json: bool, table: Table | None = None) -> None:
    if as_json or table is None:
        sys.stdout.write(json.dumps(data, indent=2, default=str, ensure_ascii=False) + "\n")
    else:
        console.print(table)


def table_of(rows: list[dict[str, Any]], columns: list[str], title: str | None = None) -> Table:
    t = Table(title=title)
    for c in columns:
        t.add_column(c, overflow="fold")  # wrap long values instead of cutting them
    for r in rows:
        t.add_row(*[_cell(r.get(c)) for c in columns])
    return t


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, list | dict):
        return json.dumps(v, ensure_ascii=False)
    return str(v)
