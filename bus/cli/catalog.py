"""``databus catalog add|submit|review|list|show|schema|retire|stats``: the data catalogue over HTTP."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
import yaml
from rich.markup import escape

from bus.cli._http import Api, JsonOpt, KeyOpt, UrlOpt, console, emit, err_console, given, table_of

app = typer.Typer(help="The data catalogue: entries, review, schema versions (R1-R6).", no_args_is_help=True)

COLUMNS = ["id", "owner", "title", "category", "grade", "attribute", "status", "schema_version"]


def _read(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        err_console.print(f"[red]cannot read {escape(str(path))}:[/] {escape(str(exc))}")
        raise typer.Exit(2) from None
    try:
        return json.loads(text) if path.suffix in (".json", ".avsc") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        kind = "JSON" if path.suffix in (".json", ".avsc") else "YAML"
        err_console.print(f"[red]{escape(str(path))} is not valid {kind}:[/] {escape(str(exc))}")
        raise typer.Exit(2) from None


def _row(d: dict[str, Any]) -> dict[str, Any]:
    return {**d, "attribute": d["sharing"]["attribute"]}


def _show(d: dict[str, Any]) -> None:
    console.print(table_of([_row(d)], COLUMNS, title=f"dataset {d['id']}"))
    sharing = d["sharing"]
    console.print(
        f"  sharing: [bold]{sharing['attribute']}[/]"
        + (f"  reason: {sharing['reason']}" if sharing.get("reason") else "")
        + (f"  legal basis: {sharing['legal_basis']}" if sharing.get("legal_basis") else "")
    )
    if sharing.get("shareable_fields"):
        console.print(f"  shareable fields: {', '.join(sharing['shareable_fields'])}")
    if sharing.get("eligible_agencies"):
        console.print(f"  eligible agencies: {', '.join(sharing['eligible_agencies'])}")
    if d.get("review_comment") or d.get("reviewed_by"):
        console.print(f"  reviewed by {d.get('reviewed_by')}: {d.get('review_comment') or ''}")
    if d.get("overlap"):
        console.print(f"  [yellow]overlap report:[/] {json.dumps(d['overlap'], ensure_ascii=False)}")
    schema = d.get("schema") or {}
    fields = [
        {
            "field": f.get("name"),
            "type": json.dumps(f.get("type")) if not isinstance(f.get("type"), str) else f.get("type"),
            "sensitivity": f.get("sensitivity", "internal"),
            "semantic": f.get("semantic"),
        }
        for f in schema.get("fields", [])
    ]
    console.print(
        table_of(fields, ["field", "type", "sensitivity", "semantic"], title=f"schema v{d['schema_version']}")
    )
    if schema.get("redacted_fields"):
        console.print(
            f"  ({schema['redacted_fields']} personal/sensitive fields not shown: entry is not shared)"
        )


def _sharing_of(value: Any) -> dict[str, Any]:
    """The entry's ``sharing``: a mapping, or just the attribute (``sharing: unconditional`` in a YAML
    entry crashed the command with a traceback, issue 13)."""
    if value is None:
        return {}
    if isinstance(value, str):
        return {"attribute": value}
    if isinstance(value, dict):
        return dict(value)
    err_console.print(
        "the entry's 'sharing' must be an attribute (unconditional, conditional, none) or a mapping "
        "with 'attribute', 'reason', 'legal_basis', 'shareable_fields', 'eligible_agencies'",
        markup=False,
    )
    raise typer.Exit(2)


@app.command("add")
def add(
    file: Path | None = typer.Option(
        None, "--file", "-f", help="the entry as JSON or YAML (flags override it)"
    ),
    dataset_id: str | None = typer.Option(None, "--id", help="dataset id (slug)"),
    title: str | None = typer.Option(None, "--title", help="title"),
    description: str | None = typer.Option(None, "--description", help="what the dataset holds"),
    category: str | None = typer.Option(None, "--category", help="basic, industry or application (R4)"),
    grade: str | None = typer.Option(None, "--grade", help="general, important or core (R3)"),
    schema: Path | None = typer.Option(None, "--schema", help="Avro record schema file (.avsc)"),
    sharing: str | None = typer.Option(None, "--sharing", help="unconditional, conditional or none (R5)"),
    reason: str | None = typer.Option(None, "--reason", help="why it is conditional / not shared (R6)"),
    legal_basis: str | None = typer.Option(
        None, "--legal-basis", help="the law or regulation behind it (R6)"
    ),
    shareable: list[str] = typer.Option([], "--shareable-field", help="a shareable field (repeatable)"),
    eligible: list[str] = typer.Option([], "--eligible", help="an eligible agency id (repeatable)"),
    tag: list[str] = typer.Option([], "--tag", help="a free-form tag (repeatable)"),
    domestic_only: bool | None = typer.Option(
        None, "--domestic-only/--cross-border-ok", help="refuse delivery outside the jurisdiction (R16)"
    ),
    url: str | None = UrlOpt,
    key: str | None = KeyOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Catalogue a dataset as a draft (the owning agency's key)."""
    body: dict[str, Any] = _read(file) if file else {}
    if not isinstance(body, dict):
        err_console.print("[red]the entry file must hold one object[/]")
        raise typer.Exit(2)
    for k, v in (
        ("id", dataset_id),
        ("title", title),
        ("description", description),
        ("category", category),
        ("grade", grade),
        ("domestic_only", domestic_only),
    ):
        if v is not None:
            body[k] = v
    if tag:
        body["tags"] = tag
    if schema is not None:
        body["schema"] = _read(schema)
    share = _sharing_of(body.get("sharing"))
    for k, v in (("attribute", sharing), ("reason", reason), ("legal_basis", legal_basis)):
        if v is not None:
            share[k] = v
    if shareable:
        share["shareable_fields"] = shareable
    if eligible:
        share["eligible_agencies"] = eligible
    body["sharing"] = share
    out = Api(url, key).call("POST", "/v1/datasets", json=body)
    if as_json:
        emit(out, True)
        return
    _show(out)
    console.print(f"[green]draft created[/]; submit it with: databus catalog submit {out['id']}")


