"""ledger: the Message-ID index holds only Message-IDs that are not ``<send_ref@domain>``

A Message-ID tailormail makes carries the send's reference, whose own index finds it; a
second index on the same random value wrote a page at random per handed-over row. The
rows whose Message-ID a plugin set, or that predate send references, stay indexed.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-07 23:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0021'
down_revision = '0020'
branch_labels = None
depends_on = None

_OTHER = (
    "message_id IS NOT NULL"
    " AND (send_ref IS NULL OR substr(message_id, 1, 34) <> '<' || send_ref || '@')"
)


def _index(where: str) -> None:
    op.drop_index('ix_ledger_message_id', table_name='ledger')
    clause = sa.text(where)
    op.create_index(
        'ix_ledger_message_id', 'ledger', ['message_id'], sqlite_where=clause, postgresql_where=clause
    )


def upgrade() -> None:
    _index(_OTHER)


def downgrade() -> None:
    _index('message_id IS NOT NULL')
