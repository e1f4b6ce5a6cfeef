"""Lineage retention: rows older than ``BUS_LINEAGE_RETENTION_DAYS`` (default 365) are deleted.

What goes: record, delivery (batch rows and their record-id index) and consumption lineage rows and
stored spans. What stays: the audit log (never deleted) and the hourly usage counters (R18; no record
ids, no personal data).

Rows go by whole attested batches: everything whose audit event (``audit_seq``) is older than the
cutoff. The sweep then appends ``lineage.retention`` with the highest seq it covered, so
``audit.verify`` knows those batches were removed by policy, not by tampering. The sweep runs as a
worker in every bus (at start, then hourly) in chunks, so it never holds a long lock.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, literal, select

from bus.context import BusContext
from bus.grants.keys import destroy_ended
from bus.lineage import audit
from bus.lineage.integrity import RETENTION_ACTION, swept_through
from bus.store import Store
from bus.store.models import (
    AuditEvent,
    ConsumptionLineage,
    DeliveryKey,
    DeliveryLineage,
    LineageSpan,
    RecordLineage,
)

log = logging.getLogger(__name__)

CHUNK = 5_000
INTERVAL = 3600.0


def _delete_chunked(store: Store, model: Any, key: Any, where: Any, chunk: int, counted: Any = None) -> int:
    """Delete in chunks; returns the rows deleted, or the sum of ``counted`` over them."""
    total = 0
    weight = counted if counted is not None else literal(1)
    while True:
        with store.session() as s:
            found: list[Any] = list(s.execute(select(key, weight).where(where).limit(chunk)))
            if not found:
                return total
            s.execute(delete(model).where(key.in_([k for k, _ in found])))
        total += sum(int(n) for _, n in found)


def sweep(store: Store, days: int, *, now: datetime | None = None, chunk: int = CHUNK) -> dict[str, Any]:
    """Delete lineage older than ``days`` days; ``{cutoff, through_seq, deleted: {table: rows}}``.

    ``days <= 0`` keeps everything.
    """
    now = now or datetime.now(UTC)
    cutoff = now - timedelta(days=days)
    deleted = {"records": 0, "deliveries": 0, "consumptions": 0, "spans": 0}
    if days <= 0:
        return {"cutoff": None, "through_seq": None, "deleted": deleted}
    with store.session() as s:
        through = s.scalar(select(func.max(AuditEvent.seq)).where(AuditEvent.at < cutoff)) or 0
    previous = swept_through(store)
    if through > previous:
        deleted["records"] = _delete_chunked(
            store, RecordLineage, RecordLineage.record_id, RecordLineage.audit_seq <= through, chunk
        )
        deleted["deliveries"] = _delete_chunked(  # deliveries, not batch rows: the count auditors know
            store,
            DeliveryLineage,
            DeliveryLineage.id,
            DeliveryLineage.audit_seq <= through,
            max(1, chunk // 100),
            DeliveryLineage.records,
        )
        with store.session() as s:  # a handful of key rows per recorder call
            s.execute(delete(DeliveryKey).where(DeliveryKey.seq_hi <= through))
        deleted["consumptions"] = _delete_chunked(
            store, ConsumptionLineage, ConsumptionLineage.id, ConsumptionLineage.audit_seq <= through, chunk
        )
    deleted["spans"] = _delete_chunked(
        store, LineageSpan, LineageSpan.id, LineageSpan.start_at < cutoff, chunk
    )
    if through > previous:
        with store.session() as s:
            audit.append(
                s,
                "bus",
                RETENTION_ACTION,
                "lineage",
                "retention",
                {"through_seq": through, "cutoff": cutoff.isoformat(), "days": days, "deleted": deleted},
            )
    return {"cutoff": cutoff.isoformat(), "through_seq": max(through, previous), "deleted": deleted}


class RetentionWorker:
    """Runs ``sweep`` at start and every hour, then destroys the keys of grants that ended longer than
    ``BUS_GRANT_KEY_RETENTION_DAYS`` ago (``bus.grants.keys.destroy_ended``)."""

    name = "lineage-retention"

    def __init__(self, ctx: BusContext, interval: float = INTERVAL) -> None:
        self.ctx = ctx
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last: dict[str, Any] | None = None
        self.keys_destroyed: dict[str, int] = {}
        self.last_error: str | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=15)
            self._thread = None

    def healthy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.last = sweep(self.ctx.store, self.ctx.settings.lineage_retention_days)
                if any(self.last["deleted"].values()):
                    log.info("lineage retention: %s", self.last)
                # R8: keys of grants that ended BUS_GRANT_KEY_RETENTION_DAYS ago are destroyed
                self.keys_destroyed = destroy_ended(self.ctx)
                if self.keys_destroyed:
                    log.info("grant keys destroyed: %s", self.keys_destroyed)
                self.last_error = None
            except Exception as exc:  # the store may be briefly unavailable: try again next round
                self.last_error = str(exc)
                log.warning("lineage retention sweep failed: %s", exc)
            self._stop.wait(max(1.0, self.interval - (time.monotonic() - started)))


def make_worker(ctx: BusContext) -> RetentionWorker:
    return RetentionWorker(ctx)
