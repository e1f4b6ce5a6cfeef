"""The operations service (R11): operation requests, decisions and lifecycle (rules: ``rulebook``).

Each change is one transaction with its audit event; refusals are audited too. The checks themselves
are pure (``rules.validate_rule``, ``spec.check_spec``). Approving an operation catalogues its derived
dataset and the operator's grant on it (``derived.create_derived``) in the same transaction, then
announces the change so the pipeline routes the results at once.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bus.catalog.schema import catalog_fields
from bus.context import BusContext
from bus.errors import (
    AuthForbidden,
    BusError,
    DatasetNotApproved,
    LegalBasisRequired,
    OperationBadState,
    OperationBudgetExhausted,
    OperationError,
    OperationNoRule,
    OperationNotFound,
    ScenarioRequired,
)
from bus.grants.service import Caller
from bus.lineage import audit
from bus.operations import budget, derived
from bus.operations.common import announce, audit_refusal, current_rule, dataset, operation_json, schema
from bus.operations.rules import AnalysisRule, rule_from_json
from bus.operations.spec import OperationSpec, check_spec, spec_from_json
from bus.store.models import AnalysisRuleVersion, Dataset, Operation
from bus.vocab import DatasetStatus, GrantStatus, OperationStatus, Role

log = logging.getLogger(__name__)
DEFAULT_VALIDITY = timedelta(days=365)


@dataclass(frozen=True)
class OperationRequestIn:
    spec: OperationSpec
    scenario_code: str | None
    scenario_description: str | None
    legal_basis: str | None
    sharing: str | None = None  # the derived product's attribute; never wider than the source's
    valid_until: datetime | None = None


# --- operations -----------------------------------------------------------------------------------------
def _others(
    s: Session,
    operator_id: str,
    dataset_id: str,
    skip: str | None = None,
    statuses: tuple[str, ...] = (OperationStatus.ACTIVE, OperationStatus.PENDING),
) -> list[OperationSpec]:
    q = select(Operation).where(
        Operation.operator_id == operator_id,
        Operation.dataset_id == dataset_id,
        Operation.status.in_(statuses),
    )
    return [spec_from_json(o.spec) for o in s.scalars(q) if o.id != skip]


def _check_request(
    s: Session, caller: Caller, req: OperationRequestIn, now: datetime
) -> tuple[Dataset, AnalysisRuleVersion, AnalysisRule]:
    if not caller.has(Role.OPERATOR) or caller.is_admin:
        raise AuthForbidden("operations are requested by agencies holding the operator role (R11)")
    if not (req.scenario_code or "").strip() or not (req.scenario_description or "").strip():
        raise ScenarioRequired("state the scenario: scenario.code and scenario.description (R7, R11)")
    if not (req.legal_basis or "").strip():
        raise LegalBasisRequired("state the legal basis of the operation (legal_basis)")
    ds = dataset(s, req.spec.dataset)
    if ds.status != DatasetStatus.APPROVED:
        raise DatasetNotApproved(f"dataset {ds.id} is {ds.status}; only approved datasets are operated on")
    row = current_rule(s, ds.id)
    if row is None:
        raise OperationNoRule(
            f"dataset {ds.id} has no analysis rule: its owner has not allowed any "
            "operation (PUT /v1/datasets/{id}/analysis-rule)"
        )
    rule = rule_from_json(row.rule)
    check_spec(req.spec, rule, _others(s, caller.id, ds.id))
    if req.valid_until is not None and req.valid_until <= now:
        raise OperationError("valid_until is in the past")
    if req.spec.epsilon is not None and rule.epsilon_per_day is not None:
        left = rule.epsilon_per_day - budget.spent(s, caller.id, ds.id)
        if req.spec.epsilon > left + budget.SLACK:
            raise OperationBudgetExhausted(
                f"epsilon {req.spec.epsilon} exceeds today's remaining budget {max(left, 0):.4g} on {ds.id}",
                remaining=max(left, 0.0),
            )
    return ds, row, rule


def request_operation(ctx: BusContext, caller: Caller, req: OperationRequestIn) -> dict[str, Any]:
    """R11: static checks, then ``pending`` until the dataset owner decides."""
    now = datetime.now(UTC)
    try:
        with ctx.store.session() as s:
            ds, row, _ = _check_request(s, caller, req, now)
            op = Operation(
                id=f"op-{uuid.uuid4().hex[:12]}",
                dataset_id=ds.id,
                operator_id=caller.id,
                scenario_code=(req.scenario_code or "").strip()[:64],
                scenario_description=(req.scenario_description or "").strip(),
                legal_basis=(req.legal_basis or "").strip(),
                spec=req.spec.to_json(),
                rule_version=row.version,
                sharing_attribute=derived.narrowest(ds.sharing_attribute, req.sharing),
                status=OperationStatus.PENDING.value,
                version=1,
                valid_until=req.valid_until or now + DEFAULT_VALIDITY,
                requested_at=now,
            )
            s.add(op)
            s.flush()
            audit.append(
                s,
                caller.id,
                "operation.requested",
                "operation",
                op.id,
                {
                    "dataset": ds.id,
                    "owner": ds.owner_id,
                    "spec": op.spec,
                    "rule_version": row.version,
                    "scenario": op.scenario_code,
                    "sharing": op.sharing_attribute,
                },
            )
            return operation_json(op)
    except BusError as err:
        audit_refusal(
            ctx, caller.id, "operation.refused", req.spec.dataset, err, {"spec": req.spec.to_json()}
        )
        raise


def _load(s: Session, op_id: str, lock: bool = True) -> Operation:
    q = select(Operation).where(Operation.id == op_id)
    op = s.scalar(q.with_for_update() if lock else q)
    if op is None:
        raise OperationNotFound(f"no operation '{op_id}'")
    return op


def _check_visible(caller: Caller, op: Operation, ds: Dataset) -> None:
    if caller.id in (op.operator_id, ds.owner_id) or caller.has(Role.AUDITOR):
        return
    raise AuthForbidden(f"operation {op.id} is visible to its operator, the dataset owner and auditors")


def _approve(s: Session, op: Operation, ds: Dataset) -> None:
    row = current_rule(s, ds.id)
    if row is None:
        raise OperationNoRule(f"dataset {ds.id} no longer has an analysis rule")
    spec = spec_from_json(op.spec)
    check_spec(
        spec,
        rule_from_json(row.rule),
        _others(s, op.operator_id, ds.id, skip=op.id, statuses=(OperationStatus.ACTIVE,)),
    )
    op.rule_version = row.version
    dds, grant = derived.create_derived(s, op, ds, spec, schema(s, ds), datetime.now(UTC))
    op.derived_dataset_id, op.grant_id = dds.id, grant.id


def decide(ctx: BusContext, caller: Caller, op_id: str, decision: str, reason: str | None) -> dict[str, Any]:
    """The source dataset's owner approves (-> active, derived product catalogued) or denies."""
    if decision not in ("approve", "deny"):
        raise OperationError(f"decision must be approve or deny, not {decision!r}")
    with ctx.store.session() as s:
        op = _load(s, op_id)
        ds = dataset(s, op.dataset_id)
        _check_visible(caller, op, ds)
        if caller.id != ds.owner_id:
            raise AuthForbidden(f"only the dataset owner {ds.owner_id} decides on operations over {ds.id}")
        if op.status != OperationStatus.PENDING:
            raise OperationBadState(f"operation {op.id} is {op.status}; only a pending one is decided")
        if decision == "approve":
            _approve(s, op, ds)
        now = datetime.now(UTC)
        op.status = (OperationStatus.ACTIVE if decision == "approve" else OperationStatus.DENIED).value
        op.decided_at, op.version = now, op.version + 1
        op.decision_reason = (reason or "").strip() or None
        audit.append(
            s,
            caller.id,
            f"operation.{'approved' if decision == 'approve' else 'denied'}",
            "operation",
            op.id,
            {
                "dataset": ds.id,
                "operator": op.operator_id,
                "rule_version": op.rule_version,
                "reason": op.decision_reason,
                "derived_dataset": op.derived_dataset_id,
                "grant": op.grant_id,
            },
        )
        body = operation_json(op)
    if body["status"] == OperationStatus.ACTIVE:
        _ensure_topics(ctx, body["dataset"], body["derived_dataset"], body["grant"])
        announce(ctx, "grant", body["grant"])
    return body


