"""A running bus in one process: embedded parts (unless configured), the store, the gateway and the workers.

`databus up`, `databus demo`, the tests and the benchmarks all start the bus through ``Stack``.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import socket
import threading
from pathlib import Path
from typing import Any, Protocol

from bus.context import BusContext
from bus.embedded import EmbeddedError, EmbeddedKafka, EmbeddedRedis, free_port, wait_until
from bus.settings import Settings

log = logging.getLogger(__name__)


class Worker(Protocol):
    """A long-lived data-plane worker (validator, router, connector runtime)."""

    name: str

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def healthy(self) -> bool: ...


# Worker factories ``module:function(ctx) -> Worker``; each concept lives in its own module.
WORKERS = [
    "bus.exchange.pipeline:make_worker",
    "bus.exchange.receipts:make_worker",
    "bus.connectors_runtime:make_worker",
    "bus.lineage.retention:make_worker",
    "bus.exchange.broker_identity:make_worker",  # reports a broker that lost its topics (issue 13)
    "bus.operations.executor:make_worker",  # R11: authorised operation
]


def load_worker(spec: str, ctx: BusContext) -> Worker:
    module_name, _, func = spec.partition(":")
    module = importlib.import_module(module_name)
    worker: Worker = getattr(module, func)(ctx)
    return worker


def _check_port_free(host: str, port: int) -> None:
    """Fail at once naming the port, instead of waiting 15 s and blaming the gateway (issue 13)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise EmbeddedError(
                f"port {port} on {host} is in use ({exc.strerror}): stop what listens there or pick "
                "another with --port"
            ) from None


class Stack:
    def __init__(self, settings: Settings, *, port: int | None = None, host: str = "127.0.0.1",
                 gateway: bool = True, workers: bool | list[str] = True) -> None:
        self.settings = settings
        self.host = host
        self.port = port if port is not None else free_port()
        self.with_gateway = gateway
        self.worker_specs = WORKERS if workers is True else (workers or [])
        self.kafka: EmbeddedKafka | None = None
        self.redis: EmbeddedRedis | None = None
        self.ctx: BusContext | None = None
        self.tracing: Any = None  # bus.lineage.tracing.Tracing, started with the context
        self.workers: list[Worker] = []
        self._server: Any = None
        self._app: Any = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> Stack:
        if self.with_gateway:
            _check_port_free(self.host, self.port)  # at once, before the broker and Redis start
        data_dir = Path(self.settings.data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        try:
            bootstrap = self.settings.kafka_bootstrap
            if bootstrap is None:
                self.kafka = EmbeddedKafka(data_dir)
                self.kafka.start()
                bootstrap = self.kafka.bootstrap
            redis_url = self.settings.redis_url
            if redis_url is None:
                self.redis = EmbeddedRedis(data_dir)
                self.redis.start()
                redis_url = self.redis.url
            self.ctx = BusContext.create(self.settings, bootstrap=bootstrap, redis_url=redis_url).start()
            from bus.lineage.tracing import Tracing

            self.tracing = Tracing(self.settings, self.ctx.store).start()  # before any span is made
            for spec in self.worker_specs:
                worker = load_worker(spec, self.ctx)
                worker.start()
                self.workers.append(worker)
            if self.with_gateway:
                self._start_gateway()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_gateway(self) -> None:
        import uvicorn

        from bus.gateway.app import create_app

        assert self.ctx is not None
        self._app = create_app(self.ctx)
        config = uvicorn.Config(self._app, host=self.host, port=self.port, log_level="warning",
                                lifespan="off", access_log=False)
        self._server = uvicorn.Server(config)
        self._server.install_signal_handlers = lambda: None  # the CLI owns signals
        self._thread = threading.Thread(target=self._server.run, name="gateway", daemon=True)
        self._thread.start()
        wait_until(lambda: bool(self._server.started), timeout=15, what=f"gateway on {self.url}")

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            if self._thread is not None:
                self._thread.join(timeout=10)
            self._server = None
            from bus.gateway.plane import close_plane

            with contextlib.suppress(Exception):
                close_plane(self._app)  # pooled HTTP readers, pending HTTP lineage
        for worker in reversed(self.workers):
            with contextlib.suppress(Exception):
                worker.stop()
        self.workers.clear()
        if self.ctx is not None:
            if self.kafka is not None:  # the embedded broker goes with us, on purpose: not a loss
                from bus.exchange.broker_identity import forget

                forget(self.ctx)
            if self.tracing is not None:
                self.tracing.stop()  # flushes the last spans while the store is still open
                self.tracing = None
            self.ctx.close()
        if self.redis is not None:
            self.redis.stop()
            self.redis = None
        if self.kafka is not None:
            self.kafka.stop()
            self.kafka = None

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

