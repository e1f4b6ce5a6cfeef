"""``databus tail GRANT``: follow what a grant delivers, over the gateway's server-sent events (grantee)."""

from __future__ import annotations

import json

import httpx
import typer

from bus.cli._http import KeyOpt, UrlOpt, err_console, resolve_key


def tail(
    grant_id: str = typer.Argument(..., help="grant id"),
    after: str = typer.Option(None, "--after", help="resume after this cursor (an event id)"),
    limit: int = typer.Option(0, "--limit", min=0, help="stop after this many records (0: follow)"),
    url: str = UrlOpt,
    key: str = KeyOpt,
) -> None:
    """Print each delivered record as one JSON line: {record_id, scenario, value, cursor}."""
    base = (url or "http://127.0.0.1:8000").rstrip("/")
    headers = {"Authorization": f"Bearer {resolve_key(key)}"}
    params = {"after": after} if after else None
    seen = 0
    try:
        with (
            httpx.Client(base_url=base, headers=headers, timeout=httpx.Timeout(30, read=None)) as client,
            client.stream("GET", f"/v1/grants/{grant_id}/stream", params=params) as resp,
        ):
            if resp.status_code >= 400:
                resp.read()
                body = resp.json()
                err_console.print(f"[red]{body.get('code')}[/]: {body.get('detail')}")
                raise typer.Exit(1)
            event, event_id = None, None
            for line in resp.iter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("id: "):
                    event_id = line[4:]
                elif line.startswith("data: "):
                    data = json.loads(line[6:])
                    if event == "record":
                        typer.echo(
                            json.dumps(
                                {
                                    "record_id": data["record_id"],
                                    "scenario": data["scenario"],
                                    "value": data["value"],
                                    "cursor": event_id,
                                },
                                ensure_ascii=False,
                            )
                        )
                        seen += 1
                        if limit and seen >= limit:
                            return
                    elif event == "error":
                        err_console.print(f"[red]{data['code']}[/]: {data['detail']}")
                        raise typer.Exit(1)
    except httpx.HTTPError as exc:
        err_console.print(f"[red]cannot reach the gateway at {base}:[/] {exc}")
        raise typer.Exit(3) from None
    except KeyboardInterrupt:
        pass


def register(app: typer.Typer) -> None:
    app.command("tail")(tail)