def _ensure_topics(ctx: BusContext, source: str, derived_ds: str, grant: str) -> None:
    from bus.exchange.kafka import ensure_topics

    try:
        ensure_topics(
            ctx.bootstrap,
            [ctx.topics.data(source), ctx.topics.data(derived_ds), ctx.topics.deliver(grant)],
            timeout=5,
        )
    except Exception:  # the first produce creates them anyway
        log.warning("could not create the topics of a derived product", exc_info=True)


_ENDS = {
    "revoke": (OperationStatus.REVOKED, GrantStatus.REVOKED),
    "suspend": (OperationStatus.SUSPENDED, GrantStatus.SUSPENDED),
    "resume": (OperationStatus.ACTIVE, GrantStatus.ACTIVE),
}
_FROM = {
    "revoke": (OperationStatus.PENDING, OperationStatus.ACTIVE, OperationStatus.SUSPENDED),
    "suspend": (OperationStatus.ACTIVE,),
    "resume": (OperationStatus.SUSPENDED,),
}


def change(ctx: BusContext, caller: Caller, op_id: str, action: str, reason: str | None) -> dict[str, Any]:
    """Revoke (owner, admin, or the operator withdrawing), suspend or resume (owner, admin): the executor
    stops releasing within a second and the result grant follows."""
    with ctx.store.session() as s:
        op = _load(s, op_id)
        ds = dataset(s, op.dataset_id)
        allowed = (
            caller.id == ds.owner_id
            or caller.is_admin
            or (action == "revoke" and caller.id == op.operator_id)
        )
        if not allowed:
            raise AuthForbidden(
                f"only the dataset owner {ds.owner_id} or the admin may {action} operation {op.id}"
            )
        if op.status not in _FROM[action]:
            raise OperationBadState(
                f"operation {op.id} is {op.status}; {action} applies to {' or '.join(_FROM[action])}"
            )
        target, grant_status = _ENDS[action]
        op.status, op.version = target.value, op.version + 1
        if action == "revoke":
            op.ended_at = datetime.now(UTC)
        derived.end_grant(s, op, grant_status)
        audit.append(
            s,
            caller.id,
            f"operation.{target.value if action != 'resume' else 'resumed'}",
            "operation",
            op.id,
            {"dataset": ds.id, "operator": op.operator_id, "reason": (reason or "").strip() or None},
        )
        body = operation_json(op)
    if body["grant"]:
        announce(ctx, "grant", body["grant"])
    return body


