"""The in-bus executor of active operations (R11): ``data.<dataset>`` in, k-anonymous aggregates out.

One thread runs every active operation it holds the Redis lease of (several executors share the work,
``databus worker operator``). Each operation reads the accepted log under its own consumer group from
the offsets in its checkpoint (never through a grant; records never leave this process), feeds its
window state, and checkpoints state and offsets together in one transaction, so a restart neither
loses nor counts twice. A closed window becomes a release row in the same transaction (after the
budget debit when noise is on); stored releases are then published as the derived dataset's records
(``sink.publish_results``), each row's lineage written, and marked published. The operation's status is
re-read every refresh (a quarter second) and checked in the releasing transaction, so a revoked or
suspended operation releases nothing after that.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from sqlalchemy import select

from bus.connectors_runtime.leases import Leases
from bus.context import BusContext
from bus.errors import Unavailable
from bus.exchange.kafka import new_consumer, partitions_of
from bus.exchange.policy_cache import PolicyCache, PolicySnapshot
from bus.keys import derive
from bus.operations import releases, service
from bus.operations.rules import AnalysisRule, rule_from_json
from bus.operations.sink import close_sink
from bus.operations.source import decode_accepted
from bus.operations.spec import OperationSpec, spec_from_json
from bus.operations.windows import WindowState, observe
from bus.store.models import AnalysisRuleVersion, Operation, OperationCheckpoint
from bus.vocab import OperationStatus

log = logging.getLogger(__name__)

REFRESH_SECONDS = 0.25
CHECKPOINT_SECONDS = 0.5
EXPIRY_SWEEP_SECONDS = 5.0
LEASE_SECONDS = 10.0
BATCH = 500


class OperationLeases(Leases):
    """One executor per operation: ``<prefix>bus:operation-lease:<operation>``."""

    def _key(self, name: str) -> str:
        return self.ctx.rkey("operation-lease", name)


@dataclass
class Runner:
    """One active operation being executed: its consumer, window state and positions."""

    op_id: str
    dataset_id: str
    operator_id: str
    derived_id: str
    spec: OperationSpec
    rule: AnalysisRule
    rule_version: int
    activated_ms: int
    consumer: Consumer
    state: WindowState
    offsets: dict[int, int] = field(default_factory=dict)
    last_record: float = field(default_factory=time.monotonic)
    last_checkpoint: float = 0.0
    dirty: bool = False
    retry_at: float = 0.0

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.consumer.close()


class OperatorWorker:
    name = "operator"

    def __init__(self, ctx: BusContext, *, idle_close: float | None = None) -> None:
        self.ctx = ctx
        self.idle_close = idle_close if idle_close is not None else ctx.settings.window_idle_close_seconds
        self.lateness_ms = int(ctx.settings.window_allowed_lateness_seconds * 1000)
        self.runners: dict[str, Runner] = {}
        self.leases = OperationLeases(ctx, f"operator-{uuid.uuid4().hex[:8]}", LEASE_SECONDS)
        self._subject_key = derive(ctx.master_secret, "operations", "subjects")
        self._cache = PolicyCache(ctx)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._refreshed = 0.0
        self._swept = 0.0
        self._error: str | None = None
        self._checkpoint_on_stop = True

    # --- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> None:
        self._cache.start()
        self._thread = threading.Thread(target=self._run, name="operator-executor", daemon=True)
        self._thread.start()

    def stop(self, *, checkpoint: bool = True) -> None:
        """Stop; ``checkpoint=False`` abandons the state since the last checkpoint (as a crash would)."""
        self._checkpoint_on_stop = checkpoint
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=15)
            self._thread = None
        self._cache.stop()
        close_sink(self.ctx)

    def healthy(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self._error is None

    def running(self) -> set[str]:
        return set(self.runners)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    self._tick()
                    self._error = None
                except Unavailable as exc:  # fail closed: nothing released until Redis and the store answer
                    self._error = exc.detail
                    self._stop.wait(0.5)
                except Exception as exc:
                    self._error = f"{type(exc).__name__}: {exc}"
                    log.exception("operator executor step failed; retrying")
                    self._stop.wait(0.5)
        finally:
            for op_id in list(self.runners):
                self._drop(op_id, checkpoint=self._checkpoint_on_stop)

    def _tick(self) -> None:
        now = time.monotonic()
        if now - self._swept >= EXPIRY_SWEEP_SECONDS:
            service.expire_due(self.ctx)
            self._swept = now
        if now - self._refreshed >= REFRESH_SECONDS:
            self._refresh()
            self._refreshed = now
        if not self.runners:
            self._stop.wait(REFRESH_SECONDS)
            return
        snap = self._cache.fresh()
        timeout = 0.05 / len(self.runners)
        for runner in list(self.runners.values()):
            self._step(runner, snap, timeout)

    # --- which operations run here ------------------------------------------------------------------------
    def _refresh(self) -> None:
        with self.ctx.store.session() as s:
            active = {
                o.id: o
                for o in s.scalars(select(Operation).where(Operation.status == OperationStatus.ACTIVE.value))
            }
        for op_id in list(self.runners):
            if op_id not in active:
                self._drop(op_id, checkpoint=True)  # revoked, suspended or expired: nothing more is released
            elif not self.leases.renew(op_id):
                self._drop(op_id, checkpoint=False)  # another executor holds it now
        for op_id, op in active.items():
            if op_id not in self.runners and op.derived_dataset_id and self.leases.acquire(op_id):
                try:
                    self.runners[op_id] = self._open(op)
                except Exception:
                    self.leases.release(op_id)
                    raise

    def _open(self, op: Operation) -> Runner:
        with self.ctx.store.session() as s:
            rule_row = s.get(AnalysisRuleVersion, (op.dataset_id, op.rule_version))
            ckpt = s.get(OperationCheckpoint, op.id)
            if rule_row is None:
                raise Unavailable(f"operation {op.id}: analysis rule version {op.rule_version} is missing")
            rule = rule_from_json(rule_row.rule)
            state_doc = ckpt.state if ckpt else None
            offsets = {int(p): int(o) for p, o in (ckpt.offsets if ckpt else {}).items()}
        spec = spec_from_json(op.spec)
        topic = self.ctx.topics.data(op.dataset_id)
        consumer = new_consumer(
            self.ctx.bootstrap, f"{self.ctx.topics.prefix}bus.operator.{op.id}", self.ctx.settings
        )
        parts = partitions_of(consumer, topic)
        if not parts:
            consumer.close()
            raise Unavailable(f"topic {topic} has no partitions yet")
        consumer.assign([TopicPartition(topic, p, offsets.get(p, OFFSET_BEGINNING)) for p in parts])
        activated = op.decided_at or op.requested_at
        log.info("operator executor runs %s over %s", op.id, topic)
        return Runner(
            op.id,
            op.dataset_id,
            op.operator_id,
            op.derived_dataset_id or "",
            spec,
            rule,
            op.rule_version,
            int(activated.timestamp() * 1000),
            consumer,
            WindowState.from_json(spec, self.lateness_ms, state_doc),
            offsets,
            last_checkpoint=time.monotonic(),
        )

    def _drop(self, op_id: str, *, checkpoint: bool) -> None:
        runner = self.runners.pop(op_id, None)
        if runner is None:
            return
        if checkpoint and runner.dirty:
            with contextlib.suppress(Exception):
                releases.commit(self.ctx, runner, [])
        runner.close()
        self.leases.release(op_id)

    # --- one operation, one step -------------------------------------------------------------------------
    def _token(self, subject: Any) -> str:
        import hashlib

        return hashlib.blake2b(str(subject).encode(), key=self._subject_key, digest_size=12).hexdigest()

    def _step(self, runner: Runner, snap: PolicySnapshot, timeout: float) -> None:
        msgs = runner.consumer.consume(BATCH, timeout=timeout)
        for m in msgs:
            if m.error() is not None:
                continue
            runner.offsets[m.partition() or 0] = (m.offset() or 0) + 1
            rec = decode_accepted(self.ctx, snap, m)
            if rec is None or rec.accepted_at_ms < runner.activated_ms:
                continue  # records accepted before the operation was approved are not its input
            obs = observe(runner.spec, runner.rule, rec.accepted_at_ms, rec.value, self._token)
            if obs is not None:
                runner.state.add(obs)
        now = time.monotonic()
        if msgs:
            runner.last_record, runner.dirty = now, True
        elif now - runner.last_record >= self.idle_close:
            # quiet for idle_close seconds: event time has moved on with the wall clock, less the idle time
            # (a record accepted earlier than that would have arrived by now) and the allowed lateness
            runner.state.advance(int((datetime.now(UTC).timestamp() - self.idle_close) * 1000))
        closed = runner.state.close()
        if closed or (runner.dirty and now - runner.last_checkpoint >= CHECKPOINT_SECONDS):
            try:
                still_active = releases.commit(self.ctx, runner, closed)
            except Exception:  # the closed windows are only in memory: start again from the checkpoint
                self._drop(runner.op_id, checkpoint=False)
                raise
            if not still_active:
                self._drop(runner.op_id, checkpoint=False)
                return
            runner.last_checkpoint, runner.dirty = now, False
        if paused(snap, runner):
            return  # the emergency switch holds the source, its owner or the operator: stored, not released
        if now >= runner.retry_at and not releases.publish_pending(self.ctx, runner):
            runner.retry_at = now + 1.0


def paused(snap: PolicySnapshot, runner: Runner) -> bool:
    """R15: a suspended source dataset, source owner or operator releases nothing until resumed."""
    ds = snap.datasets.get(runner.dataset_id)
    owner = snap.agencies.get(ds.owner_id) if ds else None
    operator = snap.agencies.get(runner.operator_id)
    return (
        ds is None
        or ds.suspended
        or owner is None
        or owner.suspended
        or operator is None
        or operator.suspended
    )


def make_worker(ctx: BusContext) -> OperatorWorker:
    return OperatorWorker(ctx)


def run_standalone(ctx: BusContext) -> None:
    """``databus worker operator``: one executor until SIGTERM or Ctrl-C (several share the operations)."""
    import signal

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    worker = OperatorWorker(ctx)
    worker.start()
    log.info("operator executor started")
    try:
        while not stop.wait(0.5):
            pass
    finally:
        worker.stop()
        ctx.close()
