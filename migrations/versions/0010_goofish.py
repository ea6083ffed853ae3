"""goofish: a buyer platform's goods-change subscriptions (闲管家 订阅商品变更通知) and the
failure callbacks owed to it

Revision ID: 0010_goofish
Revises: 0009_notify
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = '0010_goofish'
down_revision = '0009_notify'
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
_TS = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(
    mysql.DATETIME(fsp=6), 'mysql')


def upgrade() -> None:
    # New tables only: existing rows are untouched.
    op.create_table('supply_subscriptions',
    sa.Column('id', _ID, autoincrement=True, nullable=False),
    sa.Column('shop', sa.String(length=64), nullable=False),
    sa.Column('goods_no', sa.String(length=64), nullable=False),
    sa.Column('token', sa.String(length=128), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('notify_url', sa.Text(), nullable=False),
    sa.Column('subscribed_at', _TS, nullable=False),
    sa.Column('sent_price', sa.BigInteger(), nullable=True),
    sa.Column('sent_stock', sa.Integer(), nullable=True),
    sa.Column('sent_on_sale', sa.Boolean(), nullable=True),
    sa.Column('sent_at', _TS, nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('due_at', _TS, nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_supply_subscriptions')),
    sa.UniqueConstraint('shop', 'goods_no', 'token',
                        name=op.f('uq_supply_subscriptions_shop_goods_no_token'))
    )

    op.create_table('supply_callbacks',
    sa.Column('order_id', _ID, autoincrement=False, nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('sent_at', _TS, nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('due_at', _TS, nullable=False),
    sa.ForeignKeyConstraint(['order_id'], ['orders.id'],
                            name=op.f('fk_supply_callbacks_order_id_orders')),
    sa.PrimaryKeyConstraint('order_id', name=op.f('pk_supply_callbacks'))
    )


def downgrade() -> None:
    op.drop_table('supply_callbacks')
    op.drop_table('supply_subscriptions')
