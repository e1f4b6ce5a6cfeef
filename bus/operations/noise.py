"""Calibrated noise for released rows (R11), with OpenDP's Laplace mechanism.

An operation with ``epsilon`` spends it once per released window: the groups of one window partition
its records (parallel composition), and within a row the measures share it equally (sequential
composition). Sensitivities are per record, from the rule's bounds: a count changes by 1, a sum by
``max(|lo|, |hi|)``, a min or max by ``hi - lo``, an average of ``n`` values by ``(hi - lo) / n``.
After the noise, averages, minima and maxima are clamped back into the bounds and counts rounded to
non-negative integers (post-processing costs no privacy). No I/O beyond OpenDP's own sampler.
"""

from __future__ import annotations

import functools
from dataclasses import replace
from typing import Any

from bus.operations.rules import AnalysisRule
from bus.operations.spec import Measure, OperationSpec
from bus.operations.windows import ResultRow, clamp
from bus.vocab import MeasureFn


@functools.cache
def _laplace(scale: float) -> Any:
    import opendp.prelude as dp

    dp.enable_features("contrib")  # the Laplace constructor is marked contrib in OpenDP 0.1x
    return dp.m.make_laplace(dp.atom_domain(T=float, nan=False), dp.absolute_distance(T=float), scale=scale)


def sensitivity(m: Measure, rule: AnalysisRule, n: int) -> float:
    """How much one record can move the measure (record-level adjacency)."""
    if m.fn == MeasureFn.COUNT:
        return 1.0
    measure = rule.measure(m.field)
    lo, hi = measure.bounds if measure and measure.bounds else (0.0, 1.0)
    if m.fn == MeasureFn.SUM:
        return max(abs(lo), abs(hi))
    if m.fn == MeasureFn.AVG:
        return (hi - lo) / max(n, 1)
    return hi - lo


def laplace(value: float, scale: float) -> float:
    """``value`` plus Laplace(``scale``) noise from OpenDP; scale 0 adds nothing."""
    if scale <= 0:
        return value
    return float(_laplace(float(scale))(float(value)))


def noisy_row(row: ResultRow, spec: OperationSpec, rule: AnalysisRule, epsilon: float) -> ResultRow:
    """``row`` with every measure noised under ``epsilon`` shared by its measures."""
    per_measure = epsilon / len(spec.measures)
    out: dict[str, float | int | None] = {}
    for m in spec.measures:
        value = row.measures.get(m.column)
        if value is None:
            out[m.column] = None
            continue
        noised = laplace(float(value), sensitivity(m, rule, row.records) / per_measure)
        if m.fn == MeasureFn.COUNT:
            out[m.column] = max(0, round(noised))
        elif m.fn == MeasureFn.SUM:
            out[m.column] = noised
        else:
            measure = rule.measure(m.field)
            out[m.column] = clamp(noised, measure.bounds if measure else None)
    return replace(row, measures=out)
