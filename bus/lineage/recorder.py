"""Lineage rows, written in batches by the data plane (one transaction per batch, never per record).

Each call writes, in one transaction:

- the lineage evidence: one row per published and per consumed record, and deliveries per batch (one
  row per grant and partition, ``bus.lineage.evidence``: a row per record and grant cost ~10 µs each);
- one audit event per group of rows (per dataset and publisher, per grant, per grant and path), in the
  same hash chain as the control plane, carrying counts, bytes, the record-id range and a digest of the
  rows; each row keeps the ``audit_seq`` of its event, so ``audit.verify`` detects an edited, removed or
  added lineage row (R14, R15);
- the hourly usage counters of the rows (R18), so metering survives the lineage retention sweep.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bus.lineage import audit, evidence
from bus.lineage.batches import insert_batches
from bus.lineage.evidence import EPOCH
from bus.lineage.lines import (
    ACCEPTED,
    BATCH_LAYOUT,
    COLUMNS,
    INSERT_PARTS,
    TIME_COLUMN,
    canonical_line,
    digest,
    group_rows,
    micros,
    normalise,
    summary,
    tuple_getter,
    utc,
)
from bus.lineage.rows import ConsumedRows, DeliveredRow, DeliveredRows, PublishedRow, PublishedRows
from bus.lineage.usage import Key, add_usage, add_usage_totals
from bus.store import Store
from bus.store.models import ConsumptionLineage, DeliveryLineage, Grant, RecordLineage
from bus.vocab import LineageOutcome

TABLES: dict[str, Any] = {
    "records": RecordLineage,
    "deliveries": DeliveryLineage,
    "consumptions": ConsumptionLineage,
}
# Audit actions whose events attest lineage rows, per table.
ACTIONS: dict[str, tuple[str, ...]] = {
    "records": ("publish.accepted", "publish.refused"),
    "deliveries": ("delivery.batch",),
    "consumptions": ("consumption.batch",),
}
__all__ = [  # what other modules import from here (the row vocabulary lives in ``lines``)
    "ACCEPTED",
    "ACTIONS",
    "BATCH_LAYOUT",
    "COLUMNS",
    "EPOCH",
    "TABLES",
    "TIME_COLUMN",
    "LineageRecorder",
    "canonical_line",
    "digest",
    "insert_rows",
    "micros",
    "position_callback",
    "utc",
]
_VALUES = tuple_getter(COLUMNS["deliveries"])
_GROUP = itemgetter(1, 2, 3, 4, 6)  # grant, dataset, agency, scenario, partition
_OPTIONAL_INT = frozenset({int, type(None)})


def _delivery_values(rows: DeliveredRows) -> list[evidence.DeliveryValues]:
    """The rows as value tuples, normalised (UTC datetimes, ints) only when some row needs it.

    The data plane's rows carry every column with clean types: checked per column in C, not per row.
    """
    try:
        values: list[Any] = list(map(_VALUES, rows))  # type: ignore[arg-type]  # a TypedDict is a dict
    except KeyError:  # some column left to its default
        values = []
    if values:
        times, partitions, offsets, sizes = list(zip(*values, strict=True))[5:9]
        if (
            set(map(type, times)) == {datetime}
            and all(t.tzinfo is UTC for t in set(times))
            and set(map(type, partitions)) <= _OPTIONAL_INT
            and set(map(type, offsets)) <= _OPTIONAL_INT
            and set(map(type, sizes)) == {int}
        ):
            return values
    return [_VALUES(normalise("deliveries", r)) for r in rows]  # type: ignore[arg-type]


def _delivery_groups(rows: DeliveredRows) -> dict[str, list[list[evidence.DeliveryValues]]]:
    """Per grant (in order of first appearance), the groups of rows sharing every shared column."""
    if not rows:
        return {}
    groups: dict[tuple[Any, ...], list[evidence.DeliveryValues]] = {}
    key = _GROUP
    for v in _delivery_values(rows):
        k = key(v)
        grp = groups.get(k)
        if grp is None:
            groups[k] = [v]
        else:
            grp.append(v)
    per_grant: dict[str, list[list[evidence.DeliveryValues]]] = {}
    for k, grp in groups.items():
        per_grant.setdefault(k[0], []).append(grp)
    return per_grant


def _add_delivery_usage(
    usage: dict[Key, list[int]], b: evidence.DeliveryBatch, rows: list[evidence.DeliveryValues]
) -> None:
    """A batch's records and bytes into the hourly counters (per record only when its times differ)."""
    items = [(b.delivered_at, b.records, b.size)] if b.times is None else [(v[5], 1, v[8]) for v in rows]
    for at, records, size in items:
        acc = usage.setdefault((at, "delivered", b.dataset_id, b.grant_id, b.agency_id), [0, 0])
        acc[0] += records
        acc[1] += size


