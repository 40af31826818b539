"""model versions become an audit table; ledger rows keep their arm and shadow decision

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_AUDIT = (
    ("kind", sqlmodel.sql.sqltypes.AutoString(length=20)),
    ("settings", sa.JSON()),
    ("config_settings", sa.JSON()),
    ("data_first_id", sa.Integer()),
    ("data_last_id", sa.Integer()),
    ("data_from", sqlmodel.sql.sqltypes.UTCDateTime()),
    ("data_to", sqlmodel.sql.sqltypes.UTCDateTime()),
    ("estimates", sa.JSON()),
    ("decision", sqlmodel.sql.sqltypes.AutoString(length=40)),
    ("reason", sqlmodel.sql.sqltypes.AutoString()),
)


def upgrade() -> None:
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        for name, kind in _AUDIT:
            batch_op.add_column(sa.Column(name, kind, nullable=True))
        batch_op.add_column(sa.Column("n_eval", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(
            sa.Column("pinned", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("ledger", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("arm", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=True)
        )
        batch_op.add_column(sa.Column("shadow", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("ledger", schema=None) as batch_op:
        batch_op.drop_column("shadow")
        batch_op.drop_column("arm")
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        for name in ("pinned", "n_eval", *(name for name, _ in reversed(_AUDIT))):
            batch_op.drop_column(name)
