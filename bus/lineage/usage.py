"""Usage metering (R18): records and bytes published, refused, delivered and consumed, per hour.

Counters, not a scan of the lineage tables: ``LineageRecorder`` adds each batch's totals to one row
per (hour, direction, dataset, grant, agency) in the same transaction as the lineage rows, with one
upsert per batch. So metering costs nothing per record, answers in milliseconds, and survives the
lineage retention sweep (counters hold no record ids or personal data).

Directions: ``published`` and ``refused`` (agency = publisher, no grant), ``delivered`` and
``consumed`` (agency = the grantee).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from bus.store.models import UsageHour

DIRECTIONS = ("published", "refused", "delivered", "consumed")
Key = tuple[datetime, str, str, str, str]  # (time, direction, dataset, grant, agency)


def hour_of(at: datetime) -> datetime:
    return at.replace(minute=0, second=0, microsecond=0)


def add_usage(session: Session, items: Sequence[tuple[Key, int]]) -> None:
    """Add one record of ``size`` bytes per item to its hourly counter (one statement per batch)."""
    totals: dict[Key, list[int]] = {}
    for key, size in items:
        acc = totals.get(key)
        if acc is None:
            totals[key] = [1, size]
        else:
            acc[0] += 1
            acc[1] += size
    add_usage_totals(session, totals)


def add_usage_totals(session: Session, counted: dict[Key, list[int]]) -> None:
    """Add ``[records, bytes]`` to the hourly counter of each key (its time is rounded down to the hour)."""
    totals: dict[Key, list[int]] = {}
    hours: dict[datetime, datetime] = {}  # a batch's rows mostly share one timestamp
    for (at, direction, dataset, grant, agency), (records, size) in counted.items():
        hour = hours.get(at)
        if hour is None:
            hour = hours[at] = hour_of(at)
        key = (hour, direction, dataset, grant, agency)
        acc = totals.get(key)
        if acc is None:
            totals[key] = [records, size]
        else:
            acc[0] += records
            acc[1] += size
    if not totals:
        return
    values = [
        {
            "hour": k[0],
            "direction": k[1],
            "dataset_id": k[2],
            "grant_id": k[3],
            "agency_id": k[4],
            "records": v[0],
            "bytes": v[1],
        }
        for k, v in sorted(totals.items())
    ]  # sorted: no deadlocks
    dialect = session.get_bind().dialect.name
    stmt = _UPSERT.get(dialect)
    if stmt is None:
        ins = (pg_insert if dialect == "postgresql" else sqlite_insert)(UsageHour)
        stmt = _UPSERT[dialect] = ins.on_conflict_do_update(
            index_elements=["hour", "direction", "dataset_id", "grant_id", "agency_id"],
            set_={
                "records": UsageHour.records + ins.excluded.records,
                "bytes": UsageHour.bytes + ins.excluded.bytes,
            },
        )
    session.connection().execute(stmt, values)  # executemany of one cached statement


_UPSERT: dict[str, Any] = {}


def query_usage(
    session: Session,
    *,
    dataset: str | None = None,
    grant: str | None = None,
    agency: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    by: str = "hour",
) -> dict[str, Any]:
    """Counters matching the filters: per hour (``by="hour"``) or summed over the period (``"total"``).

    ``since`` is rounded down to its hour; ``until`` is exclusive.
    """
    conds = []
    if dataset:
        conds.append(UsageHour.dataset_id == dataset)
    if grant:
        conds.append(UsageHour.grant_id == grant)
    if agency:
        conds.append(UsageHour.agency_id == agency)
    if since is not None:
        conds.append(UsageHour.hour >= hour_of(since))
    if until is not None:
        conds.append(UsageHour.hour < until)
    keys: list[Any] = [UsageHour.direction, UsageHour.dataset_id, UsageHour.grant_id, UsageHour.agency_id]
    if by == "hour":
        keys.insert(0, UsageHour.hour)
    stmt = (
        select(*keys, func.sum(UsageHour.records), func.sum(UsageHour.bytes))
        .where(*conds)
        .group_by(*keys)
        .order_by(*keys)
    )
    rows: list[dict[str, Any]] = []
    totals = {d: {"records": 0, "bytes": 0} for d in DIRECTIONS}
    for r in session.execute(stmt):
        head: list[Any] = list(r)
        size = head.pop()  # rows end with (records, bytes)
        records = head.pop()
        row: dict[str, Any] = {}
        if by == "hour":
            row["hour"] = head.pop(0).isoformat()
        direction, ds, gr, ag = head
        row.update(
            {
                "direction": direction,
                "dataset": ds,
                "grant": gr or None,
                "agency": ag,
                "records": int(records),
                "bytes": int(size),
            }
        )
        rows.append(row)
        totals.setdefault(direction, {"records": 0, "bytes": 0})
        totals[direction]["records"] += int(records)
        totals[direction]["bytes"] += int(size)
    return {
        "by": by,
        "from": since.isoformat() if since else None,
        "to": until.isoformat() if until else None,
        "filters": {"dataset": dataset, "grant": grant, "agency": agency},
        "rows": rows,
        "totals": totals,
    }
