"""pickup page per pool: usage instructions (zh, en), the redemption link template, their seal

Revision ID: 0008_page
Revises: 0007_cs
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0008_page'
down_revision = '0007_cs'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable columns only: existing pools show no instructions and no redeem button until
    # `robot pools set` gives them some.
    with op.batch_alter_table('pools', schema=None) as batch_op:
        batch_op.add_column(sa.Column('instructions_zh', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('instructions_en', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('redeem_url', sa.String(length=500), nullable=True))
        batch_op.add_column(sa.Column('page_mac', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('pools', schema=None) as batch_op:
        batch_op.drop_column('page_mac')
        batch_op.drop_column('redeem_url')
        batch_op.drop_column('instructions_en')
        batch_op.drop_column('instructions_zh')
