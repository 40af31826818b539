"""Who we mail: the audience filter and its pages, why an audience is empty, importing
recipients, items and interactions (with their checks), compliance (nobody who asked for no
mail gets it), who of a batch may be mailed and what a policy knows about each, and
forgetting people (their rows, their files, the forgotten-address key).

Modules: ``filters`` (a campaign's audience, compiled to SQL, streamed in pages), ``empty``,
``importer`` and ``checks``, ``compliance``, ``eligibility`` (compliance, then the
eligibility hooks), ``contexts`` (the features hooks' answers merged), ``forgetting``,
``forgetting_key``, ``personal_files``, ``compaction``. Imports only the ground floor,
``db``, ``models`` and ``settings`` (docs/architecture.md).
"""

from __future__ import annotations

from typing import Any

from engine.moved import forward


def __getattr__(name: str) -> Any:
    # ``engine.audience`` was a module until issue 19: its names still read, with a warning
    return forward(__name__, "engine.audience", "engine.audience.filters", name)
