"""``databus lineage RECORD_ID`` and ``databus lineage --dataset ID``: lineage trees (auditor, admin).

A record: who published it and when, the trace id, the validation outcome, every delivery (grant,
agency, scenario) and every acknowledged consumption, and the spans of its trace when the bus keeps
them. A dataset: publishers, grants, consumers, connectors and derived datasets with record counts;
``--openlineage`` prints the same graph as OpenLineage run events (one JSON object per line).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import typer
from rich.tree import Tree

from bus.cli._http import Api, JsonOpt, KeyOpt, UrlOpt, console, emit, err_console


def _size(n: int | None) -> str:
    n = int(n or 0)
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


def _at(value: str | None) -> str:
    return (value or "?").replace("T", " ").replace("+00:00", "Z")


def _pos(partition: int | None, offset: int | None) -> str:
    return (
        f" [dim]partition {partition} offset {offset}[/]"
        if partition is not None and offset is not None
        else ""
    )


def record_tree(data: dict[str, Any]) -> Tree:
    """The lineage of one record (``GET /v1/lineage/records/{id}``) as a Rich tree."""
    tree = Tree(f"[bold]record {data['record_id']}[/] of dataset [cyan]{data['dataset']}[/]")
    pos = data.get("position") or {}
    tree.add(
        f"published by [bold]{data['publisher']}[/] at {_at(data['published_at'])}, schema v"
        f"{data['schema_version']}, {_size(data.get('size'))}{_pos(pos.get('partition'), pos.get('offset'))}"
    )
    tree.add(f"trace id [magenta]{data.get('trace_id') or '-'}[/]")
    v = data["validation"]
    tree.add(
        "validation: [green]accepted[/]"
        if v["outcome"] == "accepted"
        else f"validation: [red]refused[/] ({v['code']})"
    )
    deliveries = data.get("deliveries") or []
    if not deliveries and v["outcome"] == "accepted":
        tree.add("[dim]not delivered under any grant[/]")
    for d in deliveries:
        sc = d.get("scenario") or {}
        desc = f": {sc['description']}" if sc.get("description") else ""
        node = tree.add(
            f"delivered under grant [bold]{d['grant']}[/] to [bold]{d['agency']}[/] at {_at(d['at'])}"
            f", scenario [yellow]{sc.get('code')}[/]{desc}{_pos(d.get('partition'), d.get('offset'))}"
        )
        consumed = d.get("consumed") or []
        for c in consumed:
            node.add(f"[green]consumed[/] by {c['agency']} via {c['via']} at {_at(c['at'])}")
        if not consumed:
            node.add("[dim]no consumption acknowledged[/]")
    spans = data.get("spans") or []
    if spans:
        _span_tree(tree.add(f"{len(spans)} spans of trace {data.get('trace_id')}"), spans)
    return tree


def _span_tree(parent: Tree, spans: list[dict[str, Any]]) -> None:
    ids = {s["span_id"] for s in spans}
    children: dict[str | None, list[dict[str, Any]]] = {}
    for s in spans:
        key = s.get("parent_span_id") if s.get("parent_span_id") in ids else None
        children.setdefault(key, []).append(s)

    def add(node: Tree, span: dict[str, Any]) -> None:
        attrs = span.get("attributes") or {}
        count = attrs.get("messaging.batch.message_count")
        extra = f", {count} records" if count else ""
        child = node.add(f"{span['name']} [dim]({span['kind']}, {span['duration_ms']} ms{extra})[/]")
        for c in children.get(span["span_id"], []):
            add(child, c)

    for root in children.get(None, []):
        add(parent, root)


def _edge_text(e: dict[str, Any]) -> str:
    when = f" [dim]{_at(e['first_at'])} .. {_at(e['last_at'])}[/]" if e.get("first_at") else ""
    return f"{e['records']} records, {_size(e.get('bytes'))}{when}"


def graph_tree(graph: dict[str, Any]) -> Tree:
    """A dataset's lineage graph (``GET /v1/lineage/datasets/{id}``) as a Rich tree rooted at the dataset."""
    nodes = {n["id"]: n for n in graph["nodes"]}
    ds = nodes[f"dataset:{graph['dataset']}"]
    tree = Tree(
        f"[bold]dataset {graph['dataset']}[/] [dim](owner {ds.get('owner')}, {ds.get('sharing')}, "
        f"{ds.get('grade')}, {ds.get('status')})[/]"
    )
    out: dict[str, list[dict[str, Any]]] = {}
    for e in graph["edges"]:
        out.setdefault(e["from"], []).append(e)
    for e in graph["edges"]:
        src = nodes.get(e["from"], {})
        if e["kind"] == "published":
            refused = f", {e['refused']} refused" if e.get("refused") else ""
            tree.add(f"published by [bold]{src.get('agency')}[/]: {_edge_text(e)}{refused}")
        elif e["kind"] == "feeds":
            tree.add(f"source connector [bold]{src.get('connector')}[/] ({src.get('kind')})")
    for e in out.get(f"dataset:{graph['dataset']}", []):
        dst = nodes.get(e["to"], {})
        if e["kind"] == "delivered":
            sc = dst.get("scenario") or {}
            g = tree.add(
                f"grant [bold]{dst['grant']}[/] ({dst.get('status')}, scenario [yellow]{sc.get('code')}"
                f"[/]) delivered {_edge_text(e)}"
            )
            for ce in out.get(e["to"], []):
                target = nodes.get(ce["to"], {})
                if target.get("type") == "consumer":
                    via = ", ".join(f"{k} {v}" for k, v in (ce.get("via") or {}).items())
                    g.add(
                        f"consumed by [bold]{target['agency']}[/]: {ce['records']} records"
                        + (f" ({via})" if via else "")
                    )
                elif target.get("type") == "connector":
                    g.add(f"sink connector [bold]{target.get('connector')}[/]: {ce['records']} records")
        elif e["kind"] == "derived":
            tree.add(f"derived dataset [bold]{dst.get('dataset')}[/]: {_edge_text(e)}")
    return tree


