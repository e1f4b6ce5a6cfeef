"""The gateway's share of the data plane: one policy cache, fingerprint guard, ledger and reader pool
per app.

Created on first use (no I/O at import or app creation) and shared by the publish, read and stream
endpoints of one gateway process; ``close_plane`` releases it when the gateway stops.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, cast

from fastapi import FastAPI, Request

from bus.context import BusContext
from bus.exchange.emit import Emitter
from bus.exchange.fingerprints import FingerprintGuard
from bus.exchange.ledger import BackgroundLedger
from bus.exchange.policy_cache import PolicyCache
from bus.gateway.auth import ctx_of
from bus.policy.routes import RouteTable

log = logging.getLogger(__name__)

_lock = threading.Lock()

MAX_IDLE_READERS = 16  # each one is a librdkafka consumer: a connection and a few threads
READER_IDLE_SECONDS = 10.0  # an idle reader is closed after this long


class PooledReader(Protocol):
    """What the pool needs of a grant reader (``routes_subscribe.GrantReader``)."""

    grant: Any  # bus.grants.service.Readable

    def cursor(self) -> str: ...

    def close(self) -> None: ...


R = TypeVar("R", bound=PooledReader)


class ReaderPool:
    """Idle grant readers, each kept under (grant, the cursor it stands at), for the next page request.

    ``GET /v1/grants/{id}/records?after=<cursor>`` continuing where the last answer ended takes the
    reader that produced that answer: its consumer is connected, assigned and has prefetched the next
    records, so the request costs no connection or metadata round trip. A reader is *taken out* of
    the pool while a request uses it (never shared by two threads), goes back under its new cursor,
    and is closed when idle for ``idle_seconds``, when the pool holds more than ``max_idle``, when the
    grant it was made for changed, or when the pool closes. Whether the caller may read the grant is
    checked on every request before a reader is taken (revocation is never served from the pool).
    """

    def __init__(self, max_idle: int = MAX_IDLE_READERS, idle_seconds: float = READER_IDLE_SECONDS) -> None:
        self.max_idle = max_idle
        self.idle_seconds = idle_seconds
        self._lock = threading.Lock()
        self._idle: dict[tuple[str, str], tuple[PooledReader, float]] = {}  # oldest release first
        self._closed = False
        self._stop = threading.Event()
        self._janitor: threading.Thread | None = None
        self.created = 0  # readers made because none was idle at the cursor (tests, metrics)
        self.reused = 0

    def take(self, grant: Any, cursor: str, make: Callable[[], R]) -> R:
        """The idle reader of ``grant`` standing at ``cursor`` (canonical ``encode_cursor``), else a
        new one from ``make``. The caller owns it until ``give_back`` or ``discard``."""
        with self._lock:
            found = self._idle.pop((grant.grant_id, cursor), None)
        if found is not None:
            reader = found[0]
            if reader.grant == grant:  # same grant version and view schema
                self.reused += 1
                return cast(R, reader)  # the pool holds what ``make`` makes
            _close(reader)
        self.created += 1
        return make()

    def give_back(self, reader: PooledReader) -> None:
        """Keep ``reader`` for the request that continues from its cursor (after a complete read)."""
        evicted: list[PooledReader] = []
        with self._lock:
            if self._closed:
                evicted.append(reader)
            else:
                key = (reader.grant.grant_id, reader.cursor())
                older = self._idle.pop(key, None)
                if older is not None:
                    evicted.append(older[0])
                self._idle[key] = (reader, time.monotonic())
                while len(self._idle) > self.max_idle:
                    evicted.append(self._idle.pop(next(iter(self._idle)))[0])
                if self._janitor is None:
                    self._janitor = threading.Thread(target=self._sweep, name="http-readers", daemon=True)
                    self._janitor.start()
        for r in evicted:
            _close(r)

    def discard(self, reader: PooledReader) -> None:
        """A reader whose state is unknown (its read failed): closed, never pooled."""
        _close(reader)

    def drop_grant(self, grant_id: str) -> None:
        """Close the idle readers of a grant the caller may no longer read (revoked, suspended...)."""
        with self._lock:
            gone = [k for k in self._idle if k[0] == grant_id]
            readers = [self._idle.pop(k)[0] for k in gone]
        for r in readers:
            _close(r)

    def idle_count(self, grant_id: str | None = None) -> int:
        with self._lock:
            return sum(1 for k in self._idle if grant_id is None or k[0] == grant_id)

    def close(self) -> None:
        """Close every idle reader; readers in use are closed when given back."""
        with self._lock:
            self._closed = True
            readers = [r for r, _ in self._idle.values()]
            self._idle.clear()
            janitor = self._janitor
        self._stop.set()
        for r in readers:
            _close(r)
        if janitor is not None and janitor is not threading.current_thread():
            janitor.join(timeout=5)

    def _sweep(self) -> None:
        interval = max(0.05, min(1.0, self.idle_seconds / 2))
        while not self._stop.wait(interval):
            cutoff = time.monotonic() - self.idle_seconds
            with self._lock:
                stale = [k for k, (_, since) in self._idle.items() if since <= cutoff]
                readers = [self._idle.pop(k)[0] for k in stale]
            for r in readers:
                _close(r)


def _close(reader: PooledReader) -> None:
    try:
        reader.close()
    except Exception:
        log.exception("could not close an HTTP grant reader")


@dataclass
class Plane:
    ctx: BusContext
    cache: PolicyCache
    guard: FingerprintGuard
    ledger: BackgroundLedger
    emitter: Emitter  # seals and produces HTTP-published records (the pipeline's output stage); holds grant keys
    routes: RouteTable
    readers: ReaderPool = field(default_factory=ReaderPool)

    def close(self) -> None:
        """Close the pooled readers, write the pending HTTP lineage, stop the policy cache."""
        self.readers.close()
        with contextlib.suppress(Exception):
            self.ledger.stop()
        with contextlib.suppress(Exception):
            self.cache.stop()


def plane_of(request: Request) -> Plane:
    state = request.app.state
    plane: Plane | None = getattr(state, "data_plane", None)
    if plane is None:
        with _lock:
            plane = getattr(state, "data_plane", None)
            if plane is None:
                ctx = ctx_of(request)
                plane = Plane(ctx, PolicyCache(ctx).start(), FingerprintGuard(ctx), BackgroundLedger(ctx),
                              Emitter(ctx), RouteTable(ctx.master_secret))
                state.data_plane = plane
    return plane


def close_plane(app: FastAPI) -> None:
    """Release the app's data plane, if a request made one (the gateway is stopping)."""
    with _lock:
        plane: Plane | None = getattr(app.state, "data_plane", None)
        app.state.data_plane = None
    if plane is not None:
        plane.close()
