"""The reward job, composed of three steps that each do one thing.

1. replay the click logs that stopped tracking servers left behind (``store_orphans``),
2. join the events of every closed attribution window into rewards (``join_closed_windows``),
3. let each campaign's policy learn online from its new rewards (``learn_from_rewards``).

The scheduler's reward job, ``tailormail rewards`` and the tests all run ``join_rewards``,
so the order of the steps is written down once, here.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from engine.feedback.intake import store_orphans
from engine.feedback.rewards import RewardJoinSummary, join_closed_windows
from engine.learning.training import learn_online

if TYPE_CHECKING:
    from engine.app import Engine


def learn_from_rewards(engine: Engine, names: Sequence[str]) -> dict[str, str]:
    """Feed each campaign's new rewards to its policy; the model version each update made."""
    versions: dict[str, str] = {}
    for name in names:
        version = learn_online(engine, engine.campaign(name))
        if version is not None:
            versions[name] = version
    return versions


def join_rewards(
    engine: Engine, *, campaign: str | None = None, now: datetime | None = None, learn: bool = True
) -> RewardJoinSummary:
    """The reward job: replay orphaned intake logs, join closed windows, then learn online.

    ``campaign`` limits the join and the learning to one campaign (the replay is global);
    ``learn=False`` stops after the join.
    """
    names = [campaign] if campaign else sorted(engine.campaigns)
    replayed = store_orphans(engine)  # clicks in dead servers' logs count for this join
    summary = join_closed_windows(engine, names, now)
    summary.replayed = replayed
    if learn:
        summary.model_versions = learn_from_rewards(engine, names)
    return summary
