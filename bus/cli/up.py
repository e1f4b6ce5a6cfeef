"""``databus up``: the whole bus in one process, embedded parts unless configured otherwise."""

from __future__ import annotations

import os
import shlex
import signal
import threading
from pathlib import Path

import typer
from rich.console import Console

from bus.errors import BusError
from bus.keys import admin_key_file
from bus.settings import load_settings
from bus.stack import Stack

console = Console(soft_wrap=True)  # paths and URLs stay on one line, whatever the terminal


def env_file_of(data_dir: Path) -> Path:
    return Path(data_dir) / "bus.env"


def write_env_file(stack: Stack) -> Path:
    """``<data-dir>/bus.env``: what a standalone ``databus worker`` needs to join this bus (the embedded
    parts listen on free ports, so their addresses change at every start). Mode 0600: a database URL
    may carry a password. Removed when the bus stops."""
    assert stack.ctx is not None
    settings = stack.settings
    values = {
        "BUS_KAFKA_BOOTSTRAP": stack.ctx.bootstrap,
        "BUS_REDIS_URL": stack.ctx.redis_url,
        "BUS_DATA_DIR": str(Path(settings.data_dir).resolve()),
        "BUS_KAFKA_PROFILE": "embedded" if settings.fast_profile else "cluster",
        "BUS_TOPIC_PREFIX": settings.topic_prefix,
        "BUS_DATABASE_URL": settings.resolved_database_url,
    }
    path = env_file_of(settings.data_dir)
    lines = [f"# written by `databus up` (pid {os.getpid()}); removed when it stops"]
    lines += [f"{k}={shlex.quote(v)}" for k, v in values.items()]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


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
    try:
        with console.status("starting the bus..."):
            stack.start()
    except BusError as err:  # a busy port, a part that cannot start: one line naming it, no traceback
        Console(stderr=True).print(f"{err.code}: {err.detail}", markup=False, highlight=False)
        raise typer.Exit(1) from None
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
        env_file = write_env_file(stack)
        console.print(f"  worker settings in {env_file} (for `databus worker ...`: "
                      f"set -a; . {env_file}; set +a)", markup=False)
        console.print("Ctrl-C to stop.")
        while not stop.wait(0.5):
            pass
    finally:
        env_file_of(settings.data_dir).unlink(missing_ok=True)
        with console.status("stopping..."):
            stack.stop()
        console.print("stopped; no broker or Redis process left behind.")


def register(app: typer.Typer) -> None:
    app.command("up")(up)
