"""``databus``: run the bus and talk to it. Every command has ``--help``; scripts use ``--json``."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="databus",
    help="Data exchange bus: catalogued datasets over Kafka, guarded by a sharing gateway.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)



@app.callback()
def _main() -> None:
    """Data exchange bus: catalogued datasets over Kafka, guarded by a sharing gateway."""


# Command groups, one module each (bus/cli/<name>.py defines ``app`` or ``register(app)``).
GROUPS = ["up", "demo", "worker", "agency", "catalog", "audit", "grant", "publish", "tail", "lineage",
          "usage", "incidents", "emergency", "attribute", "connector", "kafka", "operation"]

for _name in GROUPS:
    importlib.import_module(f"bus.cli.{_name}").register(app)
