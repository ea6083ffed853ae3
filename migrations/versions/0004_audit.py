"""audit chains keyed: audit_head.keyed says whether a chain's hashes are keyed (HMAC)

Revision ID: 0004_audit
Revises: 0003_lookup

Chains written before this revision hold unkeyed SHA-256 hashes: their heads start with
keyed = false, and ``robot.audit.upgrade_legacy`` (run by ``robot run`` at start, or
``robot audit upgrade``) verifies and re-seals them with the key file, which a migration
cannot read. An empty chain has nothing to re-seal: it is keyed at once.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004_audit'
down_revision = '0003_lookup'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('audit_head') as batch_op:
        batch_op.add_column(sa.Column('keyed', sa.Boolean(), server_default=sa.false(),
                                      nullable=False))
    head = sa.table('audit_head', sa.column('seq', sa.BigInteger()),
                    sa.column('keyed', sa.Boolean()))
    op.execute(head.update().where(head.c.seq == 0).values(keyed=True))


def downgrade() -> None:
    with op.batch_alter_table('audit_head') as batch_op:
        batch_op.drop_column('keyed')
