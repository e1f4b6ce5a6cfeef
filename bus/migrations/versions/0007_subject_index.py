"""subject_index: keyed subject values of accepted records (GET /v1/lineage/subjects)

Revision ID: 0007
Revises: 0002
Create Date: 2026-12-03 08:20:00
"""
from alembic import op
import sqlalchemy as sa

import bus.store.models


revision = '0007'
down_revision = '0003_batch_evidence'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('subject_index',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('dataset_id', sa.String(length=64), nullable=False),
    sa.Column('record_id', sa.String(length=40), nullable=False),
    sa.Column('semantic', sa.String(length=128), nullable=False),
    sa.Column('value_key', sa.String(length=64), nullable=False),
    sa.Column('indexed_at', bus.store.models.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('subject_index', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_subject_index_indexed_at'), ['indexed_at'], unique=False)
        batch_op.create_index('ix_subject_index_lookup', ['semantic', 'value_key', 'id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('subject_index', schema=None) as batch_op:
        batch_op.drop_index('ix_subject_index_lookup')
        batch_op.drop_index(batch_op.f('ix_subject_index_indexed_at'))
    op.drop_table('subject_index')
