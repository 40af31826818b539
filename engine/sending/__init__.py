"""Sending: one campaign run and everything around it.

``pipeline`` (audience -> eligibility -> features -> recipe -> decision -> render -> ledger
-> delivery), ``run_effects`` (the side effects a run receives: ledger, backend, shard
runner), ``real_run`` (a run with the real ones: ``run_campaign``), ``shards`` and
``shard_tasks`` (a large run on workers, signed tasks), ``runs`` (run ids, what each did),
``rehearsal``, ``rehearsal_effects`` and ``rehearsal_record`` (preview, test send, dry run:
in-memory effects), ``deliverability`` (pausing a campaign whose complaint or bounce rate
passes its threshold), ``scheduler`` and ``leader`` (APScheduler wiring, one scheduler per
database). Imports the Engine and the stages below it, never the web tier or the CLI.
"""
