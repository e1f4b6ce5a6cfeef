"""``databus tail GRANT``: follow what a grant delivers, over the gateway's server-sent events (grantee).

Without ``--after`` it resumes where the last ``databus tail`` of this grant on this gateway stopped:
the cursor of every printed record is kept in a position file
(``$XDG_STATE_HOME/databus/tail/<gateway>-<grant>.cursor``, else ``~/.local/state/...``). Started from
the beginning each time, it re-read every record and each re-read counted as a new consumption in
lineage (46 consumptions of 11 records, issue 13). ``--from-start`` reads everything again on purpose.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import httpx
import typer

from bus.cli._http import KeyOpt, UrlOpt, err_console, print_problem, resolve_key


def position_file(base_url: str, grant_id: str) -> Path:
    """Where the cursor of ``grant_id`` read from ``base_url`` is kept between runs."""
    state = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    gateway = hashlib.sha256(base_url.encode()).hexdigest()[:12]
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in grant_id)[:100]
    return state / "databus" / "tail" / f"{gateway}-{safe}.cursor"


def _save(path: Path, cursor: str) -> None:
    """Write the cursor atomically (a crash mid-write never leaves half a cursor)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(cursor)
    tmp.replace(path)


def _start(after: str | None, from_start: bool, path: Path) -> str | None:
    if after or from_start:
        return after
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def tail(
    grant_id: str = typer.Argument(..., help="grant id"),
    after: str = typer.Option(None, "--after", help="resume after this cursor (an event id)"),
    from_start: bool = typer.Option(
        False, "--from-start", help="read from the beginning, ignoring the kept position"
    ),
    limit: int = typer.Option(0, "--limit", min=0, help="stop after this many records (0: follow)"),
    url: str = UrlOpt,
    key: str = KeyOpt,
) -> None:
    """Print each delivered record as one JSON line: {record_id, scenario, value, cursor}."""
    base = (url or "http://127.0.0.1:8000").rstrip("/")
    headers = {"Authorization": f"Bearer {resolve_key(key)}"}
    kept = position_file(base, grant_id)
    start = _start(after, from_start, kept)
    params = {"after": start} if start else None
    try:
        _follow(base, headers, grant_id, params, limit, kept)
    except httpx.HTTPError as exc:
        err_console.print(f"cannot reach the gateway at {base}: {exc}", markup=False)
        raise typer.Exit(3) from None
    except KeyboardInterrupt:
        pass


def _follow(
    base: str, headers: dict[str, str], grant_id: str, params: dict[str, str] | None, limit: int, kept: Path
) -> None:
    seen = 0
    with (
        httpx.Client(base_url=base, headers=headers, timeout=httpx.Timeout(30, read=None)) as client,
        client.stream("GET", f"/v1/grants/{grant_id}/stream", params=params) as resp,
    ):
        if resp.status_code >= 400:
            resp.read()
            body = resp.json()
            print_problem(body.get("code"), body.get("detail"))
            if body.get("code") == "cursor.stale":
                err_console.print(f"start again with --after {body.get('start')} (or --from-start)",
                                  markup=False)
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
                    out = {"record_id": data["record_id"], "scenario": data["scenario"],
                           "value": data["value"], "cursor": event_id}
                    typer.echo(json.dumps(out, ensure_ascii=False))
                    if event_id:
                        _save(kept, event_id)
                    seen += 1
                    if limit and seen >= limit:
                        return
                elif event == "error":
                    print_problem(data["code"], data["detail"])
                    raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("tail")(tail)
