"""The data plane's per-batch bookkeeping: lineage rows, audit events and violations, never per record.

Workers and the HTTP paths hand over what one batch did; this module turns it into one lineage write
(`LineageRecorder`, which appends the batch's audit events to the hash chain in the same transaction)
and one incident call. A replayed record (same
``bus-record-id`` after a crash, or a publisher resending) must not break the batch: its lineage row
already exists, so it is skipped.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from bus.context import BusContext
from bus.lineage.incidents import record_violations
from bus.lineage.recorder import LineageRecorder
from bus.store.models import RecordLineage

log = logging.getLogger(__name__)

ACTOR = "bus"
MAX_IDS_IN_AUDIT = 20


@dataclass
class PublishBatch:
    """What one pipeline batch (or one HTTP publish request) decided."""

    via: str  # bus.vocab.Via: "pipeline" or "http"
    lineage: list[dict[str, Any]] = field(default_factory=list)  # RecordLineage rows, accepted and refused
    violations: list[dict[str, Any]] = field(default_factory=list)

    def add(self, row: dict[str, Any]) -> None:
        self.lineage.append(row)


class Ledger:
    def __init__(self, ctx: BusContext) -> None:
        self.ctx = ctx
        self.recorder = LineageRecorder(ctx.store)

    def published(self, batch: PublishBatch) -> None:
        """Lineage of every record of the batch (the recorder adds the audit events and usage), and its
        violations (incidents)."""
        self._insert_published(batch.lineage)
        if batch.violations:
            record_violations(self.ctx, batch.violations)

    def delivered(self, rows: Sequence[dict[str, Any]]) -> None:
        """Delivery lineage rows (one audit event per grant and batch, written by the recorder)."""
        if rows:
            self.recorder.delivered(rows)

    def consumed(self, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            self.recorder.consumed(rows)

    def violations(self, violations: list[dict[str, Any]]) -> None:
        if violations:
            record_violations(self.ctx, violations)

    def _insert_published(self, rows: list[dict[str, Any]]) -> None:
        unique = list({r["record_id"]: r for r in rows}.values())
        if not unique:
            return
        try:
            self.recorder.published(unique)
        except IntegrityError:
            # a replay after a crash, or a resent record: keep the first lineage row of each id
            ids = [r["record_id"] for r in unique]
            with self.ctx.store.session() as s:
                known = set(
                    s.scalars(select(RecordLineage.record_id).where(RecordLineage.record_id.in_(ids)))
                )
            fresh = [r for r in unique if r["record_id"] not in known]
            if fresh:
                self.recorder.published(fresh)


class BackgroundLedger:
    """Bookkeeping of the HTTP paths, written by one thread in merged batches (every ``interval`` seconds).

    Hundreds of small publish and read requests per second would otherwise each pay a store transaction
    and an audit append; merged, they cost one. Lineage lags the response by at most ~``interval``.
    """

    def __init__(self, ctx: BusContext, interval: float = 0.05) -> None:
        self.ledger = Ledger(ctx)
        self.interval = interval
        self._lock = threading.Lock()
        self._published: list[PublishBatch] = []
        self._consumed: list[dict[str, Any]] = []
        self._delivered: list[dict[str, Any]] = []
        self._violations: list[dict[str, Any]] = []
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="http-ledger", daemon=True)
        self._thread.start()

    def published(self, batch: PublishBatch) -> None:
        with self._lock:
            self._published.append(batch)
        self._wake.set()

    def consumed(self, rows: Sequence[dict[str, Any]]) -> None:
        with self._lock:
            self._consumed.extend(rows)
        self._wake.set()

    def delivered(self, rows: Sequence[dict[str, Any]]) -> None:
        """Deliveries made by HTTP publishing (one hop: the gateway produces to ``deliver.<grant>``)."""
        with self._lock:
            self._delivered.extend(rows)
        self._wake.set()

    def violations(self, violations: list[dict[str, Any]]) -> None:
        with self._lock:
            self._violations.extend(violations)
        self._wake.set()

    def flush(self) -> None:
        with self._lock:
            published, self._published = self._published, []
            consumed, self._consumed = self._consumed, []
            delivered, self._delivered = self._delivered, []
            violations, self._violations = self._violations, []
        try:
            if published:
                merged = PublishBatch(via="http")
                for b in published:
                    merged.lineage.extend(b.lineage)
                    merged.violations.extend(b.violations)
                self.ledger.published(merged)
                published = []
            if delivered:  # after the records they deliver
                self.ledger.delivered(delivered)
                delivered = []
            if consumed:
                self.ledger.consumed(consumed)
                consumed = []
            if violations:
                self.ledger.violations(violations)
        except Exception:
            with self._lock:  # keep what was not written for the next attempt
                self._published[:0] = published
                self._consumed[:0] = consumed
                self._delivered[:0] = delivered
                self._violations[:0] = violations
            raise

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(1.0)
            self._wake.clear()
            try:
                self.flush()
            except Exception:
                log.exception("could not write HTTP lineage; retrying with the next batch")
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=5)
        self.flush()
