"""audit log as several hash chains: (chain, seq) identifies an entry

Revision ID: 0002
Revises: 0001
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Entries written before this revision are chain 1, unchanged (their hashes hold).
    with op.batch_alter_table('audit_log') as batch_op:
        batch_op.add_column(sa.Column('chain', sa.Integer(), server_default='1', nullable=False,
                                      autoincrement=False))
        batch_op.drop_constraint('pk_audit_log', type_='primary')
        batch_op.create_primary_key('pk_audit_log', ['chain', 'seq'])
        batch_op.create_index('ix_audit_log_at', ['at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('audit_log') as batch_op:
        batch_op.drop_index('ix_audit_log_at')
        batch_op.drop_constraint('pk_audit_log', type_='primary')
        batch_op.create_primary_key('pk_audit_log', ['seq'])
        batch_op.drop_column('chain')
