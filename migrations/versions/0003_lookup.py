"""orders.platform_order_id compares binary on MySQL/MariaDB (utf8mb4_bin)

Under the default utf8mb4_unicode_ci, full-width digits and zero-width characters typed into
the pickup lookup found the same order row as the real number while getting a rate-limit
bucket of their own. PostgreSQL and SQLite compare binary already: nothing to do there.
``MODIFY`` keeps the column's indexes (the unique (shop, platform_order_id) among them); a
binary collation only tells more values apart, so no existing row can violate it.

Revision ID: 0003_lookup
Revises: 0002
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = '0003_lookup'
down_revision = '0002'
branch_labels = None
depends_on = None


def _mysql() -> bool:
    return op.get_bind().dialect.name in ("mysql", "mariadb")


def upgrade() -> None:
    if _mysql():
        op.alter_column('orders', 'platform_order_id',
                        existing_type=sa.String(length=64), existing_nullable=False,
                        type_=mysql.VARCHAR(length=64, collation='utf8mb4_bin'))


def downgrade() -> None:
    # Back to the table's default collation. Rows that differ only in case or width would
    # collide under it: going back then fails on the unique key rather than merging orders.
    if _mysql():
        op.alter_column('orders', 'platform_order_id',
                        existing_type=mysql.VARCHAR(length=64, collation='utf8mb4_bin'),
                        existing_nullable=False, type_=sa.String(length=64))
