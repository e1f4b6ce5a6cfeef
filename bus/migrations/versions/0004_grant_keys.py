"""grant data keys, wrapped (sealed records, R8/R12)

Revision ID: 0004
Revises: 0002
Create Date: 2026-12-03 08:40:00
"""
from alembic import op
import sqlalchemy as sa

import bus.store.models


revision = '0004'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('grant_keys',
    sa.Column('kid', sa.String(length=16), nullable=False),
    sa.Column('grant_id', sa.String(length=64), nullable=False),
    sa.Column('epoch', sa.String(length=32), nullable=False),
    sa.Column('wrapped', sa.String(length=128), nullable=True),
    sa.Column('not_before', bus.store.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('not_after', bus.store.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('destroyed_at', bus.store.models.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['grant_id'], ['grants.id'], ),
    sa.PrimaryKeyConstraint('kid')
    )
    with op.batch_alter_table('grant_keys', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_grant_keys_grant_id'), ['grant_id'], unique=False)
        batch_op.create_index('ux_grant_keys_epoch', ['grant_id', 'epoch'], unique=True)


def downgrade() -> None:
    with op.batch_alter_table('grant_keys', schema=None) as batch_op:
        batch_op.drop_index('ux_grant_keys_epoch')
        batch_op.drop_index(batch_op.f('ix_grant_keys_grant_id'))
    op.drop_table('grant_keys')
