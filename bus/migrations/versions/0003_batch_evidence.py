"""delivery evidence per batch: lineage_delivery_batches + lineage_delivery_keys replace lineage_deliveries

One row per (batch, grant, partition) with the record ids packed and per-record offsets, sizes, times
and traces as compact arrays (``bus.lineage.evidence``), instead of one row per record and grant.
The per-record rows of ``lineage_deliveries`` are moved into batches (grouped by their audit event,
grant, dataset, agency, scenario and partition, in id order) keeping their ``audit_seq``: their events
attest per-record lines, and a migrated batch expands to exactly those lines, so ``audit verify`` and
the lineage queries answer as before. Rows without ``audit_seq`` become one-record unattested batches.

Downgrade expands the batches back into per-record rows; events written in the batch layout then no
longer verify against them (their digest covers batch rows).

Revision ID: 0003_batch_evidence
Revises: 0004
Create Date: 2026-12-03 08:30:00
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from alembic import op

import bus.store.models  # noqa: F401 - custom column types referenced below
from bus.lineage import evidence

revision = "0003_batch_evidence"
down_revision = "0004"
branch_labels = None
depends_on = None

CHUNK = 500  # audit events per read
_OLD = (
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
)
_BATCH = tuple(evidence.DeliveryBatch.__dataclass_fields__)


def _old_table() -> sa.TableClause:
    return sa.table(
        "lineage_deliveries",
        sa.column("id", sa.BigInteger()),
        sa.column("record_id", sa.String()),
        sa.column("grant_id", sa.String()),
        sa.column("dataset_id", sa.String()),
        sa.column("agency_id", sa.String()),
        sa.column("scenario_code", sa.String()),
        sa.column("delivered_at", bus.store.models.UTCDateTime(timezone=True)),
        sa.column("partition", sa.Integer()),
        sa.column("offset", sa.BigInteger()),
        sa.column("size", sa.Integer()),
        sa.column("trace_id", sa.String()),
        sa.column("audit_seq", sa.BigInteger()),
    )


def _batch_table() -> sa.TableClause:
    times = ("delivered_at", "last_at")
    cols = [
        sa.column(name, bus.store.models.UTCDateTime(timezone=True)) if name in times else sa.column(name)
        for name in _BATCH
    ]
    return sa.table(
        "lineage_delivery_batches",
        sa.column("id", sa.BigInteger()),
        *cols,
        sa.column("audit_seq", sa.BigInteger()),
    )


def _create_new_tables() -> None:
    op.create_table(
        "lineage_delivery_batches",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("grant_id", sa.String(length=64), nullable=False),
        sa.Column("dataset_id", sa.String(length=64), nullable=False),
        sa.Column("agency_id", sa.String(length=64), nullable=False),
        sa.Column("scenario_code", sa.String(length=64), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=True),
        sa.Column("delivered_at", bus.store.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_at", bus.store.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("first_offset", sa.BigInteger(), nullable=True),
        sa.Column("last_offset", sa.BigInteger(), nullable=True),
        sa.Column("records", sa.Integer(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("trace_id", sa.String(length=32), nullable=True),
        sa.Column("record_ids", sa.LargeBinary(), nullable=False),
        sa.Column("offsets", sa.LargeBinary(), nullable=True),
        sa.Column("sizes", sa.LargeBinary(), nullable=True),
        sa.Column("times", sa.LargeBinary(), nullable=True),
        sa.Column("traces", sa.LargeBinary(), nullable=True),
        sa.Column("audit_seq", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("lineage_delivery_batches", schema=None) as batch_op:
        batch_op.create_index("ix_delivery_batches_grant_time", ["grant_id", "delivered_at"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_lineage_delivery_batches_audit_seq"), ["audit_seq"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_lineage_delivery_batches_dataset_id"), ["dataset_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_lineage_delivery_batches_delivered_at"), ["delivered_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_lineage_delivery_batches_grant_id"), ["grant_id"], unique=False)

    op.create_table(
        "lineage_delivery_keys",
        sa.Column("key", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("seq_lo", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("seq_hi", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("key", "seq_lo"),
    )
    with op.batch_alter_table("lineage_delivery_keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_lineage_delivery_keys_seq_hi"), ["seq_hi"], unique=False)


def _old_groups(conn: Any, old: sa.TableClause) -> Iterator[tuple[int | None, list[tuple[Any, ...]]]]:
    """(audit_seq, per-record values in id order) per attested group; unattested rows one by one."""
    values = [old.c[c] for c in _OLD]
    for row in conn.execute(sa.select(*values).where(old.c.audit_seq.is_(None)).order_by(old.c.id)):
        yield None, [tuple(row)]
    last = None
    while True:
        q = sa.select(old.c.audit_seq).where(old.c.audit_seq.is_not(None)).distinct()
        if last is not None:
            q = q.where(old.c.audit_seq > last)
        seqs = [s for (s,) in conn.execute(q.order_by(old.c.audit_seq).limit(CHUNK))]
        if not seqs:
            return
        rows = conn.execute(
            sa.select(old.c.audit_seq, *values)
            .where(old.c.audit_seq.in_(seqs))
            .order_by(old.c.audit_seq, old.c.id)
        )
        groups: dict[int, list[tuple[Any, ...]]] = {}
        for row in rows:
            groups.setdefault(row[0], []).append(tuple(row[1:]))
        yield from groups.items()
        last = seqs[-1]


def upgrade() -> None:
    _create_new_tables()
    conn = op.get_bind()
    old, batches = _old_table(), _batch_table()
    keys = sa.table("lineage_delivery_keys", sa.column("key"), sa.column("seq_lo"), sa.column("seq_hi"))
    for seq, rows in _old_groups(conn, old):
        parts: dict[tuple[Any, ...], list[tuple[Any, ...]]] = {}
        for v in rows:
            parts.setdefault((v[1], v[2], v[3], v[4], v[6]), []).append(v)
        encoded = [evidence.encode(grp) for grp in parts.values()]
        conn.execute(batches.insert(), [{**b.__dict__, "audit_seq": seq} for b in encoded])
        if seq is not None:
            ids: set[int] = set()
            for b in encoded:
                ids |= evidence.id_keys(b.record_ids)
            conn.execute(keys.insert(), [{"key": k, "seq_lo": seq, "seq_hi": seq} for k in sorted(ids)])
    op.drop_table("lineage_deliveries")


def downgrade() -> None:
    op.create_table(
        "lineage_deliveries",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("record_id", sa.String(length=40), nullable=False),
        sa.Column("grant_id", sa.String(length=64), nullable=False),
        sa.Column("dataset_id", sa.String(length=64), nullable=False),
        sa.Column("agency_id", sa.String(length=64), nullable=False),
        sa.Column("scenario_code", sa.String(length=64), nullable=False),
        sa.Column("delivered_at", bus.store.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=True),
        sa.Column("offset", sa.BigInteger(), nullable=True),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("trace_id", sa.String(length=32), nullable=True),
        sa.Column("audit_seq", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("lineage_deliveries", schema=None) as batch_op:
        batch_op.create_index("ix_deliveries_grant_time", ["grant_id", "delivered_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_lineage_deliveries_agency_id"), ["agency_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_lineage_deliveries_audit_seq"), ["audit_seq"], unique=False)
        batch_op.create_index(batch_op.f("ix_lineage_deliveries_dataset_id"), ["dataset_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_lineage_deliveries_delivered_at"), ["delivered_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_lineage_deliveries_grant_id"), ["grant_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_lineage_deliveries_record_id"), ["record_id"], unique=False)
    conn = op.get_bind()
    old, batches = _old_table(), _batch_table()
    cols = [batches.c[c] for c in _BATCH]
    last = 0
    while True:
        rows = list(
            conn.execute(
                sa.select(batches.c.id, batches.c.audit_seq, *cols)
                .where(batches.c.id > last)
                .order_by(batches.c.id)
                .limit(CHUNK)
            )
        )
        if not rows:
            break
        out: list[dict[str, Any]] = []
        for row in rows:
            b = evidence.DeliveryBatch(*row[2:])
            out.extend({**dict(zip(_OLD, v, strict=True)), "audit_seq": row[1]} for v in evidence.expand(b))
        conn.execute(old.insert(), out)
        last = rows[-1][0]
    op.drop_table("lineage_delivery_keys")
    op.drop_table("lineage_delivery_batches")
