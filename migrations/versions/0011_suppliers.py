"""suppliers: the sourcing state, each order line's supplier route, supplier attempts

Revision ID: 0011_suppliers
Revises: 0010_goofish
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = '0011_suppliers'
down_revision = '0010_goofish'
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
_TS = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(
    mysql.DATETIME(fsp=6), 'mysql')
_OLD_STATES = ("received", "held", "waiting_stock", "allocated", "shipped", "failed",
               "cancelled", "rejected", "ignored", "refunded")
_NEW_STATES = ("received", "held", "waiting_stock", "sourcing", "allocated", "shipped",
               "failed", "cancelled", "rejected", "ignored", "refunded")


def _check(states: tuple[str, ...]) -> str:
    return "state IN (" + ",".join(f"'{s}'" for s in states) + ")"


def upgrade() -> None:
    # Existing rows are untouched: orders keep their states, lines get no route (pools only).
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_orders_state'), type_='check')
        batch_op.create_check_constraint(op.f('ck_orders_state'), _check(_NEW_STATES))
    with op.batch_alter_table('order_lines', schema=None) as batch_op:
        batch_op.add_column(sa.Column('supply', sa.Text(), nullable=True))
    op.create_table('supplier_attempts',
    sa.Column('id', _ID, autoincrement=True, nullable=False),
    sa.Column('order_id', _ID, nullable=False),
    sa.Column('line_no', sa.Integer(), nullable=False),
    sa.Column('unit', sa.Integer(), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('supplier', sa.String(length=64), nullable=False),
    sa.Column('product', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=8), nullable=False),
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('max_cost_cents', sa.BigInteger(), nullable=False),
    sa.Column('account', sa.String(length=128), nullable=True),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('supplier_order_id', sa.String(length=64), nullable=True),
    sa.Column('cost_cents', sa.BigInteger(), nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('created_at', _TS, nullable=False),
    sa.Column('updated_at', _TS, nullable=False),
    sa.Column('finished_at', _TS, nullable=True),
    sa.ForeignKeyConstraint(['order_id'], ['orders.id'],
                            name=op.f('fk_supplier_attempts_order_id_orders')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_supplier_attempts')),
    sa.UniqueConstraint('key', name=op.f('uq_supplier_attempts_key')),
    sa.UniqueConstraint('order_id', 'line_no', 'unit', 'attempt',
                        name=op.f('uq_supplier_attempts_order_id_line_no_unit_attempt'))
    )
    with op.batch_alter_table('supplier_attempts', schema=None) as batch_op:
        batch_op.create_index('ix_supplier_attempts_state', ['state'], unique=False)
        batch_op.create_index('ix_supplier_attempts_supplier_created_at',
                              ['supplier', 'created_at'], unique=False)


def downgrade() -> None:
    op.drop_table('supplier_attempts')
    with op.batch_alter_table('order_lines', schema=None) as batch_op:
        batch_op.drop_column('supply')
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_orders_state'), type_='check')
        batch_op.create_check_constraint(op.f('ck_orders_state'), _check(_OLD_STATES))
