"""ledger: no unique key on decision_id (it derives from the run and the recipient, whose
unique key already guards it)

The decision id is a hash: each new row put its entry at a random place of that index,
on SQLite a page written per row, and PostgreSQL added a new entry at each of the row's
two updates as well. Nothing looks rows up by decision id. On SQLite the unnamed
constraint goes by rebuilding the table (batch mode): quick for the ledgers SQLite holds.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07 23:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0019'
down_revision = '0018'
branch_labels = None
depends_on = None

# SQLite's reflected constraints have no names: batch mode names them by this convention.
_NAMES = {'uq': 'uq_%(table_name)s_%(column_0_name)s'}


def _decision_keys() -> list[str]:
    """The names of the ledger's unique constraints on decision_id alone."""
    found = sa.inspect(op.get_bind()).get_unique_constraints('ledger')
    return [c['name'] or 'uq_ledger_decision_id' for c in found if c['column_names'] == ['decision_id']]


def upgrade() -> None:
    keys = _decision_keys()
    if not keys:
        return
    if op.get_bind().dialect.name == 'sqlite':
        with op.batch_alter_table('ledger', recreate='always', naming_convention=_NAMES) as batch:
            batch.drop_constraint('uq_ledger_decision_id', type_='unique')
        return
    for name in keys:
        op.drop_constraint(name, 'ledger', type_='unique')


def downgrade() -> None:
    if op.get_bind().dialect.name == 'sqlite':
        with op.batch_alter_table('ledger', recreate='always') as batch:
            batch.create_unique_constraint('uq_ledger_decision_id', ['decision_id'])
        return
    op.create_unique_constraint('ledger_decision_id_key', 'ledger', ['decision_id'])
