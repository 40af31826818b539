"""campaign pauses can be resumed; the ledger's Message-ID is indexed for provider events

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 15:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('campaign_pauses', schema=None) as batch_op:
        batch_op.add_column(sa.Column('resumed_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
    with op.batch_alter_table('ledger', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_ledger_message_id'), ['message_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('ledger', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_ledger_message_id'))
    with op.batch_alter_table('campaign_pauses', schema=None) as batch_op:
        batch_op.drop_column('resumed_at')
