"""ledger leases: the worker holding a row (owner) and until when (lease_expires)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02 15:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('ledger', schema=None) as batch_op:
        batch_op.add_column(sa.Column('owner', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True))
        batch_op.add_column(sa.Column('lease_expires', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
        batch_op.create_index(batch_op.f('ix_ledger_owner'), ['owner'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('ledger', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_ledger_owner'))
        batch_op.drop_column('lease_expires')
        batch_op.drop_column('owner')