def expire_due(ctx: BusContext) -> list[str]:
    """End every operation past its ``valid_until`` (the executor sweeps)."""
    now = datetime.now(UTC)
    with ctx.store.session() as s:
        due = list(
            s.scalars(
                select(Operation).where(
                    Operation.status.in_(
                        [OperationStatus.ACTIVE, OperationStatus.SUSPENDED, OperationStatus.PENDING]
                    ),
                    Operation.valid_until.is_not(None),
                    Operation.valid_until <= now,
                )
            )
        )
        for op in due:
            op.status, op.ended_at, op.version = OperationStatus.EXPIRED.value, now, op.version + 1
            derived.end_grant(s, op, GrantStatus.EXPIRED)
            audit.append(s, "bus", "operation.expired", "operation", op.id, {"dataset": op.dataset_id})
        grants = [op.grant_id for op in due if op.grant_id]
    for g in grants:
        announce(ctx, "grant", g)
    return [op.id for op in due]


def get_operation(ctx: BusContext, caller: Caller, op_id: str) -> dict[str, Any]:
    with ctx.store.session() as s:
        op = _load(s, op_id, lock=False)
        _check_visible(caller, op, dataset(s, op.dataset_id))
        return operation_json(op)


def list_operations(
    ctx: BusContext,
    caller: Caller,
    *,
    status: str | None = None,
    dataset: str | None = None,
    limit: int = 200,
    offset: int = 0,
) -> dict[str, Any]:
    """The caller's operations: as operator, as source owner, or all for auditors and the admin."""
    with ctx.store.session() as s:
        q = select(Operation).join(Dataset, Dataset.id == Operation.dataset_id)
        if not caller.has(Role.AUDITOR):
            q = q.where((Operation.operator_id == caller.id) | (Dataset.owner_id == caller.id))
        if status:
            q = q.where(Operation.status == status)
        if dataset:
            q = q.where(Operation.dataset_id == dataset)
        rows = s.scalars(q.order_by(Operation.requested_at.desc(), Operation.id).limit(limit).offset(offset))
        return {"operations": [operation_json(o) for o in rows], "limit": limit, "offset": offset}


def dry_run(ctx: BusContext, caller: Caller, op_id: str) -> dict[str, Any]:
    """The operation over generated data of the dataset's schema (``dryrun``): spends nothing."""
    from bus.operations.dryrun import dry_run as run

    with ctx.store.session() as s:
        op = _load(s, op_id, lock=False)
        ds = dataset(s, op.dataset_id)
        _check_visible(caller, op, ds)
        row = s.get(AnalysisRuleVersion, (ds.id, op.rule_version))
        if row is None:
            raise OperationNoRule(f"dataset {ds.id} has no analysis rule version {op.rule_version}")
        fields = catalog_fields(schema(s, ds))
        spec, rule = spec_from_json(op.spec), rule_from_json(row.rule)
        audit.append(s, caller.id, "operation.dry_run", "operation", op.id, {"dataset": ds.id})
    return {"operation": op_id, **run(spec, rule, fields, op_id)}
