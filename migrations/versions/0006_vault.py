"""one code in one pool, ciphertexts bound to their row: codes.aad_version, codes.dup,
UNIQUE(fingerprint, dup) instead of UNIQUE(pool_id, fingerprint), id_blocks

Revision ID: 0006_vault
Revises: 0005_clock

Existing codes keep their ciphertexts (``aad_version`` NULL: the version 1 binding); the
robot re-binds them to their ids at start (robot.keys.rebind_codes). A code that an older
version let into several pools keeps one row as the code (``dup`` 0: the one already sold,
else the oldest); the other copies are numbered ``dup`` 1, 2, ... and, if still for sale,
taken off sale (``retired = 'void'``), so one code can no longer be sold twice. Their ids are
logged (never a code).
"""
from __future__ import annotations

import logging
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = '0006_vault'
down_revision = '0005_clock'
branch_labels = None
depends_on = None

log = logging.getLogger("alembic.runtime.migration")


def upgrade() -> None:
    with op.batch_alter_table('codes') as batch_op:
        batch_op.add_column(sa.Column('aad_version', sa.SmallInteger(), nullable=True))
        batch_op.add_column(sa.Column('dup', sa.SmallInteger(), server_default='0',
                                      nullable=False))
        # MySQL needs an index on codes.pool_id for its foreign key once the unique
        # (pool_id, fingerprint) is gone; listing codes of a pool uses it everywhere.
        batch_op.create_index('ix_codes_pool_id', ['pool_id'], unique=False)
    _number_copies(op.get_bind())
    with op.batch_alter_table('codes') as batch_op:
        batch_op.drop_constraint('uq_codes_pool_id_fingerprint', type_='unique')
        batch_op.create_unique_constraint('uq_codes_fingerprint_dup', ['fingerprint', 'dup'])
    id_blocks = op.create_table(
        'id_blocks',
        sa.Column('name', sa.String(length=32), nullable=False),
        sa.Column('last_id', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('name', name=op.f('pk_id_blocks')),
    )
    top = op.get_bind().execute(sa.text("SELECT COALESCE(MAX(id), 0) FROM codes")).scalar_one()
    op.bulk_insert(id_blocks, [{'name': 'codes', 'last_id': int(top)}])


def _number_copies(conn: sa.Connection) -> None:
    """Number the extra copies of each code held by several rows; take them off sale."""
    codes = sa.table('codes', sa.column('id'), sa.column('fingerprint'), sa.column('dup'),
                     sa.column('retired'), sa.column('retired_at'))
    stock = sa.table('stock', sa.column('code_id'))
    deliveries = sa.table('deliveries', sa.column('code_id'))
    shared = (sa.select(codes.c.fingerprint).group_by(codes.c.fingerprint)
              .having(sa.func.count() > 1))
    rows = conn.execute(
        sa.select(codes.c.id, codes.c.fingerprint,
                  deliveries.c.code_id.label('sold'), stock.c.code_id.label('in_stock'))
        .outerjoin(deliveries, deliveries.c.code_id == codes.c.id)
        .outerjoin(stock, stock.c.code_id == codes.c.id)
        .where(codes.c.fingerprint.in_(shared))
    ).all()
    groups: dict[bytes, list[Any]] = defaultdict(list)
    for r in rows:
        groups[bytes(r.fingerprint)].append(r)
    now = datetime.now(UTC).replace(tzinfo=None)
    for members in groups.values():
        # The code is the copy already sold, if any (its buyer has it), else the oldest.
        members.sort(key=lambda r: (r.sold is None, int(r.id)))
        for n, r in enumerate(members[1:], start=1):
            conn.execute(sa.update(codes).where(codes.c.id == r.id).values(dup=n))
            if r.in_stock is not None:
                conn.execute(sa.delete(stock).where(stock.c.code_id == r.id))
                conn.execute(sa.update(codes).where(codes.c.id == r.id,
                                                    codes.c.retired.is_(None))
                             .values(retired='void', retired_at=now))
        log.warning("one code was held by %d rows (ids %s): row %d is the code; the other "
                    "copies were taken off sale", len(members),
                    ", ".join(str(int(r.id)) for r in members), int(members[0].id))


def downgrade() -> None:
    op.drop_table('id_blocks')
    with op.batch_alter_table('codes') as batch_op:
        batch_op.drop_constraint('uq_codes_fingerprint_dup', type_='unique')
        batch_op.create_unique_constraint('uq_codes_pool_id_fingerprint',
                                          ['pool_id', 'fingerprint'])
        batch_op.drop_index('ix_codes_pool_id')
        batch_op.drop_column('dup')
        batch_op.drop_column('aad_version')
