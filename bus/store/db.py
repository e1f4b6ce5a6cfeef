"""The store: one SQLAlchemy engine, sessions, schema creation and migrations.

A fresh database gets the current schema and is stamped at the newest migration; an existing
one is upgraded with Alembic, so later changes never break an existing data dir.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, insert, inspect, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from bus.store.models import Base

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 10})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def alembic_config(url: str) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


class Store:
    """The control-plane store. No connection is made until ``start()``."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine: Engine | None = None
        self._sessions: sessionmaker[Session] | None = None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise RuntimeError("store not started")
        return self._engine

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def start(self) -> Store:
        self._engine = make_engine(self.url)
        self._sessions = sessionmaker(self._engine, expire_on_commit=False)
        self.migrate()
        return self

    @contextlib.contextmanager
    def _migration_lock(self) -> Iterator[None]:
        """Several processes (gateway, workers) may start on one fresh store at once: one migrates at a time.

        SQLite: an exclusive file lock next to the database; PostgreSQL: a transaction-level advisory lock
        taken inside the migration's own transaction (see ``migrate``).
        """
        db = self.engine.url.database
        if self.dialect != "sqlite" or not db or db == ":memory:":
            yield
            return
        import fcntl

        with open(f"{db}.migrate-lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def migrate(self) -> None:
        from alembic import command

        cfg = alembic_config(self.url)
        with self._migration_lock(), self.engine.begin() as conn:
            if self.dialect == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(7271001)"))
            cfg.attributes["connection"] = conn
            tables = set(inspect(conn).get_table_names())
            if "alembic_version" not in tables:
                Base.metadata.create_all(conn)
                command.stamp(cfg, "head")
            else:
                command.upgrade(cfg, "head")
        self._seed_audit_head()

    def _seed_audit_head(self) -> None:
        """The audit chain's head row exists before any append, so first writers never race to create it."""
        from sqlalchemy.exc import IntegrityError

        from bus.lineage.audit import GENESIS
        from bus.store.models import AuditHead

        try:
            with self.engine.begin() as conn:
                if conn.execute(select(AuditHead.id).where(AuditHead.id == 1)).first() is None:
                    conn.execute(insert(AuditHead).values(id=1, seq=0, hash=GENESIS))
        except IntegrityError:
            pass  # another process seeded it at the same moment

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """A unit of work: committed on success, rolled back on error."""
        if self._sessions is None:
            raise RuntimeError("store not started")
        with self._sessions() as s, s.begin():
            yield s

    def ping(self) -> bool:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
