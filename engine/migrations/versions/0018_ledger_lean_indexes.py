"""ledger: no index on run_id alone (the (run, recipient) key leads with it); the
Message-ID, send reference and provider id indexes hold only rows that have one

Every ledger row is inserted with none of the three ids, and PostgreSQL rewrites every
index entry of a row at each of its two updates: fewer entries per row is less work per
email, on both databases.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07 20:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0018'
down_revision = '0017'
branch_labels = None
depends_on = None

_PARTIAL = ('message_id', 'send_ref', 'provider_id')


def upgrade() -> None:
    op.drop_index('ix_ledger_run_id', table_name='ledger')
    for column in _PARTIAL:
        where = sa.text(f'{column} IS NOT NULL')
        op.drop_index(f'ix_ledger_{column}', table_name='ledger')
        op.create_index(
            f'ix_ledger_{column}', 'ledger', [column], sqlite_where=where, postgresql_where=where
        )


def downgrade() -> None:
    for column in _PARTIAL:
        op.drop_index(f'ix_ledger_{column}', table_name='ledger')
        op.create_index(f'ix_ledger_{column}', 'ledger', [column])
    op.create_index('ix_ledger_run_id', 'ledger', ['run_id'])
