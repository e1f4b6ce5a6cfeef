"""``databus suspend|resume agency|dataset|grant ID --reason ...``: the emergency switch (R15); admin key."""

from __future__ import annotations

from enum import StrEnum

import typer

from bus.cli._http import Api, JsonOpt, KeyOpt, UrlOpt, console, emit


class Kind(StrEnum):
    agency = "agency"
    dataset = "dataset"
    grant = "grant"


def _switch(
    action: str, kind: Kind, target: str, reason: str, url: str | None, key: str | None, as_json: bool
) -> None:
    out = Api(url, key).call(
        "POST", f"/v1/emergency/{action}", json={"kind": kind.value, "id": target, "reason": reason}
    )
    if as_json:
        emit(out, True)
        return
    state = "suspended" if out["suspended"] else "resumed"
    note = "" if out["changed"] else " (it already was)"
    console.print(
        f"{kind.value} {target} {state}{note}; announced to every worker (policy version "
        f"{out['policy_version']})"
    )


def suspend(
    kind: Kind = typer.Argument(..., metavar="KIND", help="agency, dataset or grant"),
    target: str = typer.Argument(..., metavar="ID", help="its id"),
    reason: str = typer.Option(..., "--reason", help="why (recorded in the audit log)"),
    url: str | None = UrlOpt,
    key: str | None = KeyOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Suspend an agency, a dataset or a grant at once: publishing, routing, streams and reads stop."""
    _switch("suspend", kind, target, reason, url, key, as_json)


def resume(
    kind: Kind = typer.Argument(..., metavar="KIND", help="agency, dataset or grant"),
    target: str = typer.Argument(..., metavar="ID", help="its id"),
    reason: str = typer.Option(..., "--reason", help="why (recorded in the audit log)"),
    url: str | None = UrlOpt,
    key: str | None = KeyOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Resume what the emergency switch suspended."""
    _switch("resume", kind, target, reason, url, key, as_json)


def register(root: typer.Typer) -> None:
    root.command("suspend")(suspend)
    root.command("resume")(resume)
