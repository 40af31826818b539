"""status_webhooks: subscriptions of outbound status webhooks and their deliveries (outbox)

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-09 00:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision = '0023'
down_revision = '0022'
branch_labels = None
depends_on = None

PENDING = sa.text("status = 'pending'")


def upgrade() -> None:
    op.create_table(
        'webhook_subscriptions',
        sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column('url', sqlmodel.sql.sqltypes.AutoString(length=2048), nullable=False),
        sa.Column('secret', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column('events', sa.JSON(), nullable=True),
        sa.Column('key_id', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column('campaigns', sa.JSON(), nullable=True),
        sa.Column('allow_private', sa.Boolean(), nullable=False),
        sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column('disabled_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_table(
        'webhook_deliveries',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('subscription_id', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column('message_id', sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column('event_type', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column('trigger_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column('payload', sa.JSON(), nullable=True),
        sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=10), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('next_attempt_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column('last_error', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True),
        sa.Column('last_status_code', sa.Integer(), nullable=True),
        sa.Column('lease_owner', sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True),
        sa.Column('lease_expires', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column('delivered_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('message_id', name='uq_webhook_deliveries_message_id'),
    )
    with op.batch_alter_table('webhook_deliveries', schema=None) as batch_op:
        batch_op.create_index(
            'ix_webhook_deliveries_due', ['next_attempt_at'],
            sqlite_where=PENDING, postgresql_where=PENDING,
        )
        batch_op.create_index(batch_op.f('ix_webhook_deliveries_status'), ['status'], unique=False)
        batch_op.create_index(
            batch_op.f('ix_webhook_deliveries_subscription_id'), ['subscription_id'], unique=False
        )
        batch_op.create_index(
            batch_op.f('ix_webhook_deliveries_trigger_id'), ['trigger_id'], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table('webhook_deliveries', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_webhook_deliveries_trigger_id'))
        batch_op.drop_index(batch_op.f('ix_webhook_deliveries_subscription_id'))
        batch_op.drop_index(batch_op.f('ix_webhook_deliveries_status'))
        batch_op.drop_index('ix_webhook_deliveries_due')
    op.drop_table('webhook_deliveries')
    op.drop_table('webhook_subscriptions')