@app.command("submit")
def submit(
    dataset_id: str = typer.Argument(..., metavar="ID", help="dataset id"),
    url: str | None = UrlOpt,
    key: str | None = KeyOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Submit a draft (or a rejected entry, after fixing it) for review (owner)."""
    out = Api(url, key).call("POST", f"/v1/datasets/{dataset_id}/submit")
    if as_json:
        emit(out, True)
        return
    console.print(f"[green]{out['id']} submitted[/] for review")
    if out.get("overlap"):
        console.print(f"  [yellow]overlap report:[/] {json.dumps(out['overlap'], ensure_ascii=False)}")


@app.command("review")
def review(
    dataset_id: str = typer.Argument(..., metavar="ID", help="dataset id"),
    approve: bool = typer.Option(False, "--approve", help="approve the entry"),
    reject: bool = typer.Option(False, "--reject", help="reject the entry (needs --comment)"),
    comment: str | None = typer.Option(None, "--comment", help="the reviewer's comment"),
    url: str | None = UrlOpt,
    key: str | None = KeyOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Approve or reject a submitted entry (reviewer key; never one's own entry)."""
    if approve == reject:
        err_console.print("[red]give exactly one of --approve or --reject[/]")
        raise typer.Exit(2)
    body = {"decision": "approve" if approve else "reject", "comment": comment}
    out = Api(url, key).call("POST", f"/v1/datasets/{dataset_id}/review", json=body)
    if as_json:
        emit(out, True)
        return
    console.print(
        f"{out['id']}: [bold]{out['status']}[/] by {out['reviewed_by']}"
        + (f" ({out['review_comment']})" if out.get("review_comment") else "")
    )


@app.command("list")
def list_(
    owner: str | None = typer.Option(None, "--owner", help="only this agency's entries"),
    category: str | None = typer.Option(None, "--category", help="basic, industry or application"),
    grade: str | None = typer.Option(None, "--grade", help="general, important or core"),
    attribute: str | None = typer.Option(None, "--attribute", help="unconditional, conditional or none"),
    status: str | None = typer.Option(
        None, "--status", help="draft, submitted, approved, rejected or retired"
    ),
    limit: int = typer.Option(200, "--limit", help="at most this many entries"),
    url: str | None = UrlOpt,
    key: str | None = KeyOpt,
    as_json: bool = JsonOpt,
) -> None:
    """List catalogue entries, with filters."""
    params = given(
        owner=owner, category=category, grade=grade, attribute=attribute, status=status, limit=limit
    )
    out = Api(url, key).call("GET", "/v1/datasets", params=params)
    emit(
        out,
        as_json,
        table_of([_row(d) for d in out["datasets"]], COLUMNS, title=f"catalogue ({out['total']} entries)"),
    )


@app.command("show")
def show(
    dataset_id: str = typer.Argument(..., metavar="ID", help="dataset id"),
    version: int | None = typer.Option(None, "--version", help="show this schema version instead"),
    url: str | None = UrlOpt,
    key: str | None = KeyOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Show one entry with its schema (or one schema version with --version)."""
    api = Api(url, key)
    if version is not None:
        emit(api.call("GET", f"/v1/datasets/{dataset_id}/schema", params={"version": version}), True)
        return
    out = api.call("GET", f"/v1/datasets/{dataset_id}")
    if as_json:
        emit(out, True)
    else:
        _show(out)


@app.command("schema")
def schema(
    dataset_id: str = typer.Argument(..., metavar="ID", help="dataset id"),
    file: Path = typer.Option(..., "--file", "-f", help="the new Avro record schema (.avsc)"),
    url: str | None = UrlOpt,
    key: str | None = KeyOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Add a schema version (owner); refused when old readers could no longer decode (R2)."""
    out = Api(url, key).call("PUT", f"/v1/datasets/{dataset_id}/schema", json={"schema": _read(file)})
    if as_json:
        emit(out, True)
    else:
        console.print(f"[green]{out['dataset']}: schema version {out['version']}[/]")


@app.command("retire")
def retire(
    dataset_id: str = typer.Argument(..., metavar="ID", help="dataset id"),
    url: str | None = UrlOpt,
    key: str | None = KeyOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Retire an approved entry (owner or admin): no more publishing or requests."""
    out = Api(url, key).call("POST", f"/v1/datasets/{dataset_id}/retire")
    emit(out, as_json, table_of([_row(out)], COLUMNS))


@app.command("stats")
def stats(url: str | None = UrlOpt, key: str | None = KeyOpt, as_json: bool = JsonOpt) -> None:
    """Catalogue statistics: counts by agency, category, grade, attribute, status; review times (R2)."""
    out = Api(url, key).call("GET", "/v1/catalog/stats")
    if as_json:
        emit(out, True)
        return
    rows = [
        {"by": k.removeprefix("by_"), "counts": ", ".join(f"{n}={c}" for n, c in v.items())}
        for k, v in out.items()
        if k.startswith("by_")
    ]
    console.print(table_of(rows, ["by", "counts"], title=f"catalogue: {out['total']} entries"))
    rt = out["review_times"]
    console.print(
        f"  reviews: {rt['count']} decided, median {rt['median_seconds']} s, max {rt['max_seconds']} s; "
        f"{out['pending_reviews']['count']} pending"
    )


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="catalog")
