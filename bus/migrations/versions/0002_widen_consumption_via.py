"""widen lineage_consumptions.via to 96 characters (connector names up to 63)

``via`` holds ``sdk | http | sse | connector:<name>``; at String(32) it capped connector names at 22.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 10:20:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # batch mode: SQLite copies the table (keeping its rows and indexes); PostgreSQL alters in place
    with op.batch_alter_table('lineage_consumptions', schema=None) as batch_op:
        batch_op.alter_column(
            'via',
            existing_type=sa.String(length=32),
            type_=sa.String(length=96),
            existing_nullable=False,
        )


def downgrade() -> None:
    with op.batch_alter_table('lineage_consumptions', schema=None) as batch_op:
        batch_op.alter_column(
            'via',
            existing_type=sa.String(length=96),
            type_=sa.String(length=32),
            existing_nullable=False,
        )
