"""shop_state: the platform's clock offset as last measured, and when

Revision ID: 0005_clock
Revises: 0004_audit
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = '0005_clock'
down_revision = '0004_audit'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Both nullable: existing shops read "not measured yet" until their next poll.
    with op.batch_alter_table('shop_state') as batch_op:
        batch_op.add_column(sa.Column('clock_offset_ms', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column(
            'clock_checked_at',
            sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb')
            .with_variant(mysql.DATETIME(fsp=6), 'mysql'),
            nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('shop_state') as batch_op:
        batch_op.drop_column('clock_checked_at')
        batch_op.drop_column('clock_offset_ms')
