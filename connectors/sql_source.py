"""``sql-source``: new rows of one table of any SQLAlchemy database, read incrementally.

Rows are read in the order of a monotonically increasing column (a serial id or an update timestamp),
with a unique tie-break column (the primary key by default) so rows sharing a timestamp are neither
skipped nor read twice. The position is the last (incremental, tie-break) pair published, saved after
each batch is on the bus. The column must grow in commit order: a row committed later with a smaller
value than one already read is not picked up (use a commit timestamp or a trigger-set sequence).
A record's ``position_id`` is its row's (incremental, tie-break) values: rows read again after a crash
are published with the record ids they had the first time (see ``SourceRecordIds``).
"""

from __future__ import annotations

import base64
import json
import time
from datetime import date, datetime
from decimal import Decimal
from typing import Any, ClassVar

from pydantic import Field, field_validator
from sqlalchemy import MetaData, Table, and_, func, or_, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine

from connectors import _sql
from connectors._shape import RecordShaper
from connectors.base import (
    ConnectorConfig,
    PermanentFailure,
    Source,
    SourceBatch,
    SourceContext,
    SourceRecord,
    Unreadable,
)


class SqlSourceConfig(ConnectorConfig):
    url: str = Field(description="SQLAlchemy URL; its password is never shown back")
    table: str
    table_schema: str | None = Field(None, description="database schema of the table (PostgreSQL)")
    incremental_column: str = Field(description="a column that only grows: serial id or update timestamp")
    tiebreak_column: str | None = Field(
        None, description="unique column ordering equal values (default: the single-column primary key)"
    )
    mapping: dict[str, str] = Field(default_factory=dict, description="table column -> schema field")
    key_field: str | None = None
    poll_interval: float = Field(1.0, gt=0, le=3600)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        _sql.parse_url(v)
        return v

    @field_validator("table", "incremental_column")
    @classmethod
    def _ident(cls, v: str) -> str:
        return _sql.identifier(v, "name") or v

    @field_validator("table_schema", "tiebreak_column")
    @classmethod
    def _opt_ident(cls, v: str | None) -> str | None:
        return _sql.identifier(v, "name")


def encode_value(v: Any) -> Any:
    """A position value as JSON that decodes to the same type (datetimes stay datetimes)."""
    if isinstance(v, datetime):
        return {"$datetime": v.isoformat()}
    if isinstance(v, date):
        return {"$date": v.isoformat()}
    if isinstance(v, Decimal):
        return {"$decimal": str(v)}
    if isinstance(v, bytes):
        return {"$bytes": base64.b64encode(v).decode()}
    return v


def decode_value(v: Any) -> Any:
    if isinstance(v, dict):
        if "$datetime" in v:
            return datetime.fromisoformat(v["$datetime"])
        if "$date" in v:
            return date.fromisoformat(v["$date"])
        if "$decimal" in v:
            return Decimal(v["$decimal"])
        if "$bytes" in v:
            return base64.b64decode(v["$bytes"])
    return v