def _delivery_event(encoded: list[evidence.DeliveryBatch], parts: list[list[Any]]) -> dict[str, Any]:
    """The ``delivery.batch`` event of one grant: counts, bytes, id range and the batches' digest."""
    first = encoded[0]
    ids = [v[0] for grp in parts for v in grp]
    return {
        "dataset": first.dataset_id,
        "agency": first.agency_id,
        "scenario": first.scenario_code,
        "count": len(ids),
        "bytes": sum(b.size for b in encoded),
        "first_record": min(ids),
        "last_record": max(ids),
        "lineage": {
            "table": "deliveries",
            "rows": len(ids),
            "digest": digest(evidence.batch_line(b) for b in encoded),
            "layout": BATCH_LAYOUT,
            "batches": len(encoded),
        },
    }


def position_callback(
    row: PublishedRow | DeliveredRow | dict[str, Any], on_report: Callable[[Any, Any], None]
) -> Callable[[Any, Any], None]:
    """A librdkafka delivery callback that writes the produced record's partition and offset into its
    lineage ``row`` (before the batch's lineage is written), then hands every report, failed or not, to
    ``on_report`` (which counts failures, or waits for all of a request's records)."""

    def delivered(err: Any, msg: Any) -> None:
        if err is None:
            row["partition"] = msg.partition()
            row["offset"] = msg.offset()
        on_report(err, msg)

    return delivered


