"""Who received data about this person or enterprise: a keyed index of subject values (R14, R12).

Each accepted record's fields whose ``semantic`` names an identifier (``person.id_number``,
``enterprise.credit_code``, ``licence.number``: ``bus.policy.fingerprint.is_identifier``; names, phones and
addresses are not indexed, they identify no one alone) are indexed as
``HMAC(derive(master, "subject-index", semantic), normalised value)``: the index never
holds the raw value, so a stolen store does not reveal whom the bus carried data about, and only a caller
that knows the value (and goes through the audited endpoint) can look it up. The answer joins the index
with the lineage answers of ``bus.lineage.queries.record_lineage``, never with the lineage tables.

``subject_keys`` is pure; ``index_batch`` and ``index_accepted`` write; ``lookup`` reads.
"""

from __future__ import annotations

import hashlib
import hmac
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from bus.catalog.schema import FieldSpec, catalog_fields
from bus.context import BusContext
from bus.errors import LineageNotFound
from bus.keys import derive
from bus.lineage import queries
from bus.policy.fingerprint import is_identifier
from bus.store.models import SchemaVersion, SubjectIndex

LABEL = "subject-index"
MAX_RECORDS = 500  # records one lookup reads at most (the answer says when it stopped there)


@dataclass(frozen=True)
class SubjectKey:
    """One keyed value of one record: what the index stores instead of the value."""

    semantic: str
    key: str  # hex HMAC-SHA256


@dataclass(frozen=True)
class IndexRow:
    dataset_id: str
    record_id: str
    semantic: str
    key: str


@dataclass
class Recipient:
    grant: str
    agency: str
    dataset: str
    scenario: dict[str, Any]
    records: int = 0
    first_at: str | None = None
    last_at: str | None = None


@dataclass
class SubjectAnswer:
    """Which datasets carried the subject, and which grants, agencies and scenarios received it, when."""

    semantic: str
    records: int
    truncated: bool
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)
    recipients: dict[str, Recipient] = field(default_factory=dict)
    items: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "semantic": self.semantic,
            "records": self.records,
            "truncated": self.truncated,
            "datasets": list(self.datasets.values()),
            "recipients": [vars(r) for r in self.recipients.values()],
            "items": self.items,
        }


def normalise(value: Any) -> str:
    """The form that is keyed: NFKC, trimmed, upper case (``11010519491231002x`` matches ``...002X``)."""
    return unicodedata.normalize("NFKC", str(value)).strip().upper()


@lru_cache(maxsize=256)
def _sub_key(secret: bytes, semantic: str) -> Any:
    """A ready HMAC of the semantic's sub-key (copied per value: the key schedule is computed once)."""
    return hmac.new(derive(secret, LABEL, semantic), digestmod=hashlib.sha256)


def semantic_key(secret: bytes, semantic: str, value: Any) -> str:
    """The keyed value of ``value`` on a field of ``semantic``: one sub-key per semantic."""
    mac = _sub_key(secret, semantic).copy()
    mac.update(normalise(value).encode())
    return str(mac.hexdigest())


def subject_keys(fields: Sequence[FieldSpec], record: dict[str, Any], secret: bytes) -> list[SubjectKey]:
    """The keys of one record: one per field with an identifier semantic and a non-empty scalar value."""
    out: list[SubjectKey] = []
    seen: set[tuple[str, str]] = set()
    for f in fields:
        if not f.semantic or not is_identifier(f.semantic):
            continue
        value = record.get(f.name)
        if isinstance(value, dict | list | bytes | bool) or value is None or normalise(value) == "":
            continue  # unions of records, arrays, bytes and flags identify no one
        k = SubjectKey(f.semantic, semantic_key(secret, f.semantic, value))
        if (k.semantic, k.key) not in seen:
            seen.add((k.semantic, k.key))
            out.append(k)
    return out


_COLUMNS = "dataset_id, record_id, semantic, value_key, indexed_at"
_DRIVERS = {("sqlite", "pysqlite"): "?", ("postgresql", "psycopg"): "%s"}  # else SQLAlchemy Core


