"""``databus operation ...``: authorised operation over HTTP (R11): analysis rules, operations, results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
import yaml

from bus.cli._http import Api, JsonOpt, KeyOpt, UrlOpt, console, emit, table_of

app = typer.Typer(
    help="Authorised operation (R11): owners set analysis rules; operators run aggregate-only operations "
    "inside the bus and read k-anonymous results through their grant.",
    no_args_is_help=True,
)

COLUMNS = ["id", "dataset", "operator", "status", "group_by", "measures", "window_seconds", "k", "epsilon"]


def _row(o: dict[str, Any]) -> dict[str, Any]:
    return {
        **o,
        "group_by": ", ".join(o["group_by"]),
        "measures": ", ".join(f"{m['fn']}({m['field']})" for m in o["measures"]),
    }


def _show(o: dict[str, Any]) -> None:
    console.print(table_of([_row(o)], COLUMNS, title=f"operation {o['id']}"))
    console.print(f"  scenario: [bold]{o['scenario']['code']}[/] - {o['scenario']['description']}")
    console.print(f"  legal basis: {o['legal_basis']}; analysis rule v{o['rule_version']}")
    if o.get("filters"):
        console.print("  filters: " + "; ".join(f"{f['field']} {f['op']} {f['value']}" for f in o["filters"]))
    if o.get("derived_dataset"):
        console.print(
            f"  derived dataset: {o['derived_dataset']} (sharing {o['sharing']}), "
            f"results through grant {o['grant']}"
        )


def _load(path: Path) -> Any:
    text = path.read_text()
    return yaml.safe_load(text) if path.suffix in (".yaml", ".yml") else json.loads(text)


def _measure(text: str) -> dict[str, str]:
    fn, _, field = text.partition(":")
    if not field:
        raise typer.BadParameter(f"--measure {text!r}: use FN:FIELD, e.g. count:licence_no")
    return {"fn": fn.strip(), "field": field.strip()}


def _filter(text: str) -> dict[str, Any]:
    field, _, value = text.partition("=")
    if not value:
        raise typer.BadParameter(f"--filter {text!r}: use FIELD=VALUE or FIELD=V1,V2")
    values = [v.strip() for v in value.split(",")]
    return {
        "field": field.strip(),
        "op": "in" if len(values) > 1 else "eq",
        "value": values if len(values) > 1 else values[0],
    }


@app.command("rule-set")
def rule_set(
    dataset: str = typer.Argument(...),
    file: Path = typer.Option(..., "-f", "--file", exists=True, help="the rule, JSON or YAML"),
    url: str = UrlOpt,
    key: str = KeyOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Set the analysis rule of your dataset (a new version; audited)."""
    emit(Api(url, key).call("PUT", f"/v1/datasets/{dataset}/analysis-rule", json=_load(file)), True)


@app.command("rule")
def rule(
    dataset: str = typer.Argument(...), url: str = UrlOpt, key: str = KeyOpt, as_json: bool = JsonOpt
) -> None:
    """The current analysis rule of a dataset."""
    emit(Api(url, key).call("GET", f"/v1/datasets/{dataset}/analysis-rule"), True)


