"""The supervisor: runs every connector whose desired state is running; the scale-out worker entry."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import uuid

from sqlalchemy import select

from bus.connectors_runtime.leases import Leases
from bus.connectors_runtime.task import ConnectorTask
from bus.context import BusContext
from bus.store.models import Connector

log = logging.getLogger(__name__)


class ConnectorRuntime:
    """Worker ``connectors``: keeps the running set of connectors equal to what the store asks for."""

    name = "connectors"

    def __init__(
        self,
        ctx: BusContext,
        *,
        reconcile_interval: float = 0.5,
        lease_seconds: float = 10.0,
        owner: str | None = None,
    ) -> None:
        self.ctx = ctx
        self.interval = reconcile_interval
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.leases = Leases(ctx, self.owner, lease_seconds)
        self.tasks: dict[str, ConnectorTask] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_ok = time.monotonic()

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._supervise, name="connector-runtime", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        for task in self.tasks.values():
            task._stop.set()
        for name, task in list(self.tasks.items()):
            task.stop()
            self.leases.release(name)
        self.tasks.clear()

    def healthy(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and time.monotonic() - self._last_ok < 30

    def _supervise(self) -> None:
        while not self._stop.is_set():
            try:
                self.reconcile()
                self._last_ok = time.monotonic()
            except Exception:
                log.exception("connector runtime: reconcile failed; retrying")
            self._stop.wait(self.interval)

    def reconcile(self) -> None:
        with self.ctx.store.session() as s:
            wanted = {
                name
                for name, state in s.execute(select(Connector.name, Connector.desired_state))
                if state == "running"
            }
        for name, task in list(self.tasks.items()):
            if name not in wanted or task.finished or not self.leases.renew(name):
                task.stop()
                del self.tasks[name]
                self.leases.release(name)
        for name in sorted(wanted - set(self.tasks)):
            if self._stop.is_set():
                return
            if self.leases.acquire(name):
                task = ConnectorTask(self.ctx, name, self.owner)
                self.tasks[name] = task
                task.start()


def make_worker(ctx: BusContext) -> ConnectorRuntime:
    return ConnectorRuntime(ctx)


def main() -> None:  # pragma: no cover - exercised through a subprocess in the tests
    """``python -m bus.connectors_runtime``: a scale-out connector worker attached to a running bus."""
    from bus.settings import load_settings

    logging.basicConfig(level=os.environ.get("BUS_LOG_LEVEL", "WARNING"))
    settings = load_settings()
    if not settings.kafka_bootstrap or not settings.redis_url:
        raise SystemExit(
            "a scale-out connector worker needs BUS_KAFKA_BOOTSTRAP, BUS_REDIS_URL and "
            "BUS_DATABASE_URL of the running bus"
        )
    ctx = BusContext.create(
        settings, bootstrap=settings.kafka_bootstrap, redis_url=settings.redis_url
    ).start()
    from bus.lineage.tracing import Tracing

    tracing = Tracing(settings, ctx.store).start()
    runtime = ConnectorRuntime(ctx, lease_seconds=float(os.environ.get("BUS_CONNECTOR_LEASE_SECONDS", "10")))
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    runtime.start()
    print(f"connector worker {runtime.owner} running", flush=True)
    try:
        while not done.wait(0.5):
            pass
    finally:
        runtime.stop()
        tracing.stop()
        ctx.close()
