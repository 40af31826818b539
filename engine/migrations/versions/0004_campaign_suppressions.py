"""campaign-scoped suppressions (an unsubscribe from one campaign only)

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "campaign_suppressions",
        sa.Column("email", sqlmodel.sql.sqltypes.AutoString(length=320), nullable=False),
        sa.Column("campaign", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("send_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("email", "campaign"),
    )


def downgrade() -> None:
    op.drop_table("campaign_suppressions")
