"""``databus kafka acls [--apply] [--json]``: the broker ACLs the catalogue and grants call for (R8, R14).

Runs where the bus runs (it reads the store through ``BUS_DATABASE_URL`` and talks to the broker with
the bus's own SASL credentials). Without ``--apply`` it only prints the plan; with it, it checks the
broker can hold ACLs, compares with what the broker has, and creates / deletes the difference.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import typer
from rich.table import Table

from bus.cli._http import JsonOpt, console, err_console
from bus.errors import BusError, Unavailable
from bus.policy.acls import AclBinding, AclDiff, AclPlan
from bus.settings import load_settings

app = typer.Typer(help="Apache Kafka access control for the bus's topics (R8, R14).", no_args_is_help=True)


def _binding(b: AclBinding) -> dict[str, str]:
    return {
        "restype": b.restype.value,
        "name": b.name,
        "resource_pattern_type": b.resource_pattern_type.value,
        "principal": b.principal,
        "host": b.host,
        "operation": b.operation.value,
        "permission_type": b.permission_type.value,
    }


def plan_json(plan: AclPlan, change: AclDiff | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "bus_principal": plan.bus_principal,
        "agencies": [
            {
                "agency": a.agency_id,
                "principal": a.principal,
                "publishes": list(a.publishes),
                "reads": list(a.reads),
            }
            for a in plan.agencies
        ],
        "unmapped": list(plan.unmapped),
        "bindings": [_binding(b) for b in plan.bindings],
    }
    if change is not None:
        out["created"] = [_binding(b) for b in change.create]
        out["deleted"] = [_binding(b) for b in change.delete]
    return out


def _bindings_table(title: str, bindings: tuple[AclBinding, ...]) -> Table:
    t = Table(title=title)
    for col in ("principal", "resource", "pattern", "name", "operation"):
        t.add_column(col, overflow="fold")
    for b in sorted(bindings, key=lambda b: (b.principal, b.restype, b.name, b.operation)):
        t.add_row(b.principal, b.restype.value, b.resource_pattern_type.value, b.name, b.operation.value)
    return t


def _print(plan: AclPlan, change: AclDiff | None) -> None:
    agencies = Table(title="SASL/SCRAM principals")
    for col in ("agency", "principal", "publishes (ingress)", "reads (deliver)"):
        agencies.add_column(col, overflow="fold")
    agencies.add_row("(the bus)", plan.bus_principal, "every bus topic", "every bus topic")
    for a in plan.agencies:
        agencies.add_row(a.agency_id, a.principal, ", ".join(a.publishes) or "-", ", ".join(a.reads) or "-")
    console.print(agencies)
    console.print(_bindings_table(f"ACL bindings ({len(plan.bindings)}, all ALLOW, any host)", plan.bindings))
    for agency in plan.unmapped:
        err_console.print(f"[yellow]agency {agency!r} would share the bus's principal: no Kafka access[/]")
    if change is not None:
        console.print(
            f"applied: [green]{len(change.create)} created[/], [red]{len(change.delete)} deleted[/]"
        )


def _refuse(err: BusError, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps({"error": err.to_problem()}, indent=2) + "\n")
    err_console.print(f"[red]{err.code}[/]: {err.detail}")
    raise typer.Exit(1)


@app.command("acls")
def acls_command(
    apply: bool = typer.Option(
        False, "--apply", help="create the missing bindings and delete the extra ones"
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Print the ACL plan; with --apply, make the broker's ACLs equal to it (Apache Kafka only)."""
    from bus.exchange import acl_sync
    from bus.store import Store

    settings = load_settings()
    store = Store(settings.resolved_database_url).start()
    try:
        plan = acl_sync.current_plan(store, settings)
        change = None
        if apply:
            try:
                change = acl_sync.apply_plan(settings, settings.kafka_bootstrap or "", plan)
            except BusError as err:
                _refuse(err, as_json)
            except Exception as exc:  # the broker did not answer, or refused a call
                _refuse(Unavailable(f"applying the ACLs failed: {type(exc).__name__}: {exc}"), as_json)
    finally:
        store.close()
    if as_json:
        sys.stdout.write(json.dumps(plan_json(plan, change), indent=2) + "\n")
    else:
        _print(plan, change)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="kafka")
