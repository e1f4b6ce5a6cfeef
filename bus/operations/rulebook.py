"""The data owner's analysis rules in the store (R11): put a new version (audited), read the current one."""

from __future__ import annotations

from typing import Any

from bus.catalog.schema import catalog_fields
from bus.context import BusContext
from bus.errors import AuthForbidden, BusError, OperationNoRule
from bus.grants.service import Caller
from bus.lineage import audit
from bus.operations.common import audit_refusal, current_rule, dataset, rule_json, schema
from bus.operations.rules import AnalysisRule, validate_rule
from bus.store.models import AnalysisRuleVersion
from bus.vocab import Role


def put_rule(ctx: BusContext, caller: Caller, dataset_id: str, rule: AnalysisRule) -> dict[str, Any]:
    """R11: the owner says what operators may compute; a new version each time (audited)."""
    try:
        with ctx.store.session() as s:
            ds = dataset(s, dataset_id)
            if caller.id != ds.owner_id:
                raise AuthForbidden(f"only the owner {ds.owner_id} sets the analysis rule of {ds.id}")
            clean = validate_rule(rule, catalog_fields(schema(s, ds)), ctx.settings.min_group_size)
            last = current_rule(s, ds.id)
            row = AnalysisRuleVersion(
                dataset_id=ds.id,
                version=(last.version + 1) if last else 1,
                rule=clean.to_json(),
                created_by=caller.id,
            )
            s.add(row)
            s.flush()
            audit.append(
                s,
                caller.id,
                "analysis_rule.put",
                "dataset",
                ds.id,
                {"version": row.version, "rule": row.rule},
            )
            return rule_json(row)
    except BusError as err:
        audit_refusal(ctx, caller.id, "analysis_rule.refused", dataset_id, err, {})
        raise


def get_rule(ctx: BusContext, caller: Caller, dataset_id: str) -> dict[str, Any]:
    """Visible to the owner, reviewers, operators, auditors and the admin."""
    with ctx.store.session() as s:
        ds = dataset(s, dataset_id)
        if caller.id != ds.owner_id and not caller.has(Role.REVIEWER, Role.OPERATOR, Role.AUDITOR):
            raise AuthForbidden("analysis rules are visible to the owner, reviewers, operators and auditors")
        row = current_rule(s, ds.id)
        if row is None:
            raise OperationNoRule(f"dataset {ds.id} has no analysis rule: nothing may be computed on it")
        return rule_json(row)
