"""What the data plane must know about agencies, datasets and grants, kept fresh without per-record I/O.

A ``PolicySnapshot`` is read from the store in one go. ``PolicyCache.fresh()`` is called once per
batch: it reads the policy version from Redis (one GET) and reloads the snapshot when the version
moved or a change was announced on the pub/sub channel (a listener thread marks the cache stale the
moment a message arrives). It also pings the store at most every half second. When Redis or the
store cannot be reached it raises ``Unavailable``: callers stop delivering and retry (fail closed).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any

from sqlalchemy import select

from bus.context import BusContext
from bus.errors import Unavailable
from bus.exchange import policy_events
from bus.exchange.keyring import signing_secret_of
from bus.policy.records import parsed_schema
from bus.policy.snapshot import AgencyState, DatasetState, GrantState, PolicySnapshot
from bus.store.models import Agency, Dataset, Grant, SchemaVersion
from bus.vocab import GrantStatus

__all__ = ["AgencyState", "DatasetState", "GrantState", "PolicyCache", "PolicySnapshot", "load_snapshot",
           "parsed_schema"]

log = logging.getLogger(__name__)

STORE_PING_INTERVAL = 0.5


def load_snapshot(ctx: BusContext, version: int) -> PolicySnapshot:
    """Everything the data plane needs, in one read transaction."""
    with ctx.store.session() as s:
        agencies = {
            a.id: AgencyState(a.id, bool(a.suspended), signing_secret_of(ctx.master_secret, a.id, a.signing_secret))
            for a in s.scalars(select(Agency))
        }
        schemas: dict[str, dict[int, dict[str, Any]]] = {}
        for sv in s.scalars(select(SchemaVersion)):
            schemas.setdefault(sv.dataset_id, {})[sv.version] = sv.schema
        datasets = {
            d.id: DatasetState(
                d.id,
                d.owner_id,
                d.status,
                d.sharing_attribute,
                bool(d.suspended),
                d.schema_version,
                schemas.get(d.id, {}),
            )
            for d in s.scalars(select(Dataset))
        }
        grants = {
            g.id: GrantState(
                g.id,
                g.dataset_id,
                g.agency_id,
                tuple(g.fields),
                tuple(g.unmasked_fields or ()),
                g.scenario_code,
                g.status,
                g.valid_until,
                g.version,
                int((g.decided_at or g.requested_at).timestamp() * 1000),
            )
            for g in s.scalars(
                select(Grant).where(Grant.status.in_([GrantStatus.ACTIVE, GrantStatus.SUSPENDED]))
            )
        }
    by_dataset: dict[str, list[GrantState]] = {}
    for g in grants.values():
        by_dataset.setdefault(g.dataset_id, []).append(g)
    return PolicySnapshot(version, agencies, datasets, grants, by_dataset)


class PolicyCache:
    """A policy snapshot refreshed per batch through Redis; raises ``Unavailable`` when it cannot check."""

    def __init__(self, ctx: BusContext, *, listen: bool = True) -> None:
        self.ctx = ctx
        self._snapshot: PolicySnapshot | None = None
        self._stale = threading.Event()
        self._stale.set()
        self._listen = listen
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pinged = 0.0
        self.changed = threading.Event()  # set on every announced change, for waiters that want to wake up

    def start(self) -> PolicyCache:
        if self._listen and self._thread is None:
            self._thread = threading.Thread(target=self._listen_loop, name="policy-listener", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=3)
            self._thread = None

    def invalidate(self) -> None:
        self._stale.set()

    def fresh(self) -> PolicySnapshot:
        """The current snapshot; one Redis GET, and a store read only when the policy changed."""
        try:
            version = policy_events.current_version(self.ctx)
        except Exception as exc:
            # announcements may be lost while Redis is down (a revocation commits to the store, its
            # INCR/PUBLISH fails): re-read the store once Redis answers again, whatever the version says
            self._stale.set()
            raise Unavailable(
                f"cannot read the policy version from Redis ({type(exc).__name__}); "
                "delivery paused until it answers"
            ) from exc
        snap = self._snapshot
        if snap is None or version != snap.version or self._stale.is_set():
            self._stale.clear()
            try:
                snap = load_snapshot(self.ctx, version)
            except Exception as exc:
                self._stale.set()
                raise Unavailable(
                    f"cannot read the policy from the store ({type(exc).__name__}); "
                    "delivery paused until it answers"
                ) from exc
            self._snapshot = snap
            self._pinged = time.monotonic()
        elif time.monotonic() - self._pinged > STORE_PING_INTERVAL:
            try:
                self.ctx.store.ping()
            except Exception as exc:
                raise Unavailable(f"cannot reach the store ({type(exc).__name__}); delivery paused") from exc
            self._pinged = time.monotonic()
        return snap

    def _listen_loop(self) -> None:
        channel = policy_events.channel(self.ctx)
        backoff = 0.1
        while not self._stop.is_set():
            pubsub = None
            try:
                pubsub = self.ctx.redis.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(channel)
                self._stale.set()  # anything may have changed while we were not listening
                backoff = 0.1
                while not self._stop.is_set():
                    msg = pubsub.get_message(timeout=0.2)
                    if msg is not None:
                        self._stale.set()
                        self.changed.set()
            except Exception:
                self._stale.set()
                log.debug("policy listener lost Redis; retrying", exc_info=True)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 2.0)
            finally:
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        pubsub.close()
