"""``databus up``: the whole bus in one process, embedded parts unless configured otherwise."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import typer
from rich.console import Console

from bus.keys import admin_key_file
from bus.settings import load_settings
from bus.stack import Stack

console = Console(soft_wrap=True)  # paths and URLs stay on one line, whatever the terminal


def up(
    port: int = typer.Option(8000, "--port", help="gateway port"),
    host: str = typer.Option("127.0.0.1", "--host", help="gateway bind address"),
    data_dir: Path = typer.Option(None, "--data-dir", help="data dir [default: BUS_DATA_DIR or .databus]"),
    workers: bool = typer.Option(True, "--workers/--no-workers",
                                 help="run the data-plane workers here; --no-workers for a gateway-only node "
                                 "when validators and routers run as `databus worker ...`"),
) -> None:
    """Start broker, Redis, store, gateway and workers; Ctrl-C or SIGTERM stops everything."""
    settings = load_settings(data_dir=data_dir)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stack = Stack(settings, port=port, host=host, workers=workers)
    with console.status("starting the bus..."):
        stack.start()
    try:
        assert stack.ctx is not None
        console.print(f"[bold green]databus is up[/]  gateway {stack.url}  (health: {stack.url}/healthz, "
                      f"API docs: {stack.url}/docs)")
        console.print(f"  console {stack.url}/console (sign in with an API key or the admin key)")
        console.print(f"  broker  {stack.ctx.bootstrap}{' (embedded)' if stack.kafka else ''}")
        console.print(f"  redis   {stack.ctx.redis_url}{' (embedded)' if stack.redis else ''}")
        console.print(f"  store   {stack.ctx.store.engine.url.render_as_string(hide_password=True)}")
        if settings.admin_key is None:
            console.print(f"  admin key in {admin_key_file(settings.data_dir).resolve()} (mode 0600)")
        else:
            console.print("  admin key from BUS_ADMIN_KEY")
        console.print(f"  workers {', '.join(w.name for w in stack.workers) or 'none'}")
        console.print("Ctrl-C to stop.")
        while not stop.wait(0.5):
            pass
    finally:
        with console.status("stopping..."):
            stack.stop()
        console.print("stopped; no broker or Redis process left behind.")


def register(app: typer.Typer) -> None:
    app.command("up")(up)
