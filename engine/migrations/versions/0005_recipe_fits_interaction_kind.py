"""interaction kind, stored recipe fits

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("interactions", schema=None) as batch_op:
        # Rows imported before kinds existed get the default kind.
        batch_op.add_column(
            sa.Column(
                "kind",
                sqlmodel.sql.sqltypes.AutoString(length=64),
                nullable=False,
                server_default="interaction",
            )
        )
    op.create_table(
        "recipe_fits",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("recipe", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("params_digest", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("fingerprint", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("blob", sa.LargeBinary(), nullable=False),
        sa.Column("fit_seconds", sa.Float(), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("recipe", "params_digest", "fingerprint", name="uq_recipe_fits_key"),
    )
    op.create_table(
        "run_recipe_fits",
        sa.Column("run_id", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("fit_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("run_id"),
    )
    with op.batch_alter_table("run_recipe_fits", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_run_recipe_fits_fit_id"), ["fit_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("run_recipe_fits", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_run_recipe_fits_fit_id"))
    op.drop_table("run_recipe_fits")
    op.drop_table("recipe_fits")
    with op.batch_alter_table("interactions", schema=None) as batch_op:
        batch_op.drop_column("kind")
