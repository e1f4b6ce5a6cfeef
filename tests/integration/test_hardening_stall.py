"""R14 (issue 13, item 1): a worker that cannot finish a batch for ``BUS_STALL_SECONDS`` says so.

The store is made to refuse writes while it still answers reads (another connection holds the write
lock: what a long migration, a stuck transaction or a full disk looks like to the pipeline): the
pipeline takes a batch, delivers it, and cannot store its evidence. ``/healthz`` must turn 503 naming
the pipeline, the ingress topic, partition and offset; a ``worker_stalled`` incident is opened; once
the lock is released the batch completes by itself, health is green again and nothing is lost.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy import select

from bus.exchange import stalls
from bus.store.models import Base, Incident
from tests.helpers import licence_record, poll_until
from tests.integration.dataplane_helpers import api, grant_body, publisher, receive, subscriber


@contextlib.contextmanager
def _writes_refused(ctx: Any) -> Iterator[None]:
    """Hold the store's write lock from another connection; reads still answer."""
    url = ctx.store.engine.url
    if url.get_backend_name() == "sqlite":
        conn = sqlite3.connect(str(url.database), isolation_level=None, timeout=10)
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()
        return
    with ctx.store.engine.connect() as conn:
        tx = conn.begin()
        names = ", ".join(t.name for t in Base.metadata.sorted_tables)
        conn.execute(sa.text(f"LOCK TABLE {names} IN EXCLUSIVE MODE"))  # SELECT still allowed
        try:
            yield
        finally:
            tx.rollback()


def _health(stack: Any) -> tuple[int, dict]:
    resp = httpx.get(f"{stack.url}/healthz", timeout=5)
    return resp.status_code, resp.json()


def test_r14_a_stalled_pipeline_turns_healthz_503_naming_where_it_is_stuck_and_recovers(
    ctx, bus_stack, agency_factory, dataset_factory, monkeypatch
) -> None:
    for w in bus_stack.workers:
        if getattr(w, "ctx", None) is not None:
            monkeypatch.setattr(w.ctx.settings, "stall_seconds", 1.0)
    market, market_key = agency_factory("market")
    psb, psb_key = agency_factory("psb")
    ds = dataset_factory(market)
    with api(bus_stack, psb_key) as a:
        g = a.post("/v1/grants", json=grant_body(ds)).json()
    assert g["status"] == "active"
    with publisher(ctx, market, market_key, ds) as pub, subscriber(ctx, psb, psb_key, g["id"]) as sub:
        first = pub.publish(licence_record(0), key="k")
        pub.flush()
        assert [d.record_id for d in receive(sub, 1)] == [first]
        assert _health(bus_stack)[0] == 200

        with _writes_refused(ctx):
            stuck = [pub.publish(licence_record(i), key="k") for i in range(1, 6)]
            pub.flush()

            def stalled() -> dict | None:
                code, body = _health(bus_stack)
                return body["parts"]["workers"] if code == 503 and "workers" in body["failing"] else None

            part = poll_until(stalled, timeout=30, what="/healthz 503 naming the stalled pipeline")
            where = part["stalled"][0]
            assert where["worker"] == "pipeline" and where["topic"] == ctx.topics.ingress(ds)
            assert where["offset"] == 1 and where["partition"] >= 0  # the batch after the first record
            assert "pipeline" in part["error"] and ctx.topics.ingress(ds) in part["error"]
            assert _health(bus_stack)[1]["parts"]["store"]["ok"]  # the store answers: only writes hang
            # what a gateway in another process reads: the worker's own report in Redis
            reported = poll_until(lambda: stalls.remote(ctx, ctx.redis), timeout=10, what="stall in Redis")
            assert reported[0].worker == "pipeline" and reported[0].topic == ctx.topics.ingress(ds)

        poll_until(lambda: _health(bus_stack)[0] == 200, timeout=30, what="healthz green after the lock")
        got = receive(sub, len(stuck), timeout=30)
    assert {d.record_id for d in got} == set(stuck)

    def incident() -> bool:
        with ctx.store.session() as s:
            rows = s.scalars(select(Incident).where(Incident.kind == "worker_stalled")).all()
        return any("pipeline" in (r.evidence or {}).get("last_detail", "") for r in rows)

    poll_until(incident, timeout=30, what="a worker_stalled incident naming the pipeline")
    poll_until(lambda: not stalls.remote(ctx, ctx.redis), timeout=10, what="the stall record cleared")