def index_batch(session: Session, rows: Sequence[IndexRow]) -> None:
    """Write one batch of index rows in the caller's transaction: one executemany straight through the
    driver (SQLAlchemy's per-row parameter processing cost 5x the insert), else SQLAlchemy Core."""
    if not rows:
        return
    now = datetime.now(UTC)
    conn = session.connection()
    mark = _DRIVERS.get((conn.dialect.name, conn.dialect.driver))
    if mark is None:
        session.execute(
            insert(SubjectIndex),
            [
                {
                    "dataset_id": r.dataset_id,
                    "record_id": r.record_id,
                    "semantic": r.semantic,
                    "value_key": r.key,
                    "indexed_at": now,
                }
                for r in rows
            ],
        )
        return
    table = SubjectIndex.__tablename__
    if mark == "?":  # SQLite keeps datetimes as text in SQLAlchemy's format (read back as UTC)
        at = now.strftime("%Y-%m-%d %H:%M:%S.%f")
        conn.exec_driver_sql(
            f"INSERT INTO {table} ({_COLUMNS}) VALUES (?, ?, ?, ?, ?)",
            [(r.dataset_id, r.record_id, r.semantic, r.key, at) for r in rows],
        )
        return
    # PostgreSQL: one statement over arrays (an executemany is a round trip per row: 6x slower here)
    conn.exec_driver_sql(
        f"INSERT INTO {table} ({_COLUMNS}) SELECT d, r, s, k, %s FROM "
        "unnest(%s::varchar[], %s::varchar[], %s::varchar[], %s::varchar[]) AS t(d, r, s, k)",
        (
            now,
            [r.dataset_id for r in rows],
            [r.record_id for r in rows],
            [r.semantic for r in rows],
            [r.key for r in rows],
        ),
    )


def semantic_fields(session: Session, dataset_ids: Iterable[str]) -> dict[str, list[FieldSpec]]:
    """Fields with an identifier semantic in any schema version of each dataset (a record may be
    of an older version)."""
    out: dict[str, dict[str, FieldSpec]] = {}
    ids = sorted(set(dataset_ids))
    if not ids:
        return {}
    for sv in session.scalars(select(SchemaVersion).where(SchemaVersion.dataset_id.in_(ids))):
        dataset_id = sv.dataset_id
        for f in catalog_fields(sv.schema):
            if f.semantic and is_identifier(f.semantic):
                out.setdefault(str(dataset_id), {})[f.name] = f
    return {d: list(fs.values()) for d, fs in out.items()}


Accepted = tuple[str, str, list[dict[str, Any]], list[str]]  # (dataset, publisher, records, record ids)


def index_accepted(session: Session, secret: bytes, batches: Sequence[Accepted]) -> int:
    """Key and store the subjects of a batch's accepted records; returns how many rows it wrote."""
    by_dataset = semantic_fields(session, (b[0] for b in batches))
    rows: list[IndexRow] = []
    for dataset_id, _publisher, records, ids in batches:
        fields = by_dataset.get(dataset_id)
        if not fields:
            continue
        for record, record_id in zip(records, ids, strict=True):
            rows.extend(
                IndexRow(dataset_id, record_id, k.semantic, k.key)
                for k in subject_keys(fields, record, secret)
            )
    index_batch(session, rows)
    return len(rows)


def record_subjects(ctx: BusContext, batches: Sequence[Accepted]) -> int:
    """The one call of the data plane, after a batch is delivered: index its accepted records."""
    if not batches:
        return 0
    with ctx.store.session() as s:
        return index_accepted(s, ctx.master_secret, batches)


def _later(a: str | None, b: str | None) -> str | None:
    return max((x for x in (a, b) if x), default=None)


def _earlier(a: str | None, b: str | None) -> str | None:
    return min((x for x in (a, b) if x), default=None)


def lookup(
    session: Session, secret: bytes, semantic: str, value: str, limit: int = MAX_RECORDS
) -> SubjectAnswer:
    """Every record indexed under ``value`` on ``semantic``, with its deliveries (newest first)."""
    key = semantic_key(secret, semantic, value)
    found = (
        session.execute(
            select(SubjectIndex.record_id)
            .where(SubjectIndex.semantic == semantic, SubjectIndex.value_key == key)
            .order_by(SubjectIndex.id.desc())
            .limit(limit + 1)
        )
        .scalars()
        .all()
    )
    record_ids = list(dict.fromkeys(found))
    answer = SubjectAnswer(semantic, 0, len(record_ids) > limit)
    for record_id in record_ids[:limit]:
        try:
            rec = queries.record_lineage(session, record_id)
        except LineageNotFound:
            continue  # aged out by the retention sweep: the index row outlived its evidence
        answer.records += 1
        ds = answer.datasets.setdefault(
            rec["dataset"], {"dataset": rec["dataset"], "records": 0, "first_at": None, "last_at": None}
        )
        ds["records"] += 1
        ds["first_at"] = _earlier(ds["first_at"], rec["published_at"])
        ds["last_at"] = _later(ds["last_at"], rec["published_at"])
        for d in rec["deliveries"]:
            r = answer.recipients.setdefault(
                d["grant"], Recipient(d["grant"], d["agency"], rec["dataset"], d["scenario"])
            )
            r.records += 1
            r.first_at = _earlier(r.first_at, d["at"])
            r.last_at = _later(r.last_at, d["at"])
        answer.items.append(
            {
                "record_id": record_id,
                "dataset": rec["dataset"],
                "publisher": rec["publisher"],
                "published_at": rec["published_at"],
                "deliveries": [
                    {k: d[k] for k in ("grant", "agency", "scenario", "at")} for d in rec["deliveries"]
                ],
            }
        )
    return answer