class SqlSource(Source):
    kind: ClassVar[str] = "sql-source"
    Config = SqlSourceConfig

    def __init__(self, name: str, config: SqlSourceConfig) -> None:  # type: ignore[override]
        super().__init__(name, config)
        self.cfg = config
        self._engine: Engine | None = None
        self._table: Table | None = None
        self._tiebreak: str | None = config.tiebreak_column
        self._shaper: RecordShaper | None = None
        self._last: Any = None
        self._last_tie: Any = None
        self._lag: int | None = None
        self._lag_at = 0.0

    def check_schema(self, schema: dict[str, Any]) -> None:
        RecordShaper(schema, self.cfg.mapping, self.cfg.key_field)

    def start(self, context: SourceContext, position: dict[str, Any]) -> None:
        self._shaper = RecordShaper(context.schema, self.cfg.mapping, self.cfg.key_field)
        self._last = decode_value(position.get("last"))
        self._last_tie = decode_value(position.get("tie"))
        self._engine = _sql.engine_for(self.cfg.url)
        try:
            self._table = Table(
                self.cfg.table, MetaData(), autoload_with=self._engine, schema=self.cfg.table_schema
            )
        except sa_exc.SQLAlchemyError as exc:
            raise _sql.classify(exc, f"reading the table definition of {self.cfg.table}") from None
        cols = self._table.c
        if self.cfg.incremental_column not in cols:
            raise PermanentFailure(f"table {self.cfg.table} has no column {self.cfg.incremental_column!r}")
        if self._tiebreak is None:
            pk = [c.name for c in self._table.primary_key.columns]
            if len(pk) == 1 and pk[0] != self.cfg.incremental_column:
                self._tiebreak = pk[0]
        if self._tiebreak is not None and self._tiebreak not in cols:
            raise PermanentFailure(f"table {self.cfg.table} has no column {self._tiebreak!r}")

    def stop(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def _after_position(self) -> Any:
        assert self._table is not None
        inc = self._table.c[self.cfg.incremental_column]
        if self._last is None:
            return None
        if self._tiebreak is None or self._last_tie is None:
            return inc > self._last
        tie = self._table.c[self._tiebreak]
        return or_(inc > self._last, and_(inc == self._last, tie > self._last_tie))

    def _fetch(self, limit: int) -> list[dict[str, Any]]:
        assert self._table is not None and self._engine is not None
        inc = self._table.c[self.cfg.incremental_column]
        order = [inc] + ([self._table.c[self._tiebreak]] if self._tiebreak else [])
        q = select(self._table).order_by(*order).limit(limit)
        cond = self._after_position()
        if cond is not None:
            q = q.where(cond)
        try:
            with self._engine.connect() as conn:
                return [dict(r._mapping) for r in conn.execute(q)]
        except sa_exc.SQLAlchemyError as exc:
            raise _sql.classify(exc, f"reading {self.cfg.table}") from None

    def poll(self, max_records: int, timeout: float) -> SourceBatch:
        deadline = time.monotonic() + timeout
        rows = self._fetch(max_records)
        while not rows and time.monotonic() < deadline:
            time.sleep(min(self.cfg.poll_interval, max(0.0, deadline - time.monotonic())))
            if self._engine is None:
                break
            rows = self._fetch(max_records)
        assert self._shaper is not None
        batch = SourceBatch(records=[], position={})
        for row in rows:
            self._last = row[self.cfg.incremental_column]
            self._last_tie = row[self._tiebreak] if self._tiebreak else None
            origin = f"{self.cfg.table}:{self._last_tie if self._tiebreak else self._last}"
            try:
                value, key = self._shaper.shape(row)
            except ValueError as exc:
                raw = repr({k: encode_value(v) for k, v in row.items()}).encode()
                batch.unreadable.append(Unreadable(raw, str(exc), origin))
                continue
            batch.records.append(
                SourceRecord(value=value, key=key, origin=origin, position_id=self._row_id())
            )
        batch.position = self.position()
        return batch

    def _row_id(self) -> str:
        """The row just read, as its place in the table: (schema, table, incremental, tie-break) values."""
        place = [
            self.cfg.table_schema,
            self.cfg.table,
            encode_value(self._last),
            encode_value(self._last_tie),
        ]
        return json.dumps(place, sort_keys=True, separators=(",", ":"), default=str)

    def position(self) -> dict[str, Any]:
        if self._last is None:
            return {}
        return {"last": encode_value(self._last), "tie": encode_value(self._last_tie)}

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        if self._engine is not None and self._table is not None and now - self._lag_at > 5:
            self._lag_at = now
            q = select(func.count()).select_from(self._table)
            cond = self._after_position()
            if cond is not None:
                q = q.where(cond)
            try:
                with self._engine.connect() as conn:
                    self._lag = int(conn.execute(q).scalar_one())
            except sa_exc.SQLAlchemyError:
                self._lag = None
        return {"lag": self._lag, "lag_unit": "rows"}
