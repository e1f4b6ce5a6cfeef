"""Store helpers shared by the operations service and the rule book (R11): lookups, JSON views, audit."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bus.context import BusContext
from bus.errors import BusError, CatalogNotFound
from bus.lineage import audit
from bus.store.models import AnalysisRuleVersion, Dataset, Operation, SchemaVersion

log = logging.getLogger(__name__)


def iso(dt: datetime | None) -> str | None:
    return dt.astimezone(UTC).isoformat() if dt is not None else None


def dataset(s: Session, dataset_id: str) -> Dataset:
    ds = s.get(Dataset, dataset_id)
    if ds is None:
        raise CatalogNotFound(f"no dataset '{dataset_id}' in the catalogue")
    return ds


def schema(s: Session, ds: Dataset) -> dict[str, Any]:
    sv = s.get(SchemaVersion, (ds.id, ds.schema_version))
    if sv is None:
        raise CatalogNotFound(f"dataset '{ds.id}' has no schema version {ds.schema_version}")
    return sv.schema


def current_rule(s: Session, dataset_id: str) -> AnalysisRuleVersion | None:
    return s.scalar(
        select(AnalysisRuleVersion)
        .where(AnalysisRuleVersion.dataset_id == dataset_id)
        .order_by(AnalysisRuleVersion.version.desc())
        .limit(1)
    )


def rule_json(row: AnalysisRuleVersion) -> dict[str, Any]:
    return {
        "dataset": row.dataset_id,
        "version": row.version,
        **row.rule,
        "created_by": row.created_by,
        "created_at": iso(row.created_at),
    }


def operation_json(op: Operation) -> dict[str, Any]:
    return {
        "id": op.id,
        "dataset": op.dataset_id,
        "operator": op.operator_id,
        "status": op.status,
        "scenario": {"code": op.scenario_code, "description": op.scenario_description},
        "legal_basis": op.legal_basis,
        **{k: v for k, v in op.spec.items() if k != "dataset"},
        "rule_version": op.rule_version,
        "sharing": op.sharing_attribute,
        "version": op.version,
        "derived_dataset": op.derived_dataset_id,
        "grant": op.grant_id,
        "valid_until": iso(op.valid_until),
        "decision_reason": op.decision_reason,
        "requested_at": iso(op.requested_at),
        "decided_at": iso(op.decided_at),
        "ended_at": iso(op.ended_at),
    }


def audit_refusal(
    ctx: BusContext, actor: str, action: str, subject: str, err: BusError, data: dict[str, Any]
) -> None:
    try:
        with ctx.store.session() as s:
            audit.append(
                s, actor, action, "dataset", subject[:128], {"code": err.code, "detail": err.detail, **data}
            )
    except Exception:
        log.warning("could not audit a refused %s", action, exc_info=True)


def announce(ctx: BusContext, kind: str, subject: str) -> None:
    from bus.exchange.policy_events import announce as _announce

    try:
        _announce(ctx, kind, subject)
    except Exception:  # committed already; the pipeline re-reads the policy on its next version check
        log.warning("could not announce the change of %s %s", kind, subject, exc_info=True)
