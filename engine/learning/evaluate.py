"""``tailormail evaluate``: candidate policies' estimated value on a logged-bandit data set.

Reference rows come first: the logged policy itself (its estimates are the mean reward it
earned) and a uniform split; then each candidate, replayed progressively from scratch
(``offpolicy.target_pmfs``), and, for a campaign's ledger, the stored champion as it is
(in-sample: it has learned from these decisions). The same decisions, from the ledger or
from the file ``tailormail export`` wrote, give the same estimates.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from engine.errors import TailormailError
from engine.learning import offpolicy
from engine.learning.estimators import ESTIMATORS, Estimate
from engine.learning.logged import LoggedDecision
from engine.types import Policy

PolicyMaker = Callable[[str, dict[str, Any]], Policy]


@dataclass(frozen=True)
class Evaluated:
    """One evaluated policy: a label and its IPS, SNIPS and DR estimates."""

    label: str
    estimates: dict[str, Estimate]

    def as_dict(self) -> dict[str, Any]:
        """JSON form (``tailormail evaluate --json``)."""
        return {"policy": self.label} | {k: v.as_dict() for k, v in self.estimates.items()}


def parse_params(pairs: Sequence[str]) -> dict[str, Any]:
    """``k=v`` pairs as parameters; a value reads as JSON when it can (numbers, lists,
    true/false), else as a string. A pair without ``=`` is an error naming it."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise TailormailError(f"--param {pair!r}: use NAME=VALUE, e.g. epsilon=0.1")
        try:
            params[key.strip()] = json.loads(raw)
        except ValueError:
            params[key.strip()] = raw
    return params


def label_of(name: str, params: dict[str, Any]) -> str:
    """``name`` followed by its parameters, as people read it."""
    shown = " ".join(f"{k}={json.dumps(v)}" for k, v in params.items())
    return f"{name} {shown}".strip()


def evaluate(
    decisions: Sequence[LoggedDecision],
    candidates: Sequence[tuple[str, dict[str, Any]]],
    make: PolicyMaker,
    fixed: Sequence[tuple[str, Policy]] = (),
) -> list[Evaluated]:
    """Estimate the logged policy, ``uniform``, each candidate (replayed progressively)
    and each ``fixed`` model (asked as is) on ``decisions``."""
    model = offpolicy.RewardModel.fit(decisions)
    results = [
        Evaluated(
            "logged (as sent)",
            offpolicy.estimates(decisions, offpolicy.logged_pmfs(decisions), model),
        ),
        Evaluated(
            "uniform split",
            offpolicy.estimates(decisions, offpolicy.uniform_pmfs(decisions), model),
        ),
    ]
    for name, params in candidates:
        try:
            policy = make(name, params)
        except (TypeError, ValueError) as exc:
            raise TailormailError(f"policy {name!r}: {exc}") from exc
        pmfs = offpolicy.target_pmfs(policy, decisions, progressive=True)
        results.append(
            Evaluated(label_of(name, params), offpolicy.estimates(decisions, pmfs, model))
        )
    for label, policy in fixed:
        pmfs = offpolicy.target_pmfs(policy, decisions)
        results.append(Evaluated(label, offpolicy.estimates(decisions, pmfs, model)))
    return results


__all__ = ["ESTIMATORS", "Evaluated", "evaluate", "label_of", "parse_params"]
