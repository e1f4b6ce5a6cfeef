"""Releasing closed windows (R11): checkpoint + release in one transaction, then publish, then mark.

``commit`` stores the executor's state and offsets together with the release rows of the windows that
just closed (debiting the privacy budget first when noise is on: a window the budget cannot pay for is
stored as ``refused`` and publishes nothing), all under the operation's row lock and only while the
operation is active. ``publish_pending`` publishes stored releases in window order and writes each
result row's lineage with the ``published`` mark. A crash between the two repeats at most the
publication of one release, never its computation.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from bus.context import BusContext
from bus.lineage import audit
from bus.operations import budget
from bus.operations.derived import result_row
from bus.operations.noise import noisy_row
from bus.operations.sink import publish_results
from bus.operations.windows import ClosedWindow, ResultRow
from bus.store.models import Operation, OperationCheckpoint, OperationRelease, OperationResult
from bus.vocab import OperationStatus

if TYPE_CHECKING:
    from bus.operations.executor import Runner

log = logging.getLogger(__name__)


def _iso_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def _release(s: Any, runner: Runner, w: ClosedWindow) -> OperationRelease:
    spec, status = runner.spec, "pending"
    rows: list[ResultRow] = list(w.rows)
    if not rows:
        status = "empty"
    elif spec.epsilon is not None:
        limit = runner.rule.epsilon_per_day or 0.0
        if budget.debit(s, runner.operator_id, runner.dataset_id, spec.epsilon, limit):
            rows = [noisy_row(r, spec, runner.rule, spec.epsilon) for r in rows]
        else:
            status, rows = "refused", []
    rel = OperationRelease(
        operation_id=runner.op_id,
        window_start_ms=w.start_ms,
        window_end_ms=w.end_ms,
        rows=[asdict(r) for r in rows],
        suppressed=w.suppressed,
        source_records=w.records,
        epsilon=spec.epsilon,
        status=status,
    )
    s.add(rel)
    audit.append(
        s,
        "bus",
        "operation.budget_exhausted" if status == "refused" else "operation.window",
        "operation",
        runner.op_id,
        {
            "window": [_iso_ms(w.start_ms), _iso_ms(w.end_ms)],
            "rows": len(rows),
            "status": status,
            "suppressed": w.suppressed,
            "records": w.records,
            "epsilon": spec.epsilon,
            "k": spec.k,
            "rule_version": runner.rule_version,
        },
    )
    return rel


def commit(ctx: BusContext, runner: Runner, closed: list[ClosedWindow]) -> bool:
    """Checkpoint ``runner`` and store the releases of ``closed``; False (nothing stored) when the
    operation is no longer active."""
    with ctx.store.session() as s:
        op = s.scalar(select(Operation).where(Operation.id == runner.op_id).with_for_update())
        if op is None or op.status != OperationStatus.ACTIVE:
            return False
        for w in closed:
            _release(s, runner, w)
        ckpt = s.get(OperationCheckpoint, runner.op_id)
        doc = runner.state.to_json()
        offsets = {str(p): o for p, o in sorted(runner.offsets.items())}
        if ckpt is None:
            s.add(OperationCheckpoint(operation_id=runner.op_id, state=doc, offsets=offsets))
        else:
            ckpt.state, ckpt.offsets, ckpt.updated_at = doc, offsets, datetime.now(UTC)
    return True


def publish_pending(ctx: BusContext, runner: Runner) -> bool:
    """Publish the stored releases of ``runner`` (oldest first); False when one failed (retried later)."""
    with ctx.store.session() as s:
        op = s.get(Operation, runner.op_id)
        if op is None or op.status != OperationStatus.ACTIVE:
            return True
        pending = list(
            s.scalars(
                select(OperationRelease)
                .where(OperationRelease.operation_id == runner.op_id, OperationRelease.status == "pending")
                .order_by(OperationRelease.window_start_ms)
            )
        )
    return all(_publish(ctx, runner, rel) for rel in pending)


def _publish(ctx: BusContext, runner: Runner, rel: OperationRelease) -> bool:
    rows = [result_row(r["window_start_ms"], r["window_end_ms"], r["group"], r["measures"]) for r in rel.rows]
    try:
        with ctx.store.session() as s:  # the last look before anything leaves: still active?
            op = s.get(Operation, runner.op_id)
            if op is None or op.status != OperationStatus.ACTIVE:
                return True
        ids = publish_results(ctx, runner.derived_id, runner.operator_id, rows)
    except Exception as exc:
        log.warning(
            "operation %s: release of window %s not published yet (%s: %s)",
            runner.op_id,
            _iso_ms(rel.window_start_ms),
            type(exc).__name__,
            exc,
        )
        return False
    now = datetime.now(UTC)
    with ctx.store.session() as s:
        for rid, r in zip(ids, rel.rows, strict=True):
            s.add(
                OperationResult(
                    record_id=rid,
                    operation_id=runner.op_id,
                    dataset_id=runner.dataset_id,
                    derived_dataset_id=runner.derived_id,
                    rule_version=runner.rule_version,
                    window_start_ms=rel.window_start_ms,
                    window_end_ms=rel.window_end_ms,
                    k=runner.spec.k,
                    epsilon=rel.epsilon,
                    source_records=int(r["records"]),
                    released_at=now,
                )
            )
        row = s.get(OperationRelease, rel.id)
        if row is not None:
            row.status, row.published_at = "published", now
        audit.append(
            s,
            "bus",
            "operation.released",
            "operation",
            runner.op_id,
            {
                "window": [_iso_ms(rel.window_start_ms), _iso_ms(rel.window_end_ms)],
                "rows": len(ids),
                "derived_dataset": runner.derived_id,
                "first_record": ids[0] if ids else None,
            },
        )
    return True
