"""Where a run spends its time: wall-clock seconds per stage of the send path, per batch.

A ``CampaignRun`` times each batch's stages (reading the audience, finding who is done,
eligibility, features, recommending, deciding, the ledger's insert, rendering, the
hand-over, the transport, recording the outcomes) with ``run.stages(name)``. By default
``stages`` is ``NO_STAGES``, whose blocks time nothing and allocate nothing: the cost is
one call per stage per batch, not per recipient. ``bench/campaign.py`` sets a
``StageTimes`` on the run it measures and prints each stage's share of the run.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

STAGES = (
    "audience",
    "done",
    "eligibility",
    "features",
    "recommend",
    "decide",
    "claim",
    "render",
    "hand_over",
    "transmit",
    "record",
)
"""The stages of the send path, in the order a batch goes through them."""


class NoStages:
    """Times nothing: every block is the same empty context manager."""

    _nothing: AbstractContextManager[None] = nullcontext()

    def __call__(self, stage: str) -> AbstractContextManager[None]:
        return self._nothing


NO_STAGES = NoStages()
"""What a run times by default: nothing."""


class StageTimes(NoStages):
    """Wall-clock seconds per stage, summed over every block timed under that name."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = dict.fromkeys(STAGES, 0.0)

    @contextmanager
    def _timed(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start

    def __call__(self, stage: str) -> AbstractContextManager[None]:
        return self._timed(stage)

    def shares(self, total: float) -> dict[str, float]:
        """Each stage's share of ``total`` seconds (a run's wall time), and ``other``:
        what no stage covers (opening the run, loading models, closing)."""
        shares = {stage: seconds / total for stage, seconds in self.seconds.items()}
        shares["other"] = max(1.0 - sum(shares.values()), 0.0)
        return shares
