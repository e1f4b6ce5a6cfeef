"""Dry run of an operation (R11) over generated data of the dataset's schema: spends no budget, reads
no record. Pure code (seeded pseudo-random data), like Lomas' dummy-data queries: the operator sees
the shape of the results, what suppression does, and what the operation would cost per day."""

from __future__ import annotations

import random
from typing import Any

from bus.catalog.schema import FieldSpec
from bus.operations.derived import derived_schema, result_row
from bus.operations.noise import noisy_row
from bus.operations.rules import NUMERIC, AnalysisRule, base_type
from bus.operations.spec import OperationSpec
from bus.operations.windows import WindowState, observe

RECORDS = 400
SUBJECTS = 60
WINDOWS = 3


def _dimension_value(spec: FieldSpec, rnd: random.Random) -> Any:
    kind = base_type(spec)
    if kind == "enum":
        t = spec.type if isinstance(spec.type, dict) else next(b for b in spec.type if b != "null")
        return rnd.choice(t["symbols"])
    if kind == "boolean":
        return rnd.random() < 0.5
    if kind in ("int", "long"):
        return rnd.randrange(4)
    # a skewed spread: the last value is rare, so suppression shows
    return rnd.choices(["A", "B", "C", "D"], weights=[50, 30, 15, 5])[0]


def synthetic_records(
    spec: OperationSpec, rule: AnalysisRule, fields: list[FieldSpec], seed: int = 0
) -> list[tuple[int, dict[str, Any]]]:
    """``RECORDS`` (event time ms, value) pairs over ``WINDOWS`` windows of the spec."""
    rnd = random.Random(seed)
    by_name = {f.name: f for f in fields}
    span = spec.window_seconds * 1000 * WINDOWS
    out = []
    for _ in range(RECORDS):
        value: dict[str, Any] = {rule.subject_field: f"subject-{rnd.randrange(SUBJECTS)}"}
        for d in rule.dimensions:
            value[d] = _dimension_value(by_name[d], rnd)
        for f in spec.filters:  # half the records pass each filter
            if rnd.random() < 0.5:
                value[f.field] = rnd.choice(f.values)
        for m in rule.measures:
            lo, hi = m.bounds or (0.0, 1.0)
            numeric = base_type(by_name[m.field]) in NUMERIC
            value[m.field] = rnd.uniform(lo, hi) if numeric else "x"
        out.append((rnd.randrange(span), value))
    return out


def dry_run(
    spec: OperationSpec, rule: AnalysisRule, fields: list[FieldSpec], operation_id: str, seed: int = 0
) -> dict[str, Any]:
    """The operation over synthetic data: released rows, suppressed groups, schema and cost."""
    state = WindowState(spec)
    for t, value in synthetic_records(spec, rule, fields, seed):
        obs = observe(spec, rule, t, value, str)
        if obs is not None:
            state.add(obs)
    state.advance(spec.window_seconds * 1000 * (WINDOWS + 1))
    rows, suppressed = [], 0
    for w in state.close():
        suppressed += w.suppressed
        for r in w.rows:
            r = noisy_row(r, spec, rule, spec.epsilon) if spec.epsilon else r
            rows.append(result_row(r.window_start_ms, r.window_end_ms, r.group, r.measures))
    per_day = 86400 / spec.window_seconds
    return {
        "synthetic": True,
        "records": RECORDS,
        "rows": rows,
        "suppressed_groups": suppressed,
        "schema": derived_schema(operation_id, spec, fields),
        "cost": {
            "epsilon_per_window": spec.epsilon,
            "windows_per_day": per_day,
            "epsilon_per_day": spec.epsilon * per_day if spec.epsilon else None,
            "budget_per_day": rule.epsilon_per_day,
            "spent": 0.0,
        },
    }