@app.command("request")
def request(
    dataset: str = typer.Argument(..., help="the source dataset"),
    measure: list[str] = typer.Option(..., "--measure", help="FN:FIELD (count, sum, avg, min, max); repeat"),
    window: int = typer.Option(..., "--window", help="tumbling window, seconds (one the rule allows)"),
    k: int = typer.Option(..., "--k", help="minimum distinct subjects per released row (>= the rule's)"),
    scenario: str = typer.Option(..., "--scenario"),
    description: str = typer.Option(..., "--description"),
    legal_basis: str = typer.Option(..., "--legal-basis"),
    group_by: list[str] = typer.Option([], "--group-by", help="a dimension; repeat"),
    filters: list[str] = typer.Option([], "--filter", help="FIELD=VALUE or FIELD=V1,V2; repeat"),
    epsilon: float = typer.Option(None, "--epsilon", help="add calibrated noise, spending this per window"),
    sharing: str = typer.Option(None, "--sharing", help="the derived product's attribute (never wider)"),
    url: str = UrlOpt,
    key: str = KeyOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Request an operation (operator role): pending until the dataset owner decides."""
    body: dict[str, Any] = {
        "dataset": dataset,
        "group_by": group_by,
        "measures": [_measure(m) for m in measure],
        "filters": [_filter(f) for f in filters],
        "window_seconds": window,
        "k": k,
        "scenario": {"code": scenario, "description": description},
        "legal_basis": legal_basis,
    }
    if epsilon is not None:
        body["epsilon"] = epsilon
    if sharing:
        body["sharing"] = sharing
    o = Api(url, key).call("POST", "/v1/operations", json=body)
    emit(o, True) if as_json else _show(o)


@app.command("decide")
def decide(
    operation_id: str = typer.Argument(...),
    decision: str = typer.Argument(..., help="approve or deny"),
    reason: str = typer.Option(None, "--reason"),
    url: str = UrlOpt,
    key: str = KeyOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Approve or deny an operation on your dataset; approval catalogues its derived product."""
    o = Api(url, key).call(
        "POST", f"/v1/operations/{operation_id}/decision", json={"decision": decision, "reason": reason}
    )
    emit(o, True) if as_json else _show(o)


def _lifecycle(action: str, doc: str) -> None:
    def command(
        operation_id: str = typer.Argument(...),
        reason: str = typer.Option(None, "--reason"),
        url: str = UrlOpt,
        key: str = KeyOpt,
        as_json: bool = JsonOpt,
    ) -> None:
        o = Api(url, key).call("POST", f"/v1/operations/{operation_id}/{action}", json={"reason": reason})
        emit(o, True) if as_json else _show(o)

    command.__doc__ = doc
    app.command(action)(command)


_lifecycle(
    "revoke", "Revoke an operation (owner, admin, or its operator): nothing is released after a second."
)
_lifecycle("suspend", "Suspend an operation at once (owner, admin).")
_lifecycle("resume", "Resume a suspended operation (owner, admin).")


@app.command("dry-run")
def dry_run(
    operation_id: str = typer.Argument(...), url: str = UrlOpt, key: str = KeyOpt, as_json: bool = JsonOpt
) -> None:
    """Run the operation over generated data of the dataset's schema; spends no budget."""
    data = Api(url, key).call("POST", f"/v1/operations/{operation_id}/dry-run")
    if as_json:
        emit(data, True)
        return
    rows = data["rows"]
    columns = list(rows[0]) if rows else ["window_start"]
    console.print(table_of(rows[:50], columns, title=f"dry run of {operation_id} (synthetic data)"))
    console.print(
        f"  {data['suppressed_groups']} groups suppressed (fewer than k subjects); cost {data['cost']}"
    )


@app.command("list")
def list_(
    status: str = typer.Option(None, "--status"),
    dataset: str = typer.Option(None, "--dataset"),
    url: str = UrlOpt,
    key: str = KeyOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Operations you run or decide on (auditors and the admin: all)."""
    params = {k: v for k, v in {"status": status, "dataset": dataset}.items() if v}
    data = Api(url, key).call("GET", "/v1/operations", params=params)
    emit(data, as_json, table_of([_row(o) for o in data["operations"]], COLUMNS, title="operations"))


@app.command("show")
def show(
    operation_id: str = typer.Argument(...), url: str = UrlOpt, key: str = KeyOpt, as_json: bool = JsonOpt
) -> None:
    """One operation."""
    o = Api(url, key).call("GET", f"/v1/operations/{operation_id}")
    emit(o, True) if as_json else _show(o)


@app.command("results")
def results(
    operation_id: str = typer.Argument(...), url: str = UrlOpt, key: str = KeyOpt, as_json: bool = JsonOpt
) -> None:
    """Lineage of the released rows: window, rule version, k, epsilon, how many source records each."""
    data = Api(url, key).call("GET", f"/v1/operations/{operation_id}/results")
    rows = [{**r, "window": f"{r['window']['start']} .. {r['window']['end']}"} for r in data["results"]]
    cols = ["record_id", "window", "rule_version", "k", "epsilon", "source_records"]
    emit(data, as_json, table_of(rows, cols, title=f"results of {operation_id}"))


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="operation")
