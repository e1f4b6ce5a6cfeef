"""``sql-sink``: a grant's delivered records upserted by record id into a table of the grantee's database.

The table is created from the delivered view's schema when it does not exist (one column per field,
plus the record id as primary key and the grant and scenario the record was delivered under, R7).
Writing a batch is one upsert in one transaction (``ON CONFLICT`` on PostgreSQL and SQLite, ``ON
DUPLICATE KEY`` on MySQL, delete-then-insert elsewhere), so a batch repeated after a restart changes
nothing. A batch the database refuses is retried record by record to find the refused ones, which go
to the dead-letter topic; connection trouble is retried with backoff.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from pydantic import Field, field_validator
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Double,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    delete,
    insert,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Engine

from connectors import _sql
from connectors.base import ConnectorConfig, PermanentFailure, Refused, Sink, SinkContext, SinkRecord

GRANT_COLUMN = "bus_grant"
SCENARIO_COLUMN = "bus_scenario"


class SqlSinkConfig(ConnectorConfig):
    url: str = Field(description="SQLAlchemy URL of the grantee's database; its password is never shown back")
    table: str
    table_schema: str | None = None
    id_column: str = Field("record_id", description="primary key column holding the bus record id")
    create_table: bool = Field(True, description="create the table from the view's schema if missing")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        _sql.parse_url(v)
        return v

    @field_validator("table", "id_column")
    @classmethod
    def _ident(cls, v: str) -> str:
        return _sql.identifier(v, "name") or v

    @field_validator("table_schema")
    @classmethod
    def _opt_ident(cls, v: str | None) -> str | None:
        return _sql.identifier(v, "name")


def column_type(ftype: Any) -> tuple[Any, bool]:
    """(SQLAlchemy type, nullable) of an Avro field type."""
    nullable = isinstance(ftype, list) and "null" in ftype
    if isinstance(ftype, list):
        rest = [t for t in ftype if t != "null"]
        ftype = rest[0] if len(rest) == 1 else "json"
    logical = ftype.get("logicalType") if isinstance(ftype, dict) else None
    base = ftype.get("type") if isinstance(ftype, dict) else ftype
    if logical in ("timestamp-millis", "timestamp-micros"):
        return DateTime(timezone=True), nullable
    if logical == "date":
        return Date(), nullable
    types: dict[str, Any] = {
        "string": Text(),
        "int": Integer(),
        "long": BigInteger(),
        "float": Float(),
        "double": Double(),
        "boolean": Boolean(),
        "bytes": LargeBinary(),
        "enum": Text(),
    }
    return types.get(str(base), JSON()), nullable


def _refuses_content(exc: BaseException) -> bool:
    """A constraint or type the data breaks (as opposed to a database that is down or misconfigured)."""
    if isinstance(exc, sa_exc.IntegrityError | sa_exc.DataError):
        return True
    return isinstance(exc, sa_exc.StatementError) and not isinstance(exc, sa_exc.DBAPIError)


class SqlSink(Sink):
    kind: ClassVar[str] = "sql-sink"
    Config = SqlSinkConfig

    def __init__(self, name: str, config: SqlSinkConfig) -> None:  # type: ignore[override]
        super().__init__(name, config)
        self.cfg = config
        self._engine: Engine | None = None
        self._table: Table | None = None
        self._context: SinkContext | None = None
        self.rows_written = 0

    def destination(self) -> str:
        return self.cfg.url

    def _build_table(self, metadata: MetaData, view_schema: dict[str, Any]) -> Table:
        cols = [Column(self.cfg.id_column, String(64), primary_key=True)]
        for f in view_schema.get("fields", []):
            if f["name"] in (self.cfg.id_column, GRANT_COLUMN, SCENARIO_COLUMN):
                continue
            sa_type, _ = column_type(f["type"])
            cols.append(Column(f["name"], sa_type, nullable=True))  # masking may drop a value
        cols += [Column(GRANT_COLUMN, String(64)), Column(SCENARIO_COLUMN, String(64))]
        return Table(self.cfg.table, metadata, *cols, schema=self.cfg.table_schema)

    def start(self, context: SinkContext) -> None:
        self._context = context
        self._engine = _sql.engine_for(self.cfg.url)
        md = MetaData()
        try:
            try:
                self._table = Table(
                    self.cfg.table, md, autoload_with=self._engine, schema=self.cfg.table_schema
                )
            except sa_exc.NoSuchTableError:
                if not self.cfg.create_table:
                    raise PermanentFailure(
                        f"table {self.cfg.table} does not exist and create_table is off"
                    ) from None
                self._table = self._build_table(MetaData(), context.view_schema)
                self._table.create(self._engine, checkfirst=True)
        except sa_exc.SQLAlchemyError as exc:
            raise _sql.classify(exc, f"preparing table {self.cfg.table}") from None
        pk = [c.name for c in self._table.primary_key.columns]
        if pk != [self.cfg.id_column]:
            raise PermanentFailure(
                f"table {self.cfg.table} must have {self.cfg.id_column!r} as its only "
                f"primary key column to upsert by record id (it has {pk or 'none'})"
            )

    def stop(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def _row(self, r: SinkRecord) -> dict[str, Any]:
        assert self._table is not None and self._context is not None
        row: dict[str, Any] = {self.cfg.id_column: r.record_id}
        for name, v in r.value.items():
            col = self._table.c.get(name)
            if col is None:
                continue
            if isinstance(v, dict | list) and not isinstance(col.type, JSON):
                v = json.dumps(v, ensure_ascii=False, default=str)
            row[name] = v
        if GRANT_COLUMN in self._table.c:
            row[GRANT_COLUMN] = self._context.grant_id
        if SCENARIO_COLUMN in self._table.c:
            row[SCENARIO_COLUMN] = self._context.scenario
        return row

    def _upsert(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        assert self._table is not None
        t = self._table
        dialect = conn.dialect.name
        cols = sorted({k for r in rows for k in r})
        rows = [{c: r.get(c) for c in cols} for r in rows]
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            pg = pg_insert(t)
            update = {c: pg.excluded[c] for c in cols if c != self.cfg.id_column}
            key = [self.cfg.id_column]
            conn.execute(
                pg.on_conflict_do_update(index_elements=key, set_=update)
                if update
                else pg.on_conflict_do_nothing(index_elements=key),
                rows,
            )
        elif dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            lite = sqlite_insert(t)
            update = {c: lite.excluded[c] for c in cols if c != self.cfg.id_column}
            key = [self.cfg.id_column]
            conn.execute(
                lite.on_conflict_do_update(index_elements=key, set_=update)
                if update
                else lite.on_conflict_do_nothing(index_elements=key),
                rows,
            )
        elif dialect in ("mysql", "mariadb"):
            from sqlalchemy.dialects.mysql import insert as mysql_insert

            my = mysql_insert(t)
            conn.execute(my.on_duplicate_key_update({c: my.inserted[c] for c in cols}), rows)
        else:
            ids = [r[self.cfg.id_column] for r in rows]
            conn.execute(delete(t).where(t.c[self.cfg.id_column].in_(ids)))
            conn.execute(insert(t), rows)

    def write(self, records: list[SinkRecord]) -> list[Refused]:
        if not records:
            return []
        assert self._engine is not None
        latest: dict[str, SinkRecord] = {r.record_id: r for r in records}  # one row per id in a statement
        try:
            with self._engine.begin() as conn:
                self._upsert(conn, [self._row(r) for r in latest.values()])
            self.rows_written += len(latest)
            return []
        except sa_exc.SQLAlchemyError as exc:
            if not _refuses_content(exc):
                raise _sql.classify(exc, f"writing to {self.cfg.table}") from None
        # the database refused the batch's content: find the records it refuses and write the others
        refused: list[Refused] = []
        for r in latest.values():
            try:
                with self._engine.begin() as conn:
                    self._upsert(conn, [self._row(r)])
                self.rows_written += 1
            except sa_exc.SQLAlchemyError as exc:
                if not _refuses_content(exc):
                    raise _sql.classify(exc, f"writing to {self.cfg.table}") from None
                reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
                refused.append(Refused(r, f"{self.cfg.table} refused the record: {reason}"))
        return refused

    def status(self) -> dict[str, Any]:
        return {"rows_written": self.rows_written}
