"""Reports: the queries behind ``tailormail report`` (tables and charts stay in the CLI).

``variants`` (per-variant sends, human clicks, CTR with a Wilson interval), ``items``
(which content draws clicks, and where in the email), ``learning`` (the learning report:
champion, challengers, off-policy estimates) and ``lift`` (the bandit's lift over its arms).
"""
