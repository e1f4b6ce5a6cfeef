"""Tumbling windows on event time with k-suppression and clamping (R11): the executor's state, pure.

A record's event time is its accepted-at time. Windows ``[s, s + W)`` close when the watermark (the
latest event time seen minus the allowed lateness) passes their end, or, when the stream is quiet,
when the wall clock does (``advance``). A closed window releases one row per group that has at least
``k`` distinct subjects; the rest are suppressed. Every measured value is clamped to the rule's bounds
before it is accumulated, so no released value can leave them. Subjects are kept as keyed tokens,
never raw values, and the whole state round-trips through JSON for the checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bus.operations.rules import AnalysisRule
from bus.operations.spec import OperationSpec
from bus.vocab import MeasureFn

Group = tuple[Any, ...]


def clamp(value: float, bounds: tuple[float, float] | None) -> float:
    if bounds is None:
        return value
    return min(max(value, bounds[0]), bounds[1])


@dataclass(frozen=True)
class Observation:
    """What one accepted record contributes: its event time, group, subject token and clamped values."""

    event_ms: int
    group: Group
    subject: str
    values: Mapping[str, float | None]  # measure field -> clamped value (None: absent)


def observe(
    spec: OperationSpec,
    rule: AnalysisRule,
    event_ms: int,
    value: Mapping[str, Any],
    token: Callable[[Any], str],
) -> Observation | None:
    """The record as the operation sees it, or None when its filters exclude it or it has no subject."""
    for f in spec.filters:
        if not f.matches(value.get(f.field)):
            return None
    subject = value.get(rule.subject_field)
    if subject is None:
        return None
    values: dict[str, float | None] = {}
    for m in spec.measures:
        raw = value.get(m.field)
        if m.fn == MeasureFn.COUNT:
            values.setdefault(m.field, None if raw is None else 1.0)
            continue
        measure = rule.measure(m.field)
        bounds = measure.bounds if measure else None
        values[m.field] = None if raw is None or isinstance(raw, bool) else clamp(float(raw), bounds)
    return Observation(event_ms, tuple(value.get(g) for g in spec.group_by), token(subject), values)


@dataclass
class Accumulator:
    records: int = 0
    n: dict[str, int] = field(default_factory=dict)  # non-null values per measure field
    sums: dict[str, float] = field(default_factory=dict)
    mins: dict[str, float] = field(default_factory=dict)
    maxs: dict[str, float] = field(default_factory=dict)
    subjects: set[str] = field(default_factory=set)

    def add(self, obs: Observation) -> None:
        self.records += 1
        self.subjects.add(obs.subject)
        for name, v in obs.values.items():
            if v is None:
                continue
            self.n[name] = self.n.get(name, 0) + 1
            self.sums[name] = self.sums.get(name, 0.0) + v
            self.mins[name] = min(self.mins.get(name, v), v)
            self.maxs[name] = max(self.maxs.get(name, v), v)

    def measure(self, fn: MeasureFn, name: str) -> float | int | None:
        n = self.n.get(name, 0)
        if fn == MeasureFn.COUNT:
            return n
        if n == 0:
            return None
        if fn == MeasureFn.SUM:
            return self.sums[name]
        if fn == MeasureFn.AVG:
            return self.sums[name] / n
        return self.mins[name] if fn == MeasureFn.MIN else self.maxs[name]

    def to_json(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "n": self.n,
            "sums": self.sums,
            "mins": self.mins,
            "maxs": self.maxs,
            "subjects": sorted(self.subjects),
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Accumulator:
        return cls(
            int(doc["records"]),
            dict(doc["n"]),
            dict(doc["sums"]),
            dict(doc["mins"]),
            dict(doc["maxs"]),
            set(doc["subjects"]),
        )


@dataclass(frozen=True)
class ResultRow:
    window_start_ms: int
    window_end_ms: int
    group: dict[str, Any]
    measures: dict[str, float | int | None]  # column (``count_x``) -> value
    subjects: int  # distinct subjects (>= k); never published, kept for lineage and tests
    records: int  # how many source records the row aggregates (lineage names the count, not which)


@dataclass(frozen=True)
class ClosedWindow:
    start_ms: int
    end_ms: int
    rows: tuple[ResultRow, ...]
    suppressed: int  # groups dropped for fewer than k distinct subjects
    records: int  # records of the window, released or not


@dataclass
class WindowState:
    """Open windows of one operation. ``add`` and ``advance`` are the only inputs; ``close`` the output."""

    spec: OperationSpec
    lateness_ms: int = 0
    max_event_ms: int | None = None
    watermark_ms: int | None = None
    closed_until_ms: int | None = None  # windows starting before this are closed: later records are late
    late: int = 0
    open: dict[tuple[int, Group], Accumulator] = field(default_factory=dict)

    @property
    def window_ms(self) -> int:
        return self.spec.window_seconds * 1000

    def window_of(self, event_ms: int) -> int:
        return event_ms - event_ms % self.window_ms

    def add(self, obs: Observation) -> bool:
        """Accumulate one observation; False (counted in ``late``) when its window has closed."""
        start = self.window_of(obs.event_ms)
        if self.closed_until_ms is not None and start < self.closed_until_ms:
            self.late += 1
            return False
        self.open.setdefault((start, obs.group), Accumulator()).add(obs)
        if self.max_event_ms is None or obs.event_ms > self.max_event_ms:
            self.max_event_ms = obs.event_ms
            self._raise_watermark(obs.event_ms - self.lateness_ms)
        return True

    def advance(self, now_ms: int) -> None:
        """The wall clock moved while no record came: a quiet stream still closes its windows."""
        self._raise_watermark(now_ms - self.lateness_ms)

    def _raise_watermark(self, to_ms: int) -> None:
        if self.watermark_ms is None or to_ms > self.watermark_ms:
            self.watermark_ms = to_ms

    def close(self) -> list[ClosedWindow]:
        """Every window whose end the watermark passed, oldest first, with only the groups of >= k."""
        if self.watermark_ms is None:
            return []
        ready = sorted({s for s, _ in self.open if s + self.window_ms <= self.watermark_ms})
        out = []
        for start in ready:
            keys = sorted((k for k in self.open if k[0] == start), key=lambda k: repr(k[1]))
            rows, suppressed, records = [], 0, 0
            for key in keys:
                acc = self.open.pop(key)
                records += acc.records
                if len(acc.subjects) < self.spec.k:
                    suppressed += 1
                    continue
                rows.append(self._row(start, key[1], acc))
            out.append(ClosedWindow(start, start + self.window_ms, tuple(rows), suppressed, records))
        closed_to = self.window_of(self.watermark_ms)
        if self.closed_until_ms is None or closed_to > self.closed_until_ms:
            self.closed_until_ms = closed_to
        return out

    def _row(self, start: int, group: Group, acc: Accumulator) -> ResultRow:
        return ResultRow(
            window_start_ms=start,
            window_end_ms=start + self.window_ms,
            group=dict(zip(self.spec.group_by, group, strict=True)),
            measures={m.column: acc.measure(m.fn, m.field) for m in self.spec.measures},
            subjects=len(acc.subjects),
            records=acc.records,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "max_event_ms": self.max_event_ms,
            "watermark_ms": self.watermark_ms,
            "closed_until_ms": self.closed_until_ms,
            "late": self.late,
            "open": [{"start": s, "group": list(g), "acc": a.to_json()} for (s, g), a in self.open.items()],
        }

    @classmethod
    def from_json(cls, spec: OperationSpec, lateness_ms: int, doc: dict[str, Any] | None) -> WindowState:
        state = cls(spec, lateness_ms)
        if not doc:
            return state
        state.max_event_ms = doc.get("max_event_ms")
        state.watermark_ms = doc.get("watermark_ms")
        state.closed_until_ms = doc.get("closed_until_ms")
        state.late = int(doc.get("late", 0))
        for item in doc.get("open", []):
            state.open[(int(item["start"]), tuple(item["group"]))] = Accumulator.from_json(item["acc"])
        return state