def _undelivered(api: Api, since: str | None, dataset: str | None, limit: int, as_json: bool) -> None:
    """``databus lineage undelivered --since T``: accepted records with no delivery evidence."""
    if not since:
        err_console.print("lineage undelivered needs --since TIME (ISO 8601), e.g. the loss's detected_at",
                          markup=False)
        raise typer.Exit(2)
    params: dict[str, Any] = {"since": since, "limit": limit, **({"dataset": dataset} if dataset else {})}
    out = api.call("GET", "/v1/lineage/undelivered", params=params)
    if as_json:
        emit(out, True)
        return
    for r in out["records"]:
        sys.stdout.write(f"{r['record_id']}\t{r['dataset']}\t{r['publisher']}\t{r['published_at']}\n")
    more = "" if out["complete"] else f" (the first {limit}; raise --limit for more)"
    err_console.print(f"{out['count']} record(s) accepted since {out['since']} without delivery{more}",
                      markup=False)


def lineage(
    record_id: str | None = typer.Argument(
        None, help="the bus-record-id of a record, or 'undelivered' (with --since)"
    ),
    dataset: str | None = typer.Option(
        None, "--dataset", help="show the lineage graph of this dataset instead"
    ),
    openlineage: bool = typer.Option(
        False, "--openlineage", help="with --dataset: OpenLineage events (NDJSON)"
    ),
    since: str | None = typer.Option(None, "--from", help="with --dataset: from this ISO 8601 time"),
    until: str | None = typer.Option(None, "--to", help="with --dataset: before this ISO 8601 time"),
    undelivered_since: str | None = typer.Option(
        None, "--since", help="with 'undelivered': records accepted at or after this ISO 8601 time"
    ),
    limit: int = typer.Option(1000, "--limit", min=1, max=100_000, help="with 'undelivered': at most"),
    url: str | None = UrlOpt,
    key: str | None = KeyOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Where a record came from, what was decided, which grants delivered it and who consumed it.

    ``databus lineage undelivered --since T [--dataset ID]`` lists the records accepted since T that no
    grant delivered (one line each: record id, dataset, publisher, time): after a broker loss, what to
    re-send."""
    if record_id == "undelivered":
        _undelivered(Api(url, key), undelivered_since, dataset, limit, as_json)
        return
    if (record_id is None) == (dataset is None):
        err_console.print("give a RECORD_ID or --dataset ID (one of the two)")
        raise typer.Exit(2)
    api = Api(url, key)
    if record_id is not None:
        data = api.call("GET", f"/v1/lineage/records/{record_id}")
        emit(data, True) if as_json else console.print(record_tree(data))
        return
    params = {k: v for k, v in {"from": since, "to": until}.items() if v}
    if openlineage:
        out = api.call("GET", f"/v1/lineage/datasets/{dataset}/openlineage", params=params)
        for event in out["events"]:
            sys.stdout.write(json.dumps(event, ensure_ascii=False) + "\n")
        return
    graph = api.call("GET", f"/v1/lineage/datasets/{dataset}", params=params)
    emit(graph, True) if as_json else console.print(graph_tree(graph))


def register(root: typer.Typer) -> None:
    root.command("lineage")(lineage)
