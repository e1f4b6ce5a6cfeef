"""R11: tumbling windows, watermark, lateness, idle close, clamping, k-suppression and noise."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bus.operations.noise import noisy_row, sensitivity
from bus.operations.rules import AnalysisRule, MeasureRule
from bus.operations.spec import OperationSpec, spec_from_json
from bus.operations.windows import Observation, WindowState, clamp, observe
from bus.vocab import MeasureFn

LO, HI = 0.0, 100.0
RULE = AnalysisRule(
    dimensions=("county", "industry"),
    measures=(
        MeasureRule("licence_no", (MeasureFn.COUNT,), None),
        MeasureRule("capital", (MeasureFn.SUM, MeasureFn.AVG, MeasureFn.MIN, MeasureFn.MAX), (LO, HI)),
    ),
    subject_field="credit_code",
    min_group_size=2,
    windows=(10,),
    epsilon_per_day=5.0,
)
ALL_MEASURES = [{"field": "licence_no", "fn": "count"}] + [
    {"field": "capital", "fn": fn} for fn in ("sum", "avg", "min", "max")
]


def make_spec(
    k: int = 2,
    group_by: tuple[str, ...] = ("county",),
    epsilon: float | None = None,
    filters: list[dict[str, Any]] | None = None,
) -> OperationSpec:
    return spec_from_json(
        {
            "dataset": "d",
            "group_by": list(group_by),
            "measures": ALL_MEASURES,
            "filters": filters or [],
            "window_seconds": 10,
            "k": k,
            "epsilon": epsilon,
        }
    )


def rec(subject: str, county: str = "a", capital: float = 1.0, industry: str = "x") -> dict[str, Any]:
    return {
        "licence_no": f"L-{subject}",
        "credit_code": subject,
        "county": county,
        "capital": capital,
        "industry": industry,
    }


def feed(state: WindowState, spec: OperationSpec, items: list[tuple[int, dict[str, Any]]]) -> None:
    for t, value in items:
        obs = observe(spec, RULE, t, value, str)
        if obs is not None:
            state.add(obs)


def test_r11_window_closes_only_after_watermark_passes_end() -> None:
    spec = make_spec()
    state = WindowState(spec, lateness_ms=2000)
    feed(state, spec, [(1000, rec("s1")), (2000, rec("s2")), (9999, rec("s3"))])
    assert state.close() == []
    feed(state, spec, [(11_000, rec("s4"))])  # watermark 9 000: window [0, 10 000) still open
    assert state.close() == []
    feed(state, spec, [(12_000, rec("s5"))])  # watermark 10 000: closes
    (closed,) = state.close()
    assert (closed.start_ms, closed.end_ms, closed.records) == (0, 10_000, 3)
    (row,) = closed.rows
    assert row.measures["count_licence_no"] == 3 and row.subjects == 3 and row.group == {"county": "a"}


def test_r11_late_record_within_lateness_counts_and_after_close_is_dropped() -> None:
    spec = make_spec()
    state = WindowState(spec, lateness_ms=2000)
    feed(state, spec, [(1000, rec("s1")), (11_000, rec("s2")), (5000, rec("s3"))])  # late but allowed
    feed(state, spec, [(12_500, rec("s4"))])
    (closed,) = state.close()
    assert closed.records == 2
    feed(state, spec, [(3000, rec("s5"))])  # its window has been released: never counted twice
    assert state.late == 1 and state.close() == []


def test_r11_idle_close_releases_quiet_stream() -> None:
    spec = make_spec()
    state = WindowState(spec, lateness_ms=1000)
    feed(state, spec, [(1000, rec("s1")), (2000, rec("s2"))])
    state.advance(10_500)
    assert state.close() == []
    state.advance(11_000)
    (closed,) = state.close()
    assert closed.rows[0].measures["count_licence_no"] == 2


def test_r11_group_below_k_distinct_subjects_is_suppressed() -> None:
    """Many records of ONE subject are still one subject: suppressed below k distinct subjects."""
    spec = make_spec(k=3)
    state = WindowState(spec)
    feed(state, spec, [(t, rec("same", county="small")) for t in range(10)])
    feed(state, spec, [(t, rec(f"s{t}", county="big")) for t in range(3)])
    state.advance(10_000)
    (closed,) = state.close()
    assert [r.group for r in closed.rows] == [{"county": "big"}]
    assert closed.suppressed == 1 and closed.records == 13


def test_r11_values_clamped_and_filters_applied() -> None:
    spec = make_spec(filters=[{"field": "industry", "op": "in", "value": ["x"]}])
    state = WindowState(spec)
    feed(
        state,
        spec,
        [
            (1, rec("s1", capital=-50)),
            (2, rec("s2", capital=1e9)),
            (3, rec("s3", capital=7, industry="other")),
        ],
    )
    state.advance(10_000)
    (row,) = state.close()[0].rows
    assert row.measures == {
        "count_licence_no": 2,
        "sum_capital": 100.0,
        "avg_capital": 50.0,
        "min_capital": 0.0,
        "max_capital": 100.0,
    }


def test_r11_missing_values_and_subjects() -> None:
    spec = make_spec()
    assert observe(spec, RULE, 1, {**rec("s"), "credit_code": None}, str) is None
    obs = observe(spec, RULE, 1, {**rec("s"), "capital": None}, str)
    assert obs is not None and obs.values["capital"] is None
    state = WindowState(spec, 0)
    state.add(obs)
    state.add(Observation(2, ("a",), "t", {"licence_no": 1.0, "capital": None}))
    state.advance(10_000)
    (row,) = state.close()[0].rows
    assert row.measures["avg_capital"] is None and row.measures["count_licence_no"] == 2


def test_r11_state_round_trips_through_json() -> None:
    spec = make_spec()
    state = WindowState(spec, 500)
    feed(state, spec, [(1, rec("s1")), (15_000, rec("s2", county="b"))])
    state.advance(10_600)
    state.close()
    again = WindowState.from_json(spec, 500, state.to_json())
    assert again.to_json() == state.to_json()


def test_r11_noise_sensitivities() -> None:
    spec = make_spec()
    by_col = {m.column: m for m in spec.measures}
    assert sensitivity(by_col["count_licence_no"], RULE, 10) == 1.0
    assert sensitivity(by_col["sum_capital"], RULE, 10) == HI
    assert sensitivity(by_col["avg_capital"], RULE, 10) == pytest.approx(HI / 10)
    assert sensitivity(by_col["max_capital"], RULE, 10) == HI - LO


def test_r11_noise_keeps_bounds_and_counts_integral() -> None:
    spec = make_spec(epsilon=0.01)  # very noisy
    state = WindowState(spec)
    feed(state, spec, [(t, rec(f"s{t}", capital=t)) for t in range(5)])
    state.advance(10_000)
    (row,) = state.close()[0].rows
    for _ in range(50):
        noised = noisy_row(row, spec, RULE, 0.01).measures
        assert isinstance(noised["count_licence_no"], int) and noised["count_licence_no"] >= 0
        for col in ("avg_capital", "min_capital", "max_capital"):
            assert LO <= noised[col] <= HI  # type: ignore[operator]


events = st.lists(
    st.tuples(
        st.integers(0, 60_000),  # event time
        st.sampled_from(["s0", "s1", "s2", "s3", "s4", "s5"]),  # subject
        st.sampled_from(["a", "b", "c"]),  # county
        st.floats(-1e4, 1e4, allow_nan=False),  # capital
        st.sampled_from(["x", "y"]),  # industry
    ),
    max_size=80,
)


@settings(max_examples=150, deadline=None)
@given(
    items=events,
    k=st.integers(1, 6),
    lateness=st.integers(0, 15_000),
    group_by=st.sampled_from([(), ("county",), ("county", "industry")]),
    idle=st.lists(st.integers(0, 80_000), max_size=4),
    noise=st.booleans(),
)
def test_r11_property_no_row_below_k_and_no_value_outside_bounds(
    items: list[tuple[int, str, str, float, str]],
    k: int,
    lateness: int,
    group_by: tuple[str, ...],
    idle: list[int],
    noise: bool,
) -> None:
    """R11: for random streams and specs, every released row has >= k distinct subjects, every value lies
    in the clamped bounds, and every accepted record is released or suppressed exactly once."""
    spec = make_spec(k=k, group_by=group_by, epsilon=1.0 if noise else None)
    state = WindowState(spec, lateness)
    released: list[Any] = []
    accepted = 0
    ticks = sorted(idle)
    for i, (t, subject, county, capital, industry) in enumerate(items):
        obs = observe(spec, RULE, t, rec(subject, county, capital, industry), str)
        assert obs is not None
        accepted += state.add(obs)
        if ticks and i % 7 == 0:
            state.advance(ticks.pop(0))
        released.extend(state.close())
    state.advance(10**9)
    released.extend(state.close())
    assert sum(w.records for w in released) == accepted
    assert accepted + state.late == len(items)
    seen: dict[tuple[int, tuple[Any, ...]], int] = defaultdict(int)
    for w in released:
        for row in w.rows:
            assert row.subjects >= k
            seen[(row.window_start_ms, tuple(row.group.values()))] += 1
            m = noisy_row(row, spec, RULE, 1.0).measures if noise else row.measures
            for col in ("avg_capital", "min_capital", "max_capital"):
                assert LO <= m[col] <= HI  # type: ignore[operator]
            if not noise:
                n = row.measures["count_licence_no"]
                assert n == row.records
                assert n * LO <= row.measures["sum_capital"] <= n * HI  # type: ignore[operator]
    assert all(v == 1 for v in seen.values())  # no window-group is released twice


def test_r11_clamp() -> None:
    assert clamp(5, None) == 5 and clamp(-1, (0, 1)) == 0 and clamp(2, (0, 1)) == 1
