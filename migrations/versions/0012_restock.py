"""restock: pools that refill themselves from a supplier within a budget

Revision ID: 0012_restock
Revises: 0011_suppliers
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = '0012_restock'
down_revision = '0011_suppliers'
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
_TS = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(
    mysql.DATETIME(fsp=6), 'mysql')


def upgrade() -> None:
    op.create_table('restock_state',
    sa.Column('pool_id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('in_flight', sa.Integer(), server_default='0', nullable=False),
    sa.Column('day', sa.String(length=10), nullable=True),
    sa.Column('day_cents', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('month', sa.String(length=7), nullable=True),
    sa.Column('month_cents', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('failures', sa.Integer(), server_default='0', nullable=False),
    sa.Column('next_at', _TS, nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('blocked', sa.Text(), nullable=True),
    sa.Column('updated_at', _TS, nullable=False),
    sa.ForeignKeyConstraint(['pool_id'], ['pools.id'],
                            name=op.f('fk_restock_state_pool_id_pools')),
    sa.PrimaryKeyConstraint('pool_id', name=op.f('pk_restock_state'))
    )
    op.create_table('restock_purchases',
    sa.Column('id', _ID, autoincrement=True, nullable=False),
    sa.Column('pool_id', sa.Integer(), nullable=False),
    sa.Column('supplier', sa.String(length=64), nullable=False),
    sa.Column('product', sa.String(length=64), nullable=False),
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('quantity', sa.Integer(), nullable=False),
    sa.Column('max_unit_cents', sa.BigInteger(), nullable=False),
    sa.Column('reserved_cents', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('day', sa.String(length=10), nullable=True),
    sa.Column('month', sa.String(length=7), nullable=True),
    sa.Column('state', sa.String(length=24), nullable=False),
    sa.Column('trigger', sa.Text(), nullable=False),
    sa.Column('requested_by', sa.String(length=128), nullable=False),
    sa.Column('approved_by', sa.String(length=128), nullable=True),
    sa.Column('supplier_order_id', sa.String(length=64), nullable=True),
    sa.Column('cost_cents', sa.BigInteger(), nullable=True),
    sa.Column('codes', sa.Integer(), nullable=True),
    sa.Column('batch_id', sa.Integer(), nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
    sa.Column('due_at', _TS, nullable=False),
    sa.Column('claimed_by', sa.String(length=64), nullable=True),
    sa.Column('claimed_until', _TS, nullable=True),
    sa.Column('created_at', _TS, nullable=False),
    sa.Column('updated_at', _TS, nullable=False),
    sa.Column('finished_at', _TS, nullable=True),
    sa.ForeignKeyConstraint(['pool_id'], ['pools.id'],
                            name=op.f('fk_restock_purchases_pool_id_pools')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_restock_purchases')),
    sa.UniqueConstraint('key', name=op.f('uq_restock_purchases_key'))
    )
    with op.batch_alter_table('restock_purchases', schema=None) as batch_op:
        batch_op.create_index('ix_restock_purchases_pool_created', ['pool_id', 'created_at'],
                              unique=False)
        batch_op.create_index('ix_restock_purchases_state_due', ['state', 'due_at'],
                              unique=False)


def downgrade() -> None:
    op.drop_table('restock_purchases')
    op.drop_table('restock_state')
