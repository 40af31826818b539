"""item links per send, email_click interactions once per send and item

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("ledger", schema=None) as batch_op:
        batch_op.add_column(sa.Column("link_items", sa.JSON(), nullable=True))
    with op.batch_alter_table("interactions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("send_id", sa.Integer(), nullable=True))
        batch_op.create_unique_constraint("uq_interactions_send_item", ["send_id", "item_id"])


def downgrade() -> None:
    with op.batch_alter_table("interactions", schema=None) as batch_op:
        batch_op.drop_constraint("uq_interactions_send_item", type_="unique")
        batch_op.drop_column("send_id")
    with op.batch_alter_table("ledger", schema=None) as batch_op:
        batch_op.drop_column("link_items")
