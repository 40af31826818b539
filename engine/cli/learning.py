"""The learning commands: ``train``, ``models``, ``rollback`` and ``evaluate``.

Registered on the main app by ``engine.cli.commands``; each opens the project like every command.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from engine.cli.support import ProjectOption, console, open_engine
from engine.errors import TailormailError

if TYPE_CHECKING:
    from engine.learning.challengers import TrainReport
    from engine.learning.estimators import Estimate


def _interval(estimate: Estimate | None) -> str:
    if estimate is None:
        return ""
    return f"{estimate.value:.4f} [{estimate.ci_low:.4f}, {estimate.ci_high:.4f}]"


def _print_train(report: TrainReport) -> None:
    if report.skipped:
        console.print(Text(f"{report.campaign}: nothing trained: {report.skipped}"))
        return
    table = Table(
        title=f"challengers of {report.campaign}: trained on {report.n_train} decisions, "
        f"evaluated on the newest {report.n_holdout}"
    )
    for column in ("version", "settings", "DR value [95% CI]", "vs champion [95% CI]", "decision"):
        table.add_column(column)
    table.add_row("", "champion's settings (retrained)", _interval(report.baseline), "", "")
    for outcome in report.outcomes:
        params = outcome.settings.get("params") or {}
        table.add_row(
            outcome.version,
            Text(", ".join(f"{k}={v!r}" for k, v in params.items()) or "(defaults)"),
            _interval(outcome.estimate),
            _interval(outcome.difference),
            "promoted" if outcome.promoted else "not promoted",
        )
    console.print(table)
    console.print(
        f"champion is now {report.promoted}"
        if report.promoted
        else "no challenger's lower bound was above zero: the champion stays"
    )


def train(
    campaign: Annotated[str, typer.Argument(help="The campaign's name.")],
    project: ProjectOption = None,
) -> None:
    """Train challengers with other settings from the ledger; promote one only when it
    is better than the champion on the newest held-out decisions."""
    # lazy: engine.learning brings numpy (~0.3 s), and --help imports every command module
    from engine.learning.challengers import train_challengers

    with open_engine(project) as engine:
        report = train_challengers(engine, engine.campaign(campaign))
    _print_train(report)


def models(
    campaign: Annotated[str, typer.Argument(help="The campaign's name.")],
    project: ProjectOption = None,
) -> None:
    """The model-version audit table: every training, its data, estimates and decision."""
    # lazy: engine.learning brings numpy (~0.3 s), and --help imports every command module
    from engine.learning.versions import data_range, history

    with open_engine(project) as engine:
        engine.campaign(campaign)
        rows = history(engine.db, campaign)
    if not rows:
        console.print(f"{campaign} has no model versions yet (the reward job makes the first)")
        return
    table = Table(title=f"model versions of {campaign}")
    for column in ("version", "when", "kind", "role", "data", "settings", "estimates", "decision"):
        table.add_column(column)
    for row in rows:
        params = (row.settings or {}).get("params") or {}
        estimates = row.estimates or {}
        shown = "; ".join(
            f"{name} {e['value']:.4f} [{e['ci_low']:.4f}, {e['ci_high']:.4f}]"
            for name, e in estimates.items()
        )
        role = row.role + (" (pinned)" if row.pinned else "")
        table.add_row(
            Text(row.version),
            f"{row.created_at:%Y-%m-%d %H:%M}",
            row.kind or "online",
            role,
            Text(data_range(row)),
            Text(", ".join(f"{k}={v!r}" for k, v in params.items()) or row.policy),
            Text(shown),
            Text(f"{row.decision or 'promoted'}: {row.reason or ''}".rstrip(": ")),
        )
    console.print(table)


def rollback(
    campaign: Annotated[str, typer.Argument(help="The campaign's name.")],
    version: Annotated[
        str | None, typer.Argument(help="The version to pin (default: the champion's parent).")
    ] = None,
    release: Annotated[
        bool, typer.Option("--release", help="Unpin the champion: learning resumes.")
    ] = False,
    project: ProjectOption = None,
) -> None:
    """Pin an earlier model as champion: later decisions use it and log its version."""
    # lazy: engine.learning brings numpy (~0.3 s), and --help imports every command module
    from engine.learning import versions

    with open_engine(project) as engine:
        config = engine.campaign(campaign)
        if release:
            released = versions.release(engine.db, config)
            console.print(
                f"released {released}: learning and promotions resume"
                if released
                else f"{campaign}'s champion is not pinned"
            )
            return
        pinned = versions.rollback(engine.db, config, version)
    console.print(
        f"{campaign}: {pinned.version} is the champion again, pinned (learning waits until "
        f"`tailormail rollback {campaign} --release`)"
    )


def evaluate(
    campaign: Annotated[str | None, typer.Argument(help="The campaign's name.")] = None,
    log: Annotated[
        Path | None, typer.Option("--log", help="An exported JSONL or DSJSON file instead.")
    ] = None,
    policy: Annotated[
        list[str] | None, typer.Option("--policy", help="A candidate policy (repeatable).")
    ] = None,
    param: Annotated[
        list[str] | None, typer.Option("--param", help="NAME=VALUE for the candidates.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    project: ProjectOption = None,
) -> None:
    """Estimate candidate policies' value (IPS, SNIPS, DR, 95% intervals) on a campaign's
    ledger or on an exported log, against the policy that logged it."""
    # lazy: engine.learning brings numpy (~0.3 s), and --help imports every command module
    import engine as api
    from engine.learning.champions import champion, champion_policy, configured_settings
    from engine.learning.evaluate import evaluate as run_evaluation
    from engine.learning.evaluate import parse_params
    from engine.learning.logged import from_ledger, read_log

    if (campaign is None) == (log is None):
        raise TailormailError("evaluate needs a CAMPAIGN or --log FILE (one of them)")
    params = parse_params(param or [])
    if params and not policy:
        raise TailormailError("--param needs a --policy to apply to")
    candidates = [(name, params) for name in policy or []]
    fixed: list[Any] = []
    if log is not None:
        if not log.is_file():
            raise TailormailError(f"--log {log}: no such file")
        decisions = read_log(log)
        results = run_evaluation(
            decisions, candidates or [("vw", {})], lambda n, p: api.policy(n, **p)
        )
    else:
        assert campaign is not None
        with open_engine(project) as engine:
            config = engine.campaign(campaign)
            decisions = from_ledger(engine, campaign)
            if not decisions:
                raise TailormailError(
                    f"campaign {campaign!r} has no rewarded decisions yet (run "
                    "`tailormail rewards` once their attribution window has closed)"
                )
            if not candidates:
                settings = configured_settings(config)
                candidates = [(settings["name"], settings["params"])]
            current = champion(engine.db, config)
            if current is not None:
                label = f"champion {current.version} (in-sample)"
                fixed.append((label, champion_policy(engine.db, engine.policies, config)))

            def make(name: str, p: dict[str, Any]) -> Any:
                return engine.policies.get(name)(**p)

            results = run_evaluation(decisions, candidates, make, fixed)
    if as_json:
        print(json.dumps([r.as_dict() for r in results], indent=2))
        return
    source = str(log) if log is not None else f"the ledger of {campaign}"
    table = Table(title=f"estimated value per decision on {len(decisions)} decisions of {source}")
    for column in ("policy", "IPS [95% CI]", "SNIPS [95% CI]", "DR [95% CI]"):
        table.add_column(column)
    for result in results:
        figures = (_interval(result.estimates[name]) for name in ("ips", "snips", "dr"))
        table.add_row(Text(result.label), *figures)
    console.print(table)
