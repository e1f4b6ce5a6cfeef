"""Stalled workers, visible to ``/healthz`` wherever they run (R14: fail closed, never silently).

A worker that holds the same batch for ``BUS_STALL_SECONDS`` (an outage it waits out, a write that
hangs, a bug it retries) reports itself, from a small watch thread of its own so that a worker blocked
inside a call is reported too: a log line, an incident (``worker_stalled``), and a record of *where*
it is stuck (worker, topic, partition, offset, last error). The record lives in this process (a
registry the gateway of ``databus up`` reads without any I/O) and in Redis under a key with a short
TTL (so a gateway sees the standalone ``databus worker`` processes too, and a killed worker's record
expires by itself). Progress clears both.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import weakref
from dataclasses import asdict, dataclass
from typing import Protocol

import redis

from bus.context import BusContext
from bus.vocab import IncidentKind

log = logging.getLogger(__name__)

WATCH_SECONDS = 1.0
TTL_SECONDS = 10  # a record not refreshed this long (the worker died, or recovered unseen) expires
PROCESS = f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class Stall:
    """Where a worker is stuck, and since how long."""

    worker: str
    process: str
    topic: str
    partition: int
    offset: int
    seconds: float
    error: str | None

    def reason(self) -> str:
        where = f"{self.topic}[{self.partition}]@{self.offset}"
        return (
            f"{self.worker} ({self.process}) has made no progress for {self.seconds:.0f}s at {where}: "
            f"{self.error or 'no error reported (a call has not returned)'}"
        )


class Stallable(Protocol):
    name: str

    def stall(self) -> Stall | None: ...


_registry: weakref.WeakSet[Stallable] = weakref.WeakSet()
_registry_lock = threading.Lock()


def register(worker: Stallable) -> None:
    with _registry_lock:
        _registry.add(worker)


def unregister(worker: Stallable) -> None:
    with _registry_lock:
        _registry.discard(worker)


def local() -> list[Stall]:
    """The stalls of this process's workers (no I/O: answers whatever is down)."""
    with _registry_lock:
        workers = list(_registry)
    return [s for s in (w.stall() for w in workers) if s is not None]


def _key(ctx: BusContext, worker: str, process: str = PROCESS) -> str:
    return ctx.rkey(f"stall:{worker}:{process}")


def remote(ctx: BusContext, r: redis.Redis) -> list[Stall]:
    """The stalls every process of this bus reported to Redis (theirs and ours)."""
    out: list[Stall] = []
    keys = list(r.scan_iter(match=ctx.rkey("stall:*"), count=100))
    for raw in r.mget(keys) if keys else []:
        if raw:
            try:
                out.append(Stall(**json.loads(raw)))
            except (TypeError, ValueError):
                log.debug("unreadable stall record ignored")
    return out


def all_stalls(ctx: BusContext, r: redis.Redis) -> list[Stall]:
    """Every stall of this bus, this process's first; one entry per worker and process."""
    seen: dict[tuple[str, str], Stall] = {(s.worker, s.process): s for s in local()}
    for s in remote(ctx, r):
        seen.setdefault((s.worker, s.process), s)
    return list(seen.values())


class StallWatch:
    """The watch thread of one worker: publishes its stall while it lasts, clears it on progress."""

    def __init__(self, ctx: BusContext, worker: Stallable) -> None:
        self.ctx = ctx
        self.worker = worker
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._reported = False
        self._incident_open = False
        self._last: Stall | None = None

    def start(self) -> None:
        register(self.worker)
        self._thread = threading.Thread(target=self._run, name=f"{self.worker.name}-stall", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=3)
            self._thread = None
        unregister(self.worker)

    def _run(self) -> None:
        while not self._stop.wait(WATCH_SECONDS):
            stall = self.worker.stall()
            if stall is not None:
                self._report(stall)
            elif self._reported:
                self._recovered()

    def _report(self, stall: Stall) -> None:
        self._last = stall
        if not self._reported:
            self._reported = True
            log.error("stalled: %s", stall.reason())
        try:
            self.ctx.redis.set(_key(self.ctx, stall.worker), json.dumps(asdict(stall)), ex=TTL_SECONDS)
        except Exception:  # Redis is what is down: /healthz names it, and our own process still knows
            log.debug("stall not published to Redis", exc_info=True)
        if not self._incident_open:
            self._incident_open = _open_incident(self.ctx, stall)

    def _recovered(self) -> None:
        if not self._incident_open and self._last is not None:
            # the store was what held the worker and took no incident meanwhile: it takes one now
            _open_incident(self.ctx, self._last)
        self._reported = False
        self._incident_open = False
        self._last = None
        log.info("%s is making progress again", self.worker.name)
        try:
            self.ctx.redis.delete(_key(self.ctx, self.worker.name))
        except Exception:  # it expires by itself
            log.debug("stall record not cleared", exc_info=True)


def _open_incident(ctx: BusContext, stall: Stall) -> bool:
    """Open (or join) a ``worker_stalled`` incident; False when the store cannot take it yet."""
    from bus.lineage.incidents import record_violations

    try:
        record_violations(
            ctx,
            [
                {
                    "kind": IncidentKind.WORKER_STALLED,
                    "code": None,
                    "agency_id": None,
                    "dataset_id": None,
                    "grant_id": None,
                    "record_ids": [],
                    "trace_ids": [],
                    "detail": stall.reason()[:500],
                }
            ],
        )
        return True
    except Exception:  # the store may be the reason: try again on the next tick
        log.debug("stall incident not recorded yet", exc_info=True)
        return False
