"""``databus attribute FILE``: which grant the pseudonyms in a leaked file were issued to (R8)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.markup import escape

from bus.cli._http import Api, JsonOpt, KeyOpt, UrlOpt, console, emit, err_console, table_of


def attribute(
    file: str = typer.Argument(
        ..., metavar="FILE", help="the leaked data: JSON record(s), JSON lines or any text; '-' reads stdin"
    ),
    original: list[str] = typer.Option(
        None, "--original", help="an original value to verify pseudonyms against (repeatable)"
    ),
    url: str | None = UrlOpt,
    key: str | None = KeyOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Attribute a leaked copy to its grant (agency, scenario, time); exit 1 when nothing is attributable."""
    if file == "-":
        raw = sys.stdin.buffer.read()
    else:
        path = Path(file)
        if not path.is_file():
            err_console.print(f"[red]no such file:[/] {escape(str(file))}")
            raise typer.Exit(2)
        raw = path.read_bytes()
    if original:
        records = _records(raw)
        body, ctype = json.dumps({"records": records, "originals": original}).encode(), "application/json"
    else:
        body, ctype = raw, "application/octet-stream"
    out = Api(url, key).call("POST", "/v1/audit/attribute", content=body, headers={"Content-Type": ctype})
    if as_json:
        emit(out, True)
    else:
        console.print(out["summary"])
        rows = [
            {
                **g,
                "scenario": g["scenario"]["code"],
                "deliveries": g["deliveries"]["count"],
                "first_delivery": g["deliveries"]["first_at"],
                "last_delivery": g["deliveries"]["last_at"],
            }
            for g in out["grants"]
        ]
        if rows:
            console.print(
                table_of(
                    rows,
                    [
                        "grant_id",
                        "agency_id",
                        "dataset_id",
                        "scenario",
                        "status",
                        "pseudonyms",
                        "fields",
                        "deliveries",
                        "first_delivery",
                        "last_delivery",
                        "verified",
                    ],
                )
            )
    if not out["attributed"]:
        raise typer.Exit(1)


def _records(raw: bytes) -> list[object]:
    """The leaked data as a list for the ``{"records", "originals"}`` form (text stays one string)."""
    text = raw.decode("utf-8-sig", errors="replace")
    try:
        doc = json.loads(text)
    except ValueError:
        try:
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        except ValueError:
            return [text]
    if isinstance(doc, dict) and isinstance(doc.get("records"), list):
        return list(doc["records"])
    return doc if isinstance(doc, list) else [doc]


def register(root: typer.Typer) -> None:
    root.command("attribute")(attribute)
