"""``GET /healthz``: broker, Redis and store reported separately; 200 only when all answer.

Answers within a second whatever is down (R14): each probe runs in its own thread with its own
deadline (``PROBE_SECONDS``) and short client timeouts, all at once. ``workers`` fails while a worker of
this bus, in this process or another, holds one batch for ``BUS_STALL_SECONDS`` (``bus.exchange.stalls``),
naming the worker, topic, partition and offset. A probe still stuck from an
earlier request (a SIGSTOPped Redis, a locked store) is waited on again instead of started twice, so
a hung part never piles up threads. The broker is also reported failing, with the reason, while a
broker loss (``bus.exchange.broker_identity``: its topics are gone) has an open incident.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import asdict
from typing import Any

import redis
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from bus.context import BusContext
from bus.exchange import broker_identity, stalls
from bus.gateway.auth import ctx_of

router = APIRouter(tags=["health"])

PROBE_SECONDS = 0.7  # every probe's deadline; the whole answer comes within 1 s
_lock = threading.Lock()


class Probes:
    """The health probes of one gateway: their threads, a Redis client with short timeouts, and the
    probe of each part still running (never started twice)."""

    def __init__(self, ctx: BusContext) -> None:
        self.ctx = ctx
        self.redis = redis.Redis.from_url(
            ctx.redis_url, socket_timeout=PROBE_SECONDS, socket_connect_timeout=PROBE_SECONDS
        )
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="healthz")
        self._running: dict[str, Future[Any]] = {}
        self._lock = threading.Lock()

    def submit(self, name: str, probe: Callable[[], Any]) -> Future[Any]:
        with self._lock:
            running = self._running.get(name)
            if running is None or running.done():
                running = self._running[name] = self._pool.submit(probe)
            return running

    def broker(self) -> None:
        from bus.exchange.kafka import admin

        # DescribeCluster asks a broker for the cluster, not every topic's metadata (~2 ms)
        t = PROBE_SECONDS
        cluster = admin(self.ctx.bootstrap, self.ctx.settings).describe_cluster(request_timeout=t).result(t)
        if not cluster.nodes:
            raise RuntimeError("the cluster reports no broker")

    def redis_ping(self) -> None:
        if not self.redis.ping():
            raise RuntimeError("PING failed")

    def store(self) -> None:
        self.ctx.store.ping()

    def stalled(self) -> list[stalls.Stall]:
        return stalls.all_stalls(self.ctx, self.redis)

    def loss(self) -> broker_identity.BrokerLoss | None:
        return broker_identity.check(self.ctx, self.redis, timeout=PROBE_SECONDS)


def probes_of(request: Request) -> Probes:
    state = request.app.state
    probes: Probes | None = getattr(state, "health_probes", None)
    if probes is None:
        with _lock:
            probes = getattr(state, "health_probes", None)
            if probes is None:
                probes = state.health_probes = Probes(ctx_of(request))
    return probes


def _outcome(future: Future[Any]) -> tuple[bool, Any]:
    if not future.done():
        return False, f"TimeoutError: no answer within {PROBE_SECONDS}s"
    exc = future.exception()
    if exc is not None:  # report, never raise: health must always answer
        return False, f"{type(exc).__name__}: {exc}"[:300]
    return True, future.result()


async def check_all(probes: Probes) -> dict[str, dict[str, Any]]:
    named = {"broker": probes.broker, "redis": probes.redis_ping, "store": probes.store}
    futures = {n: probes.submit(n, p) for n, p in named.items()}
    loss_future = probes.submit("loss", probes.loss)
    stalls_future = probes.submit("stalls", probes.stalled)
    # one thread waits for every probe with one deadline (no asyncio future left holding an exception)
    await asyncio.to_thread(wait, [*futures.values(), loss_future, stalls_future], PROBE_SECONDS)
    parts = {}
    for name, future in futures.items():
        ok, err = _outcome(future)
        parts[name] = {"ok": True} if ok else {"ok": False, "error": err}
    loss_ok, loss = _outcome(loss_future)
    if loss_ok and loss is not None:  # a failed loss check is not the broker's fault: its parts say
        parts["broker"] = {"ok": False, "error": loss.reason(), "lost": loss.datasets,
                           "incident": loss.incident_id}
    parts["workers"] = _workers_part(stalls_future)
    return parts


def _workers_part(future: Future[Any]) -> dict[str, Any]:
    """Stalled workers of the whole bus; this process's alone when Redis cannot say (its part fails)."""
    ok, found = _outcome(future)
    stuck: list[stalls.Stall] = found if ok else stalls.local()
    if not stuck:
        return {"ok": True}
    return {"ok": False, "error": "; ".join(s.reason() for s in stuck)[:1000],
            "stalled": [asdict(s) for s in stuck]}


@router.get("/healthz")
async def healthz(request: Request) -> JSONResponse:
    parts = await check_all(probes_of(request))
    ok = all(p["ok"] for p in parts.values())
    failing = [n for n, p in parts.items() if not p["ok"]]
    body = {"status": "ok" if ok else "degraded", "parts": parts, "failing": failing}
    return JSONResponse(body, status_code=200 if ok else 503)
