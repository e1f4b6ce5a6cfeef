"""Authorised operation endpoints (R11): analysis rules, operations, decisions, lifecycle, dry runs."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from bus.gateway.auth import Principal, ctx_of, current_principal
from bus.operations import rulebook, service
from bus.operations.rules import AnalysisRule, MeasureRule
from bus.operations.spec import spec_from_json
from bus.vocab import MeasureFn, OperationStatus, SharingAttribute

router = APIRouter(tags=["operations"])

Name = Annotated[str, Field(min_length=1, max_length=200)]
Scalar = Annotated[str, Field(max_length=500)] | int | float | bool


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MeasureRuleIn(_Body):
    field: Name
    functions: Annotated[list[MeasureFn], Field(min_length=1, max_length=5)]
    bounds: Annotated[list[float], Field(min_length=2, max_length=2)] | None = None


class BudgetIn(_Body):
    per_operator_per_day: Annotated[float, Field(gt=0, le=100)]


class RuleIn(_Body):
    dimensions: Annotated[list[Name], Field(max_length=50)]
    measures: Annotated[list[MeasureRuleIn], Field(max_length=50)]
    subject_field: Name = Field(description="whose distinct values count as persons or enterprises")
    min_group_size: Annotated[int, Field(ge=1, le=1_000_000)] = Field(description="k")
    windows: Annotated[list[Annotated[int, Field(ge=1, le=31 * 86400)]], Field(min_length=1, max_length=20)]
    epsilon_budget: BudgetIn | None = None

    def facts(self) -> AnalysisRule:
        return AnalysisRule(
            dimensions=tuple(self.dimensions),
            measures=tuple(
                MeasureRule(m.field, tuple(m.functions), (m.bounds[0], m.bounds[1]) if m.bounds else None)
                for m in self.measures
            ),
            subject_field=self.subject_field,
            min_group_size=self.min_group_size,
            windows=tuple(self.windows),
            epsilon_per_day=self.epsilon_budget.per_operator_per_day if self.epsilon_budget else None,
        )


class ScenarioIn(_Body):
    code: Annotated[str, Field(max_length=200)] | None = None
    description: Annotated[str, Field(max_length=4000)] | None = None


class MeasureIn(_Body):
    field: Name
    fn: MeasureFn


class FilterIn(_Body):
    field: Name
    op: Literal["eq", "in"]
    value: Scalar | Annotated[list[Scalar], Field(max_length=100)]


class OperationIn(_Body):
    dataset: Annotated[str, Field(min_length=1, max_length=64)]
    scenario: ScenarioIn | None = None
    legal_basis: Annotated[str, Field(max_length=4000)] | None = None
    group_by: Annotated[list[Name], Field(max_length=20)] = Field(default_factory=list)
    measures: Annotated[list[MeasureIn], Field(max_length=20)]
    filters: Annotated[list[FilterIn], Field(max_length=20)] = Field(default_factory=list)
    window_seconds: Annotated[int, Field(ge=1, le=31 * 86400)]
    k: Annotated[int, Field(ge=1, le=1_000_000)]
    epsilon: Annotated[float, Field(gt=0, le=100)] | None = None
    sharing: SharingAttribute | None = Field(
        None, description="the derived product's attribute (never wider than the source's)"
    )
    valid_until: datetime | None = None


class DecisionIn(_Body):
    decision: Literal["approve", "deny"]
    reason: Annotated[str, Field(max_length=4000)] | None = None


class ReasonIn(_Body):
    reason: Annotated[str, Field(max_length=4000)] | None = None


@router.put("/v1/datasets/{dataset_id}/analysis-rule", summary="Set what operators may compute (owner, R11)")
def put_rule(
    dataset_id: str, body: RuleIn, request: Request, principal: Principal = Depends(current_principal)
) -> dict[str, Any]:
    return rulebook.put_rule(ctx_of(request), principal, dataset_id, body.facts())


@router.get(
    "/v1/datasets/{dataset_id}/analysis-rule",
    summary="The current analysis rule (owner, reviewers, operators, auditors)",
)
def get_rule(
    dataset_id: str, request: Request, principal: Principal = Depends(current_principal)
) -> dict[str, Any]:
    return rulebook.get_rule(ctx_of(request), principal, dataset_id)


@router.post("/v1/operations", status_code=201, summary="Request an aggregate-only operation (operator)")
def request_operation(
    body: OperationIn, request: Request, principal: Principal = Depends(current_principal)
) -> JSONResponse:
    spec = spec_from_json(
        {
            **body.model_dump(
                include={"dataset", "group_by", "measures", "filters", "window_seconds", "k", "epsilon"},
                mode="json",
            )
        }
    )
    req = service.OperationRequestIn(
        spec=spec,
        scenario_code=body.scenario.code if body.scenario else None,
        scenario_description=body.scenario.description if body.scenario else None,
        legal_basis=body.legal_basis,
        sharing=body.sharing.value if body.sharing else None,
        valid_until=body.valid_until,
    )
    return JSONResponse(service.request_operation(ctx_of(request), principal, req), status_code=201)


@router.get("/v1/operations", summary="Operations the caller runs or decides on (auditors, admin: all)")
def list_operations(
    request: Request,
    principal: Principal = Depends(current_principal),
    status: OperationStatus | None = None,
    dataset: str | None = Query(None, max_length=64),
    limit: int = Query(200, ge=1, le=1000),
    offset: int = Query(0, ge=0, le=1_000_000),
) -> dict[str, Any]:
    return service.list_operations(
        ctx_of(request),
        principal,
        status=status.value if status else None,
        dataset=dataset,
        limit=limit,
        offset=offset,
    )


@router.get("/v1/operations/{operation_id}", summary="One operation (operator, owner, auditors)")
def get_operation(
    operation_id: str, request: Request, principal: Principal = Depends(current_principal)
) -> dict[str, Any]:
    return service.get_operation(ctx_of(request), principal, operation_id)


@router.post("/v1/operations/{operation_id}/decision", summary="Approve or deny (source dataset owner)")
def decide(
    operation_id: str, body: DecisionIn, request: Request, principal: Principal = Depends(current_principal)
) -> dict[str, Any]:
    return service.decide(ctx_of(request), principal, operation_id, body.decision, body.reason)


def _change(action: str) -> Any:
    def endpoint(
        operation_id: str,
        request: Request,
        body: ReasonIn | None = None,
        principal: Principal = Depends(current_principal),
    ) -> dict[str, Any]:
        return service.change(ctx_of(request), principal, operation_id, action, body.reason if body else None)

    endpoint.__name__ = f"{action}_operation"
    return endpoint


router.post(
    "/v1/operations/{operation_id}/revoke",
    summary="Revoke (owner, admin, or the operator): nothing is released after a second",
)(_change("revoke"))
router.post(
    "/v1/operations/{operation_id}/suspend", summary="Suspend at once (owner, admin; emergency switch)"
)(_change("suspend"))
router.post("/v1/operations/{operation_id}/resume", summary="Resume a suspended operation")(_change("resume"))


@router.post(
    "/v1/operations/{operation_id}/dry-run",
    summary="Run the spec over generated data of the dataset's schema; spends nothing",
)
def dry_run(
    operation_id: str, request: Request, principal: Principal = Depends(current_principal)
) -> dict[str, Any]:
    return service.dry_run(ctx_of(request), principal, operation_id)


@router.get(
    "/v1/operations/{operation_id}/results",
    summary="Lineage of the released result rows (operation, rule version, window, k, epsilon, count)",
)
def results(
    operation_id: str,
    request: Request,
    principal: Principal = Depends(current_principal),
    record_id: str | None = Query(None, max_length=40),
    limit: int = Query(200, ge=1, le=1000),
    offset: int = Query(0, ge=0, le=1_000_000),
) -> dict[str, Any]:
    from bus.operations.lineage import results_of

    return results_of(
        ctx_of(request), principal, operation_id, record_id=record_id, limit=limit, offset=offset
    )
