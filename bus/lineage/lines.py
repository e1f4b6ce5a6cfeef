"""Lineage rows as the recorder and the verifier see them: columns, normalisation, canonical lines, digests.

Pure code shared by ``recorder`` (which writes rows and the digests of their groups) and ``integrity``
(which recomputes them): one definition of what a row's canonical line is.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any

from bus.lineage.evidence import micros
from bus.vocab import LineageOutcome

ACCEPTED = LineageOutcome.ACCEPTED.value
BATCH_LAYOUT = "batch"  # lineage.layout of events whose digest covers batch rows (evidence.batch_line)

# Canonical column order per table: what the digest covers (everything but ids and audit_seq).
COLUMNS: dict[str, tuple[str, ...]] = {
    "records": (
        "record_id",
        "dataset_id",
        "publisher_id",
        "published_at",
        "trace_id",
        "outcome",
        "schema_version",
        "size",
        "partition",
        "offset",
    ),
    "deliveries": (
        "record_id",
        "grant_id",
        "dataset_id",
        "agency_id",
        "scenario_code",
        "delivered_at",
        "partition",
        "offset",
        "size",
        "trace_id",
    ),
    "consumptions": (
        "record_id",
        "grant_id",
        "agency_id",
        "via",
        "consumed_at",
        "size",
        "dataset_id",
        "receipt_id",
    ),
}
TIME_COLUMN = {"records": "published_at", "deliveries": "delivered_at", "consumptions": "consumed_at"}
_DEFAULTS: dict[str, Any] = {
    "trace_id": None,
    "size": 0,
    "partition": None,
    "offset": None,
    "dataset_id": None,
    "schema_version": 1,
    "receipt_id": None,
}
_INTS = frozenset({"schema_version", "size", "partition", "offset"})


def utc(value: datetime | int | float) -> datetime:
    """A timezone-aware UTC datetime from a datetime (naive = UTC) or epoch milliseconds."""
    if isinstance(value, datetime):
        if value.tzinfo is UTC:
            return value
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return datetime.fromtimestamp(value / 1000, UTC)


def canonical_line(table: str, values: Sequence[Any]) -> str:
    """One row as an unambiguous line (``repr`` of its values, times as epoch microseconds)."""
    return repr(tuple(micros(v) if isinstance(v, datetime) else v for v in values))


def digest(lines: Iterable[str]) -> str:
    """Order-independent digest of a group of rows."""
    return hashlib.sha256("\n".join(sorted(lines)).encode()).hexdigest()


_COLSETS = {t: frozenset(cols) for t, cols in COLUMNS.items()}
_TABLE_INTS = {t: tuple(c for c in cols if c in _INTS) for t, cols in COLUMNS.items()}


def tuple_getter(cols: Sequence[str]) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    """``row -> tuple of row[c] for c in cols`` in C (``itemgetter``), always a tuple."""
    if not cols:
        return lambda _row: ()
    if len(cols) == 1:
        get_one = itemgetter(cols[0])
        return lambda row: (get_one(row),)
    return itemgetter(*cols)


def _around_time(table: str, extra: tuple[str, ...] = ()) -> tuple[Callable[..., tuple[Any, ...]], ...]:
    """Getters of the columns before and after the time column (plus ``extra`` columns at the end)."""
    cols = (*COLUMNS[table], *extra)
    i = cols.index(TIME_COLUMN[table])
    return tuple_getter(cols[:i]), tuple_getter(cols[i + 1 :])


_LINE_PARTS = {t: _around_time(t) for t in COLUMNS}
INSERT_PARTS = {t: _around_time(t, ("audit_seq",)) for t in COLUMNS}


def normalise(table: str, row: dict[str, Any]) -> dict[str, Any]:
    if row.keys() == _COLSETS[table]:  # the data plane's rows: exactly the columns, copied in C
        out = dict(row)
    else:
        out = {c: row.get(c, _DEFAULTS.get(c)) for c in COLUMNS[table]}
    tcol = TIME_COLUMN[table]
    at = out[tcol]
    if type(at) is not datetime or at.tzinfo is not UTC:
        out[tcol] = utc(at)
    for c in _TABLE_INTS[table]:
        v = out[c]
        if v is not None and type(v) is not int:
            out[c] = int(v)
    return out


def group_rows(
    rows: list[dict[str, Any]], key: Callable[[dict[str, Any]], tuple[str, ...]]
) -> dict[tuple[str, ...], list[dict[str, Any]]]:
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(key(r), []).append(r)
    return groups


def summary(table: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    ids = [r["record_id"] for r in rows]
    tcol = TIME_COLUMN[table]
    before, after = _LINE_PARTS[table]
    stamps: dict[datetime, int] = {}  # a batch's rows mostly share one timestamp
    lines = []
    for r in rows:
        at = r[tcol]
        us = stamps.get(at)
        if us is None:
            us = stamps[at] = micros(at)
        lines.append(repr((*before(r), us, *after(r))))  # == canonical_line(table, the row's values)
    return {
        "count": len(rows),
        "bytes": sum(r["size"] for r in rows),
        "first_record": min(ids),
        "last_record": max(ids),
        "lineage": {
            "table": table,
            "rows": len(rows),
            "digest": digest(lines),
        },
    }
