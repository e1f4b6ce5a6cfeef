"""The data owner's analysis rule (R11): what operators may compute on a dataset, checked against its schema.

Pure code. Modelled on AWS Clean Rooms' aggregation analysis rule: dimensions operators may group and
filter on, measures with the functions allowed on each and the bounds every value is clamped to, the
field whose distinct values count as persons or enterprises, and the minimum group size ``k`` under
which a group is never released.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bus.catalog.schema import FieldSpec
from bus.errors import (
    AnalysisRuleError,
    RuleKBelowFloor,
    RuleSensitiveField,
    RuleSubjectInDimensions,
    RuleUnknownField,
)
from bus.vocab import MeasureFn, Sensitivity

NUMERIC = frozenset({"int", "long", "float", "double"})
GROUPABLE = frozenset({"string", "int", "long", "boolean", "enum"})
NUMERIC_FNS = frozenset({MeasureFn.SUM, MeasureFn.AVG, MeasureFn.MIN, MeasureFn.MAX})
MAX_WINDOW_SECONDS = 31 * 24 * 3600


@dataclass(frozen=True)
class MeasureRule:
    field: str
    functions: tuple[MeasureFn, ...]
    bounds: tuple[float, float] | None  # every value clamped into [lo, hi]; required for numeric functions


@dataclass(frozen=True)
class AnalysisRule:
    dimensions: tuple[str, ...]
    measures: tuple[MeasureRule, ...]
    subject_field: str
    min_group_size: int
    windows: tuple[int, ...]  # allowed tumbling window lengths, seconds
    epsilon_per_day: float | None = None  # None: no noisy releases offered

    def measure(self, name: str) -> MeasureRule | None:
        return next((m for m in self.measures if m.field == name), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "dimensions": list(self.dimensions),
            "measures": [
                {
                    "field": m.field,
                    "functions": [f.value for f in m.functions],
                    "bounds": list(m.bounds) if m.bounds is not None else None,
                }
                for m in self.measures
            ],
            "subject_field": self.subject_field,
            "min_group_size": self.min_group_size,
            "windows": list(self.windows),
            "epsilon_budget": (
                {"per_operator_per_day": self.epsilon_per_day} if self.epsilon_per_day is not None else None
            ),
        }


def rule_from_json(doc: dict[str, Any]) -> AnalysisRule:
    """A stored rule (``to_json``) back as facts; stored rules were validated when they were put."""
    budget = doc.get("epsilon_budget") or None
    return AnalysisRule(
        dimensions=tuple(doc["dimensions"]),
        measures=tuple(
            MeasureRule(
                m["field"],
                tuple(MeasureFn(f) for f in m["functions"]),
                (float(m["bounds"][0]), float(m["bounds"][1])) if m.get("bounds") else None,
            )
            for m in doc["measures"]
        ),
        subject_field=doc["subject_field"],
        min_group_size=int(doc["min_group_size"]),
        windows=tuple(int(w) for w in doc["windows"]),
        epsilon_per_day=float(budget["per_operator_per_day"]) if budget else None,
    )


def base_type(spec: FieldSpec) -> str:
    """The Avro type of a field without ``null`` (``["null", "long"]`` -> ``long``; ``enum`` for enums)."""
    t: Any = spec.type
    if isinstance(t, list):
        branches = [b for b in t if b != "null"]
        t = branches[0] if len(branches) == 1 else "union"
    if isinstance(t, dict):
        kind = t.get("type")
        return "enum" if kind == "enum" else str(kind) if isinstance(kind, str) else "complex"
    return str(t)


def _field(by_name: dict[str, FieldSpec], name: str, role: str) -> FieldSpec:
    spec = by_name.get(name)
    if spec is None:
        raise RuleUnknownField(
            f"{role} '{name}' is not a field of the dataset's schema; fields: {', '.join(by_name)}",
            field=name,
        )
    return spec


def _check_dimensions(rule: AnalysisRule, by_name: dict[str, FieldSpec]) -> None:
    if len(set(rule.dimensions)) != len(rule.dimensions):
        raise AnalysisRuleError("dimensions must not repeat a field")
    for name in rule.dimensions:
        spec = _field(by_name, name, "dimension")
        if spec.sensitivity == Sensitivity.SENSITIVE:
            raise RuleSensitiveField(
                f"dimension '{name}' is a sensitive field; it may never be grouped or filtered on (R11, R12)",
                field=name,
            )
        if base_type(spec) not in GROUPABLE:
            raise AnalysisRuleError(
                f"dimension '{name}' has type {spec.type_name}; dimensions must be "
                f"one of {', '.join(sorted(GROUPABLE))}",
                field=name,
            )
        if name == rule.subject_field:
            raise RuleSubjectInDimensions(
                f"the subject field '{name}' cannot be a dimension: grouping on it "
                "would release one person per group (R11)",
                field=name,
            )


def _check_measures(rule: AnalysisRule, by_name: dict[str, FieldSpec]) -> None:
    if not rule.measures:
        raise AnalysisRuleError("name at least one measure (a field and the functions allowed on it)")
    if len({m.field for m in rule.measures}) != len(rule.measures):
        raise AnalysisRuleError("measures must not repeat a field")
    for m in rule.measures:
        spec = _field(by_name, m.field, "measure")
        if spec.sensitivity == Sensitivity.SENSITIVE:
            raise RuleSensitiveField(
                f"measure '{m.field}' is a sensitive field; it may never be aggregated (R11, R12)",
                field=m.field,
            )
        if m.field == rule.subject_field:
            raise RuleSubjectInDimensions(f"the subject field '{m.field}' cannot be a measure", field=m.field)
        if not m.functions:
            raise AnalysisRuleError(f"measure '{m.field}' allows no function")
        numeric = NUMERIC_FNS.intersection(m.functions)
        if numeric and base_type(spec) not in NUMERIC:
            raise AnalysisRuleError(
                f"measure '{m.field}' has type {spec.type_name}: only count applies; "
                f"{', '.join(sorted(numeric))} need a numeric field",
                field=m.field,
            )
        if numeric and m.bounds is None:
            raise AnalysisRuleError(
                f"measure '{m.field}' needs bounds [lo, hi]: every value is clamped into "
                "them, which bounds what one record can change",
                field=m.field,
            )
        if m.bounds is not None and not (m.bounds[0] < m.bounds[1]):
            raise AnalysisRuleError(
                f"measure '{m.field}': bounds must be [lo, hi] with lo < hi", field=m.field
            )


def validate_rule(rule: AnalysisRule, fields: Sequence[FieldSpec], floor: int) -> AnalysisRule:
    """Refuse (``analysis_rule.*``) or return the rule, normalised, for the dataset's current schema.

    Order: the subject field, dimensions, measures, then k against the bus floor and the windows."""
    by_name = {f.name: f for f in fields}
    _field(by_name, rule.subject_field, "subject_field")
    _check_dimensions(rule, by_name)
    _check_measures(rule, by_name)
    if rule.min_group_size < floor:
        raise RuleKBelowFloor(
            f"min_group_size {rule.min_group_size} is below the bus floor {floor} (BUS_MIN_GROUP_SIZE)",
            floor=floor,
        )
    if not rule.windows or any(w < 1 or w > MAX_WINDOW_SECONDS for w in rule.windows):
        raise AnalysisRuleError(f"windows must be a non-empty list of seconds in 1..{MAX_WINDOW_SECONDS}")
    if rule.epsilon_per_day is not None and not (0 < rule.epsilon_per_day <= 100):
        raise AnalysisRuleError("epsilon_budget.per_operator_per_day must be in (0, 100]")
    return AnalysisRule(
        dimensions=rule.dimensions,
        measures=tuple(
            MeasureRule(m.field, tuple(dict.fromkeys(m.functions)), m.bounds) for m in rule.measures
        ),
        subject_field=rule.subject_field,
        min_group_size=rule.min_group_size,
        windows=tuple(sorted(set(rule.windows))),
        epsilon_per_day=rule.epsilon_per_day,
    )