class LineageRecorder:
    """Writes lineage in batches. Thread-safe; one per process is enough."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._grant_dataset: dict[str, str] = {}
        self._lock = threading.Lock()

    def published(self, rows: PublishedRows) -> None:
        """Rows of ``RecordLineage``: record_id, dataset_id, publisher_id, published_at, trace_id, outcome
        (``accepted`` or the refusal code), schema_version, size, partition, offset.

        Audit: one ``publish.accepted`` / ``publish.refused`` event per dataset and publisher.
        """
        norm = [normalise("records", r) for r in rows]  # type: ignore[arg-type]
        if not norm:
            return
        groups = group_rows(
            norm,
            lambda r: (
                r["dataset_id"],
                r["publisher_id"],
                LineageOutcome.ACCEPTED if r["outcome"] == ACCEPTED else LineageOutcome.REFUSED,
            ),
        )
        events = []
        for (dataset, publisher, outcome), grp in groups.items():
            data = {"dataset": dataset, **summary("records", grp)}
            if outcome == LineageOutcome.REFUSED:
                codes: dict[str, int] = {}
                for r in grp:
                    codes[r["outcome"]] = codes.get(r["outcome"], 0) + 1
                data["codes"] = codes
            events.append(audit.Event(publisher, f"publish.{outcome}", "dataset", dataset, data))
        with self.store.session() as s:
            self._write(s, "records", groups, events)
            add_usage(
                s,
                [
                    (
                        (
                            r["published_at"],
                            "published" if r["outcome"] == ACCEPTED else "refused",
                            r["dataset_id"],
                            "",
                            r["publisher_id"],
                        ),
                        r["size"],
                    )
                    for r in norm
                ],
            )

    def delivered(self, rows: DeliveredRows) -> None:
        """Rows of one delivery each: record_id, grant_id, dataset_id, agency_id, scenario_code,
        delivered_at, partition, offset, size, trace_id.

        Stored per batch (``bus.lineage.evidence``): one ``DeliveryLineage`` row per grant and
        partition, the record ids in ``lineage_delivery_keys`` once per distinct key. Audit: one
        ``delivery.batch`` event per grant, whose digest covers its batch rows (``layout: batch``).
        """
        groups = _delivery_groups(rows)
        if not groups:
            return
        events = []
        batches: list[list[evidence.DeliveryBatch]] = []
        usage: dict[Key, list[int]] = {}  # per (time, grant): a batch's rows share few of them
        for grant, parts in groups.items():
            encoded = [evidence.encode(grp) for grp in parts]
            batches.append(encoded)
            for b, grp in zip(encoded, parts, strict=True):
                _add_delivery_usage(usage, b, grp)
            events.append(
                audit.Event("bus", "delivery.batch", "grant", grant, _delivery_event(encoded, parts))
            )
        with self.store.session() as s:
            appended = audit.append_many(s, events)
            insert_batches(s, [(b, ev.seq) for grp, ev in zip(batches, appended, strict=True) for b in grp])
            add_usage_totals(s, usage)

    def consumed(self, rows: ConsumedRows) -> None:
        """Rows of ``ConsumptionLineage``: record_id, grant_id, agency_id, via (``bus.vocab.Via``:
        ``sdk``, ``http``, ``sse``, ``connector:<name>``), consumed_at, size, optional receipt_id;
        dataset_id is filled in from the grant when absent.

        Audit: one ``consumption.batch`` event per grant and path.
        """
        norm = [normalise("consumptions", r) for r in rows]  # type: ignore[arg-type]
        if not norm:
            return
        with self.store.session() as s:
            datasets = self._datasets_of(s, {r["grant_id"] for r in norm if r["dataset_id"] is None})
            for r in norm:
                if r["dataset_id"] is None:
                    r["dataset_id"] = datasets.get(r["grant_id"])
            groups = group_rows(norm, lambda r: (r["grant_id"], r["via"]))
            events = []
            for (grant, via), grp in groups.items():
                first = grp[0]
                data = {
                    "dataset": first["dataset_id"],
                    "agency": first["agency_id"],
                    "via": via,
                    **summary("consumptions", grp),
                }
                events.append(audit.Event(first["agency_id"], "consumption.batch", "grant", grant, data))
            self._write(s, "consumptions", groups, events)
            add_usage(
                s,
                [
                    (
                        (r["consumed_at"], "consumed", r["dataset_id"] or "", r["grant_id"], r["agency_id"]),
                        r["size"],
                    )
                    for r in norm
                ],
            )

    def _datasets_of(self, s: Session, grants: set[str]) -> dict[str, str]:
        with self._lock:
            missing = [g for g in grants if g not in self._grant_dataset]
        if missing:
            stmt = select(Grant.id, Grant.dataset_id).where(Grant.id.in_(missing))
            found = {gid: did for gid, did in s.execute(stmt)}
            with self._lock:
                self._grant_dataset.update(found)
        with self._lock:
            return {g: self._grant_dataset[g] for g in grants if g in self._grant_dataset}

    @staticmethod
    def _write(
        s: Session, table: str, groups: dict[tuple[str, ...], list[dict[str, Any]]], events: list[audit.Event]
    ) -> None:
        appended = audit.append_many(s, events)
        out: list[dict[str, Any]] = []
        for grp, event in zip(groups.values(), appended, strict=True):
            for r in grp:
                r["audit_seq"] = event.seq
            out.extend(grp)
        insert_rows(s, table, out)


_SQL: dict[tuple[str, str], str] = {}


def insert_rows(s: Session, table: str, rows: list[dict[str, Any]]) -> None:
    """One executemany straight through the driver (SQLite, psycopg), else SQLAlchemy Core.

    For the per-record tables (``records``, ``consumptions``); deliveries are batches
    (``batches.insert_batches``).

    SQLAlchemy's per-row parameter processing costs more than the insert itself here; values are
    already normalised (UTC datetimes, ints), and SQLite datetimes are written in the exact text
    format SQLAlchemy reads back.
    """
    cols = (*COLUMNS[table], "audit_seq")
    conn = s.connection()
    dialect = conn.dialect.name
    if dialect not in ("sqlite", "postgresql") or conn.dialect.driver != (
        "pysqlite" if dialect == "sqlite" else "psycopg"
    ):
        conn.execute(TABLES[table].__table__.insert(), rows)
        return
    sql = _SQL.get((dialect, table))
    if sql is None:
        mark = "?" if dialect == "sqlite" else "%s"
        names = ", ".join(f'"{c}"' for c in cols)
        sql = _SQL[(dialect, table)] = (
            f"INSERT INTO {TABLES[table].__tablename__} ({names}) VALUES ({', '.join([mark] * len(cols))})"
        )
    tcol = TIME_COLUMN[table]
    if dialect == "sqlite":
        texts: dict[datetime, str] = {}
        for r in rows:  # a batch's rows mostly share one timestamp: format each one once
            at = r[tcol]
            if at not in texts:
                texts[at] = at.strftime("%Y-%m-%d %H:%M:%S.%f")
        before, after = INSERT_PARTS[table]
        text = texts.__getitem__
        params = [(*before(r), text(r[tcol]), *after(r)) for r in rows]
    else:
        get = tuple_getter(cols)
        params = [get(r) for r in rows]
    conn.exec_driver_sql(sql, params)
