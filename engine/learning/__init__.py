"""The learning loop around a campaign's policy: logged decisions, off-policy estimates,
model versions (champion, challengers, rollback) and their audit trail.

``logged`` (decisions as the ledger logged them), ``export`` (the ledger as JSONL or
Vowpal Wabbit DSJSON), ``estimators`` (IPS, SNIPS, DR with intervals: the public
``engine.learning.estimators``, once ``engine.evaluation``), ``offpolicy`` and ``evaluate``
(a policy scored on logged decisions), ``arms``, ``champions`` (which model decides now,
and its policy), ``versions`` (the model-version audit table: record, rollback, release),
``challengers`` and ``training`` (retrain, evaluate, promote or keep)."""
