"""Hearing back: the click intake and its log, tracking and provider events, suppressions,
rewards.

``intake`` (the request path appends to a local log; a writer stores behind it),
``eventlog`` (that append-only log), ``writer`` (the loop storing it in batches, on a
thread or in ``python -m engine.web.writer``), ``events`` (storing events and suppressing
addresses that asked for no mail), ``webhooks`` (provider webhook handlers: every check in
constant time, then parse), ``bots`` (reward hygiene: scanner clicks, machine opens),
``rewards`` (joining events to ledger rows once the attribution window closes). Imports
learning, the ledger and the layers below; never the Engine, the web tier or sending.
"""
