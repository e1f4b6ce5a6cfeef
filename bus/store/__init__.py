"""Control-plane persistence: SQLite in the data dir by default, PostgreSQL at scale."""

from bus.store.db import Store

__all__ = ["Store"]
