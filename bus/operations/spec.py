"""Static checks of an operation against the dataset's analysis rule (R11), before anything runs.

Pure code. An operation may group, filter and measure only what the rule allows, never outputs or
filters on the subject field, never lowers ``k``, uses an allowed window, and is refused when it
differs from another active operation of the same operator only by its filters (a difference attack:
subtracting the two results would reveal the small group the filters separate) unless noise is on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bus.errors import (
    OperationDifferenceAttack,
    OperationError,
    OperationFieldNotAllowed,
    OperationKTooSmall,
    OperationSubjectOutput,
    OperationWindowNotAllowed,
)
from bus.operations.rules import AnalysisRule
from bus.vocab import MeasureFn

MAX_IN_VALUES = 100
Scalar = str | int | float | bool


@dataclass(frozen=True)
class Measure:
    field: str
    fn: MeasureFn

    @property
    def column(self) -> str:
        """The result column: ``count_licence_no``, ``avg_capital``."""
        return f"{self.fn.value}_{self.field}"


@dataclass(frozen=True)
class Filter:
    field: str
    op: str  # eq | in
    values: tuple[Scalar, ...]  # eq: exactly one

    def matches(self, value: Any) -> bool:
        return value in self.values


@dataclass(frozen=True)
class OperationSpec:
    dataset: str
    group_by: tuple[str, ...]
    measures: tuple[Measure, ...]
    filters: tuple[Filter, ...]
    window_seconds: int
    k: int
    epsilon: float | None = None

    def shape(self) -> tuple[Any, ...]:
        """Everything but the filters (and k, epsilon): two specs of one shape differ only by filters."""
        return (
            self.dataset,
            tuple(sorted(self.group_by)),
            tuple(sorted((m.field, m.fn) for m in self.measures)),
            self.window_seconds,
        )

    def filter_key(self) -> frozenset[tuple[str, str, frozenset[Scalar]]]:
        return frozenset((f.field, f.op, frozenset(f.values)) for f in self.filters)

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "group_by": list(self.group_by),
            "measures": [{"field": m.field, "fn": m.fn.value} for m in self.measures],
            "filters": [
                {"field": f.field, "op": f.op, "value": f.values[0] if f.op == "eq" else list(f.values)}
                for f in self.filters
            ],
            "window_seconds": self.window_seconds,
            "k": self.k,
            "epsilon": self.epsilon,
        }


def spec_from_json(doc: dict[str, Any]) -> OperationSpec:
    """A spec from its JSON form (the request body or the stored operation); shape errors are
    ``operation.invalid``."""
    try:
        filters = []
        for f in doc.get("filters") or []:
            op = f["op"]
            if op not in ("eq", "in"):
                raise OperationError(f"filter op must be eq or in, not {op!r}")
            raw = f["value"]
            values = tuple(raw) if op == "in" else (raw,)
            if op == "in" and (not isinstance(raw, list) or not raw or len(raw) > MAX_IN_VALUES):
                raise OperationError(
                    f"filter '{f['field']}' in: value must be a list of 1..{MAX_IN_VALUES} values"
                )
            if not all(isinstance(v, str | int | float | bool) for v in values):
                raise OperationError(f"filter '{f['field']}': values must be strings, numbers or booleans")
            filters.append(Filter(str(f["field"]), op, values))
        measures = tuple(Measure(str(m["field"]), MeasureFn(m["fn"])) for m in doc["measures"])
        epsilon = doc.get("epsilon")
        return OperationSpec(
            dataset=str(doc["dataset"]),
            group_by=tuple(str(g) for g in doc.get("group_by") or []),
            measures=measures,
            filters=tuple(filters),
            window_seconds=int(doc["window_seconds"]),
            k=int(doc["k"]),
            epsilon=float(epsilon) if epsilon is not None else None,
        )
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, OperationError):
            raise
        raise OperationError(f"the operation spec is malformed: {type(exc).__name__} {exc}") from None


def _check_fields(spec: OperationSpec, rule: AnalysisRule) -> None:
    subject = rule.subject_field
    used = [*spec.group_by, *(f.field for f in spec.filters), *(m.field for m in spec.measures)]
    if subject in used:
        raise OperationSubjectOutput(
            f"the subject field '{subject}' cannot be grouped on, filtered on or "
            "measured: it would single out persons (R11)",
            field=subject,
        )
    if len(set(spec.group_by)) != len(spec.group_by):
        raise OperationError("group_by must not repeat a field")
    for name in [*spec.group_by, *(f.field for f in spec.filters)]:
        if name not in rule.dimensions:
            raise OperationFieldNotAllowed(
                f"'{name}' is not a dimension of the analysis rule; allowed: "
                f"{', '.join(rule.dimensions) or 'none'}",
                field=name,
            )
    if not spec.measures:
        raise OperationError("name at least one measure {field, fn}")
    if len(set(spec.measures)) != len(spec.measures):
        raise OperationError("measures must not repeat a {field, fn}")
    for m in spec.measures:
        allowed = rule.measure(m.field)
        if allowed is None or m.fn not in allowed.functions:
            what = (
                f"allows {', '.join(f.value for f in allowed.functions)}"
                if allowed
                else "is not a measure of the analysis rule"
            )
            raise OperationFieldNotAllowed(f"{m.fn.value}({m.field}): '{m.field}' {what}", field=m.field)


def check_spec(spec: OperationSpec, rule: AnalysisRule, others: Sequence[OperationSpec] = ()) -> None:
    """Refuse (``operation.*``) an operation the rule does not allow; ``others`` are the operator's other
    active (and pending) operations, for the difference-attack check."""
    _check_fields(spec, rule)
    if spec.k < rule.min_group_size:
        raise OperationKTooSmall(
            f"k={spec.k} is below the analysis rule's minimum group size "
            f"{rule.min_group_size}; k may be raised, never lowered",
            minimum=rule.min_group_size,
        )
    if spec.window_seconds not in rule.windows:
        raise OperationWindowNotAllowed(
            f"window_seconds {spec.window_seconds} is not allowed; the rule "
            f"allows {', '.join(str(w) for w in rule.windows)}",
            allowed=list(rule.windows),
        )
    if spec.epsilon is not None:
        if rule.epsilon_per_day is None:
            raise OperationError(
                "the analysis rule offers no noisy releases (no epsilon_budget); leave epsilon out"
            )
        if not (0 < spec.epsilon <= rule.epsilon_per_day):
            raise OperationError(f"epsilon must be in (0, {rule.epsilon_per_day}] (the daily budget)")
    if spec.epsilon is None:
        for other in others:
            if other.shape() == spec.shape() and other.filter_key() != spec.filter_key():
                raise OperationDifferenceAttack(
                    "this operation differs from another of yours only by its filters: the difference of "
                    "the two results could isolate a small group; add noise (epsilon) or change the "
                    "grouping (R11)"
                )
