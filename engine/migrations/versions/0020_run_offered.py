"""runs: the variants a run offers, stored once (its rows offered them keep none of their own)

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07 23:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0020'
down_revision = '0019'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('runs') as batch:
        batch.add_column(sa.Column('offered', sa.JSON(), nullable=True))


def downgrade() -> None:
    # Rows that relied on their run's variants get them back first: nothing is lost.
    op.execute(
        'UPDATE ledger SET offered = (SELECT runs.offered FROM runs WHERE runs.id = ledger.run_id)'
        " WHERE offered IS NULL OR CAST(offered AS TEXT) = 'null'"
    )
    with op.batch_alter_table('runs') as batch:
        batch.drop_column('offered')
