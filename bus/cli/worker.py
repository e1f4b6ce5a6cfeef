"""``databus worker pipeline|connectors``: one data-plane worker in its own process, until SIGTERM.

``validator`` and ``router`` are kept as names of the one pipeline (ingress -> deliver + data), so
scripts and compose files written before it still start a working data plane.

Reads the same settings as ``databus up`` (``BUS_KAFKA_BOOTSTRAP``, ``BUS_REDIS_URL``,
``BUS_DATABASE_URL``, ``BUS_TOPIC_PREFIX``, ``BUS_DATA_DIR`` or ``BUS_SIGNING_KEY``). Against a real
cluster, start several with ``--group`` so they share the partitions as one Kafka consumer group.
"""

from __future__ import annotations

import logging
import signal
import threading
from enum import StrEnum
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from bus.settings import load_settings

if TYPE_CHECKING:  # the workers' modules load Kafka and the store: imported only for the kind asked
    from bus.exchange.batch_worker import BatchWorker

console = Console(stderr=True)


class Kind(StrEnum):
    pipeline = "pipeline"
    validator = "validator"
    router = "router"
    connectors = "connectors"
    operator = "operator"


def worker(
    kind: Kind = typer.Argument(
        ...,
        help="which worker: pipeline (ingress -> deliver.<grant> + data.<dataset> + rejected.<dataset>; "
        "'validator' and 'router' are older names of it) or connectors "
        "(the connector runtime; several share the registered connectors through Redis leases) or operator "
        "(the R11 executor of active operations; several share them through Redis leases)",
    ),
    group: str = typer.Option(
        None,
        "--group",
        help="join this Kafka consumer group (scale-out on a real "
        "cluster) instead of assigning every partition to this process",
    ),
) -> None:
    """Run one data-plane worker (the pipeline, or the connector runtime) until SIGTERM or Ctrl-C."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = load_settings()
    if not settings.kafka_bootstrap or not settings.redis_url:
        console.print(
            "[red]a standalone worker joins a running bus:[/] set BUS_KAFKA_BOOTSTRAP and BUS_REDIS_URL "
            "(and BUS_DATABASE_URL, BUS_DATA_DIR or BUS_SIGNING_KEY) to those of the bus"
        )
        raise typer.Exit(2)
    if kind == Kind.connectors:
        from bus.connectors_runtime import main as run_connectors

        run_connectors()
        return
    from bus.context import BusContext

    ctx = BusContext.create(
        settings, bootstrap=settings.kafka_bootstrap, redis_url=settings.redis_url
    ).start()
    if kind == Kind.operator:
        from bus.operations.executor import run_standalone

        run_standalone(ctx)
        return
    w: BatchWorker
    from bus.exchange.pipeline import make_worker as make_pipeline

    if kind != Kind.pipeline:
        console.print(f"'{kind.value}' is an older name of the one pipeline: starting the pipeline")
    w = make_pipeline(ctx, group=group)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    w.start()
    mode = "subscribe" if w.group_mode else "assign"
    console.print(f"{kind.value} started (group {w.group_id}, {mode} mode)")
    try:
        while not stop.wait(0.5):
            if not w.alive():
                console.print(f"[red]{kind.value} stopped on an error[/] (see the log above)")
                raise typer.Exit(1)
    finally:
        w.stop()
        ctx.close()
        console.print(f"{kind.value} stopped")


def register(app: typer.Typer) -> None:
    app.command("worker")(worker)
