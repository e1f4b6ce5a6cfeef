"""``databus audit verify|events``: check the hash-chained audit log and read it (auditor or admin key)."""

from __future__ import annotations

import typer

from bus.cli._http import Api, JsonOpt, KeyOpt, UrlOpt, console, emit, given, table_of

app = typer.Typer(help="The tamper-evident audit log (R14).", no_args_is_help=True)


@app.command("verify")
def verify(url: str | None = UrlOpt, key: str | None = KeyOpt, as_json: bool = JsonOpt) -> None:
    """Recompute the hash chain; exit 1 when a link is broken (prints the first bad event's seq)."""
    out = Api(url, key).call("GET", "/v1/audit/verify")
    if as_json:
        emit(out, True)
    elif out.get("ok"):
        console.print(f"[green]audit chain intact[/]: {out['events']} events verified")
    else:
        console.print(
            f"[red bold]audit chain broken[/] at event seq {out['first_bad']} "
            f"({out['events']} events verified before it)"
        )
    if not out.get("ok"):
        raise typer.Exit(1)


@app.command("events")
def events(
    actor: str | None = typer.Option(None, "--actor", help="only events by this agency id (or 'admin')"),
    action: str | None = typer.Option(
        None, "--action", help="action, e.g. dataset.submitted, or a prefix: dataset.*"
    ),
    subject: str | None = typer.Option(None, "--subject", help="subject id (dataset, agency, grant ...)"),
    since: str | None = typer.Option(None, "--since", help="from this ISO 8601 time"),
    until: str | None = typer.Option(None, "--until", help="before this ISO 8601 time"),
    after: int = typer.Option(
        0, "--after", help="cursor: events after this seq (the previous page's 'next')"
    ),
    limit: int = typer.Option(100, "--limit", help="at most this many events (1-1000)"),
    url: str | None = UrlOpt,
    key: str | None = KeyOpt,
    as_json: bool = JsonOpt,
) -> None:
    """List audit events, oldest first, with filters and a cursor."""
    params = given(
        actor=actor, action=action, subject=subject, since=since, until=until, after=after, limit=limit
    )
    out = Api(url, key).call("GET", "/v1/audit/events", params=params)
    if as_json:
        emit(out, True)
        return
    rows = [{**e, "hash": e["hash"][:12]} for e in out["events"]]
    console.print(
        table_of(
            rows,
            ["seq", "at", "actor", "action", "subject_type", "subject_id", "data", "hash"],
            title="audit events",
        )
    )
    if out.get("next"):
        console.print(f"more: --after {out['next']}")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="audit")
