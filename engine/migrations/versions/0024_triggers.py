"""triggers: alerts triggered over the API, one ledger row per trigger, released later

The ledger's key becomes (run_id, recipient_id, trigger_id): a trigger run holds a row per
trigger, a scheduled run's rows have trigger_id "" (one per recipient, as before).
``release_at`` is when a ``scheduled`` row is due; ``ix_ledger_release`` holds only those.
``triggers`` keeps what each trigger asked for; ``idempotency_keys`` the answers given.

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-08 01:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision = '0024'
down_revision = '0023'
branch_labels = None
depends_on = None

_SCHEDULED = sa.text("status = 'scheduled'")


def upgrade() -> None:
    if op.get_bind().dialect.name == 'sqlite':
        with op.batch_alter_table('ledger', recreate='always') as batch:
            batch.add_column(
                sa.Column(
                    'trigger_id',
                    sqlmodel.sql.sqltypes.AutoString(length=40),
                    server_default='',
                    nullable=False,
                )
            )
            batch.add_column(sa.Column('release_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
            batch.drop_constraint('uq_ledger_run_recipient', type_='unique')
            batch.create_unique_constraint(
                'uq_ledger_run_recipient_trigger', ['run_id', 'recipient_id', 'trigger_id']
            )
    else:
        op.add_column(
            'ledger',
            sa.Column(
                'trigger_id',
                sqlmodel.sql.sqltypes.AutoString(length=40),
                server_default='',
                nullable=False,
            ),
        )
        op.add_column('ledger', sa.Column('release_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
        op.create_unique_constraint(
            'uq_ledger_run_recipient_trigger', 'ledger', ['run_id', 'recipient_id', 'trigger_id']
        )
        op.drop_constraint('uq_ledger_run_recipient', 'ledger', type_='unique')
    op.create_index(
        'ix_ledger_release',
        'ledger',
        ['release_at'],
        sqlite_where=_SCHEDULED,
        postgresql_where=_SCHEDULED,
    )
    op.create_table(
        'triggers',
        sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column('campaign', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('run_id', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column('recipient_id', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column('event_id', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.Column('digest', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('data', sa.JSON(), nullable=True),
        sa.Column('items', sa.JSON(), nullable=True),
        sa.Column('send_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column('key_id', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column('send_id', sa.Integer(), nullable=True),
        sa.Column('answer', sa.JSON(), nullable=True),
        sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('campaign', 'event_id', name='uq_triggers_campaign_event'),
    )
    op.create_index('ix_triggers_recipient_id', 'triggers', ['recipient_id'])
    op.create_index('ix_triggers_created_at', 'triggers', ['created_at'])
    op.create_table(
        'idempotency_keys',
        sa.Column('key_id', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column('key', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column('digest', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('status_code', sa.Integer(), nullable=True),
        sa.Column('answer', sa.JSON(), nullable=True),
        sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint('key_id', 'key'),
    )
    op.create_index('ix_idempotency_keys_created_at', 'idempotency_keys', ['created_at'])


def downgrade() -> None:
    op.drop_table('idempotency_keys')
    op.drop_table('triggers')
    op.drop_index('ix_ledger_release', table_name='ledger')
    # A trigger run's rows would break the old key (one row per run and recipient).
    op.execute("DELETE FROM ledger WHERE trigger_id <> ''")
    if op.get_bind().dialect.name == 'sqlite':
        with op.batch_alter_table('ledger', recreate='always') as batch:
            batch.drop_constraint('uq_ledger_run_recipient_trigger', type_='unique')
            batch.create_unique_constraint('uq_ledger_run_recipient', ['run_id', 'recipient_id'])
            batch.drop_column('release_at')
            batch.drop_column('trigger_id')
        return
    op.drop_constraint('uq_ledger_run_recipient_trigger', 'ledger', type_='unique')
    op.create_unique_constraint('uq_ledger_run_recipient', 'ledger', ['run_id', 'recipient_id'])
    op.drop_column('ledger', 'release_at')
    op.drop_column('ledger', 'trigger_id')
