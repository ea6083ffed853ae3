"""customer service: write-back attempt history, replacement requests, order-number index

Revision ID: 0007_cs
Revises: 0006_vault
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = '0007_cs'
down_revision = '0006_vault'
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
_TS = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(
    mysql.DATETIME(fsp=6), 'mysql')


def upgrade() -> None:
    # New tables only, and one index: existing rows are untouched (a database with data
    # upgrades in place; orders shipped before have no attempt history, which shows as none).
    op.create_table('outbox_attempts',
    sa.Column('id', _ID, autoincrement=True, nullable=False),
    sa.Column('outbox_id', _ID, nullable=False),
    sa.Column('order_id', _ID, nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('at', _TS, nullable=False),
    sa.Column('result', sa.String(length=16), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['outbox_id'], ['outbox.id'],
                            name=op.f('fk_outbox_attempts_outbox_id_outbox')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_outbox_attempts'))
    )
    with op.batch_alter_table('outbox_attempts', schema=None) as batch_op:
        batch_op.create_index('ix_outbox_attempts_order_at', ['order_id', 'at'], unique=False)

    op.create_table('replacements',
    sa.Column('id', _ID, autoincrement=True, nullable=False),
    sa.Column('order_id', _ID, nullable=False),
    sa.Column('line_no', sa.Integer(), nullable=False),
    sa.Column('pool_id', sa.Integer(), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('actor', sa.String(length=128), nullable=False),
    sa.Column('defective_code_ids', sa.Text(), nullable=False),
    sa.Column('created_at', _TS, nullable=False),
    sa.Column('done_at', _TS, nullable=True),
    sa.ForeignKeyConstraint(['order_id'], ['orders.id'],
                            name=op.f('fk_replacements_order_id_orders')),
    sa.ForeignKeyConstraint(['pool_id'], ['pools.id'], name=op.f('fk_replacements_pool_id_pools')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_replacements'))
    )
    with op.batch_alter_table('replacements', schema=None) as batch_op:
        batch_op.create_index('ix_replacements_state_id', ['state', 'id'], unique=False)
        batch_op.create_index('ix_replacements_order_id', ['order_id'], unique=False)

    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.create_index('ix_orders_platform_order_id', ['platform_order_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.drop_index('ix_orders_platform_order_id')
    op.drop_table('replacements')
    op.drop_table('outbox_attempts')
