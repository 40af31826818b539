"""forgotten addresses (keyed hashes)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 15:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('forgotten_addresses',
    sa.Column('address_hash', sqlmodel.sql.sqltypes.AutoString(length=80), nullable=False),
    sa.Column('forgotten_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('address_hash')
    )


def downgrade() -> None:
    op.drop_table('forgotten_addresses')
