"""``databus publish DATASET FILE.jsonl``: publish JSON records over HTTP in batches (dataset owner)."""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from bus.cli._http import Api, JsonOpt, KeyOpt, UrlOpt, console, emit, err_console


def publish(
    dataset: str = typer.Argument(..., help="dataset id"),
    file: Path = typer.Argument(..., help="JSON Lines file, one record per line ('-' for stdin)"),
    batch: int = typer.Option(500, "--batch", min=1, max=10_000, help="records per request"),
    url: str = UrlOpt,
    key: str = KeyOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Publish records; each batch carries an Idempotency-Key, so a retried batch is not published twice.

    Exit status 1 if any record was refused (each refusal is printed with its line number and code).
    """
    api = Api(url, key)
    lines = sys.stdin if str(file) == "-" else _open(file)
    totals: dict[str, Any] = {"accepted": 0, "rejected": [], "record_ids": []}
    chunk: list[tuple[int, Any]] = []

    def send() -> None:
        answer = api.call(
            "POST",
            f"/v1/datasets/{dataset}/records",
            json={"records": [r for _, r in chunk]},
            headers={"Idempotency-Key": uuid.uuid4().hex},
        )
        totals["accepted"] += answer["accepted"]
        totals["record_ids"] += answer["record_ids"]
        for r in answer["rejected"]:
            totals["rejected"].append({**r, "line": chunk[r["index"]][0]})
        chunk.clear()

    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            chunk.append((n, json.loads(line)))
        except ValueError as exc:
            totals["rejected"].append({"line": n, "code": "request.invalid", "detail": f"not JSON: {exc}"})
            continue
        if len(chunk) >= batch:
            send()
    if chunk:
        send()
    if as_json:
        emit(totals, True)
    else:
        console.print(f"[green]{totals['accepted']} accepted[/], {len(totals['rejected'])} refused")
        for r in totals["rejected"]:
            code, detail = escape(str(r["code"])), escape(str(r["detail"]))
            err_console.print(f"  line {r['line']}: [red]{code}[/] {detail}")
    if totals["rejected"]:
        raise typer.Exit(1)


def _open(path: Path) -> Any:
    try:
        return path.open(encoding="utf-8")
    except OSError as exc:
        err_console.print(f"[red]cannot read {escape(str(path))}:[/] {escape(str(exc))}")
        raise typer.Exit(2) from None


def register(app: typer.Typer) -> None:
    app.command("publish")(publish)
