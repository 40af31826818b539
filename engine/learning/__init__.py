"""The learning loop around a campaign's policy: logged decisions, off-policy estimates,
model versions (champion, challengers, rollback) and their audit trail."""
