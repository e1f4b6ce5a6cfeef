"""What the SQL source and sink share: URL checks, engines, and which database errors are worth a retry."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import create_engine
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, Engine, make_url

from connectors.base import PermanentFailure, TransientFailure, mask_text

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$")


def parse_url(value: str) -> URL:
    """A URL with an installed driver, else ``ValueError`` saying what is wrong (password hidden)."""
    try:
        url = make_url(normalise(value))
    except (sa_exc.ArgumentError, ValueError):
        raise ValueError(
            f"{mask_text(value)!r} is not a SQLAlchemy URL "
            "(e.g. postgresql://user:password@host:5432/db or sqlite:////abs/path.db)"
        ) from None
    try:
        url.get_dialect()
    except sa_exc.NoSuchModuleError:
        raise ValueError(f"no database driver for {url.drivername!r} is installed") from None
    if (
        url.get_backend_name() == "sqlite"
        and url.database not in (None, "", ":memory:")
        and not str(url.database).startswith("/")
    ):
        raise ValueError("a SQLite URL must name an absolute path: sqlite:////abs/path.db")
    return url


def normalise(value: str) -> str:
    """``postgresql://`` means psycopg 3 here (the driver the bus ships), as in the bus's own store."""
    if value.startswith("postgresql://") or value.startswith("postgres://"):
        return "postgresql+psycopg://" + value.split("://", 1)[1]
    return value


def identifier(value: str | None, what: str) -> str | None:
    if value is not None and not IDENTIFIER.match(value):
        raise ValueError(f"{what} {value!r} is not a plain SQL identifier (letters, digits, _ and $)")
    return value


def engine_for(url: str) -> Engine:
    parsed = make_url(normalise(url))
    kw: dict[str, Any] = {"pool_pre_ping": True}
    if parsed.get_backend_name() == "sqlite":
        kw["connect_args"] = {"timeout": 10, "check_same_thread": False}
    else:
        kw.update(pool_size=1, max_overflow=1)
        if parsed.get_backend_name() == "postgresql":
            kw["connect_args"] = {"connect_timeout": 5}
    return create_engine(parsed, **kw)


def classify(exc: BaseException, what: str) -> Exception:
    """A database error as a retryable or a fatal connector failure (message without passwords)."""
    detail = f"{what}: {mask_text(str(getattr(exc, 'orig', None) or exc)).splitlines()[0]}"
    if isinstance(exc, sa_exc.NoSuchTableError):
        return PermanentFailure(f"{what}: table {exc} does not exist")
    if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.TimeoutError):
        return TransientFailure(detail)
    if isinstance(exc, sa_exc.ProgrammingError | sa_exc.ArgumentError | sa_exc.NoSuchModuleError):
        return PermanentFailure(detail)
    return TransientFailure(detail)
