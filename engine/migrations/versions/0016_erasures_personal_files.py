"""erasures (what forget erased, naming nobody) and personal_files (files holding people)

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-04 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('erasures',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('erased_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('recipients', sa.Integer(), nullable=False),
    sa.Column('addresses', sa.Integer(), nullable=False),
    sa.Column('ledger_rows', sa.Integer(), nullable=False),
    sa.Column('events', sa.Integer(), nullable=False),
    sa.Column('interactions', sa.Integer(), nullable=False),
    sa.Column('suppressions', sa.Integer(), nullable=False),
    sa.Column('files', sa.Integer(), nullable=False),
    sa.Column('compacted', sa.Boolean(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('personal_files',
    sa.Column('path', sqlmodel.sql.sqltypes.AutoString(length=1024), nullable=False),
    sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('holder', sqlmodel.sql.sqltypes.AutoString(length=80), nullable=True),
    sa.Column('written_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('path')
    )
    with op.batch_alter_table('personal_files', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_personal_files_holder'), ['holder'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('personal_files', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_personal_files_holder'))
    op.drop_table('personal_files')
    op.drop_table('erasures')
