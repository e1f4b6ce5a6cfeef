"""Lineage of derived products (R11): what each released result row aggregates, and where it came from.

The dataset graph (``bus.lineage.queries.dataset_graph``) already shows derived datasets through their
``derived-from:<source>`` tag, and the OpenLineage export turns that into derive edges; this module
answers the row-level question: which operation, rule version, window, k, epsilon, how many records.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bus.context import BusContext
from bus.errors import AuthForbidden, OperationNotFound
from bus.grants.service import Caller
from bus.store.models import Dataset, Operation, OperationResult
from bus.vocab import Role


def _ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def result_json(r: OperationResult) -> dict[str, Any]:
    return {
        "record_id": r.record_id,
        "operation": r.operation_id,
        "source_dataset": r.dataset_id,
        "derived_dataset": r.derived_dataset_id,
        "rule_version": r.rule_version,
        "window": {"start": _ms(r.window_start_ms), "end": _ms(r.window_end_ms)},
        "k": r.k,
        "epsilon": r.epsilon,
        "source_records": r.source_records,
        "released_at": r.released_at.astimezone(UTC).isoformat(),
    }


def result_lineage(s: Session, record_id: str) -> dict[str, Any] | None:
    """The lineage of one result row, or None when ``record_id`` is not a result row."""
    row = s.get(OperationResult, record_id)
    return result_json(row) if row is not None else None


def results_of(
    ctx: BusContext,
    caller: Caller,
    operation_id: str,
    *,
    record_id: str | None = None,
    limit: int = 200,
    offset: int = 0,
) -> dict[str, Any]:
    """The released rows of an operation (its operator, the source owner, auditors, the admin)."""
    with ctx.store.session() as s:
        op = s.get(Operation, operation_id)
        if op is None:
            raise OperationNotFound(f"no operation '{operation_id}'")
        ds = s.get(Dataset, op.dataset_id)
        if caller.id not in (op.operator_id, ds.owner_id if ds else None) and not caller.has(Role.AUDITOR):
            raise AuthForbidden(
                f"the results of {operation_id} are visible to its operator, the source owner and auditors"
            )
        q = select(OperationResult).where(OperationResult.operation_id == operation_id)
        if record_id:
            q = q.where(OperationResult.record_id == record_id)
        rows = s.scalars(
            q.order_by(OperationResult.window_start_ms, OperationResult.record_id).limit(limit).offset(offset)
        )
        return {
            "operation": operation_id,
            "results": [result_json(r) for r in rows],
            "limit": limit,
            "offset": offset,
        }
