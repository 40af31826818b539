"""What ``report`` and ``rewards`` print about learning (see ``engine.reports.learning``):
rewards waiting for their window, lift against the control group, the policy's value
against the control and a uniform split, model versions over time, CTR by subject and by
template, and the PNG of CTR per variant over runs."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table
from rich.text import Text

from engine.models import as_utc, utcnow

if TYPE_CHECKING:
    from engine.app import Engine
    from engine.feedback.rewards import RewardJoinSummary
    from engine.learning.estimators import Estimate


def _ci(estimate: Estimate, points: bool = False) -> str:
    """``value [low, high]``; ``points`` shows a rate difference in percentage points."""
    if points:
        figures = (100 * estimate.value, 100 * estimate.ci_low, 100 * estimate.ci_high)
        return "{:+.1f} [{:+.1f}, {:+.1f}] points".format(*figures)
    return f"{estimate.value:.4f} [{estimate.ci_low:.4f}, {estimate.ci_high:.4f}]"


def _when(moment: datetime) -> str:
    left = as_utc(moment) - utcnow()
    hours = max(0.0, left.total_seconds() / 3600)
    span = f"in {hours:.1f} h" if hours < 48 else f"in {hours / 24:.1f} days"
    return f"{as_utc(moment):%Y-%m-%d %H:%M} UTC ({span})"


def waiting_line(engine: Engine, campaign: str) -> str:
    """``N decisions wait for their attribution window; the next closes at ...``."""
    # lazy: engine.learning/reports bring numpy; --help imports every command module
    from engine.reports.learning import waiting_rewards

    waiting = waiting_rewards(engine.db, engine.campaign(campaign))
    line = f"{waiting.in_window} decisions wait for their attribution window"
    if waiting.next_close is not None:
        line += f"; the next closes {_when(waiting.next_close)}"
    if waiting.ready:
        line += f"; {waiting.ready} closed, joined by the next reward job"
    return line


def print_rewards(engine: Engine, summary: RewardJoinSummary, console: Console) -> None:
    """One line per campaign: rewards joined, the model decision, what still waits."""
    # lazy: engine.learning/reports bring numpy; --help imports every command module
    from engine.learning.versions import history

    for name, count in sorted(summary.rewarded.items()):
        version = summary.model_versions.get(name)
        model = "model unchanged"
        if version is not None:
            row = next((r for r in history(engine.db, name) if r.version == version), None)
            decision = row.decision if row is not None else "promoted"
            model = f"model {version} {decision}"
        console.print(
            Text(f"{name}: {count} rewards joined; {model}; {waiting_line(engine, name)}")
        )


def ctr_chart(engine: Engine, campaign: str, path: Path) -> Path | None:
    """Write the PNG of CTR per variant over runs; None when nothing is rewarded yet."""
    # lazy: matplotlib and numpy (~0.5 s) only when a chart is drawn
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from engine.reports.learning import ctr_over_runs

    series = ctr_over_runs(engine.db, campaign)
    if not series:
        return None
    figure = Figure(figsize=(8, 4.8), dpi=110, layout="tight")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    starts = sorted({when for points in series.values() for when, _ in points})
    position = {when: index for index, when in enumerate(starts)}
    for variant, points in sorted(series.items()):
        x = [position[when] for when, _ in points]
        axes.plot(x, [ctr for _, ctr in points], marker="o", label=variant)
    step = max(1, len(starts) // 12)  # at most a dozen labels
    ticks = list(range(0, len(starts), step))
    axes.set_xticks(ticks, [f"{starts[i]:%m-%d %H:%M}" for i in ticks])
    axes.set(title=f"{campaign}: CTR per variant per run", xlabel="run (start, UTC)")
    axes.set(ylabel="CTR of rewarded sends", ylim=(0, None))
    axes.yaxis.set_major_formatter(lambda value, _pos: f"{value:.0%}")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    figure.autofmt_xdate()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path


def print_learning_report(engine: Engine, campaign: str, console: Console, png: Path) -> None:
    """The learning sections of ``report`` (after the per-variant table)."""
    # lazy: engine.learning/reports bring numpy; --help imports every command module
    from engine.learning.versions import history
    from engine.reports.learning import by_part, value_summary
    from engine.reports.lift import measured_lift
    from engine.reports.variants import campaign_report

    config = engine.campaign(campaign)
    for kind, parts in by_part(campaign_report(engine, campaign), config).items():
        table = Table(title=f"CTR by {kind}")
        for column in (kind, "sends", "clicks", "CTR", "95% interval"):
            table.add_column(column, justify="left" if column == kind else "right")
        for part in parts:
            low, high = part.ctr_interval
            figures = (str(part.sends), str(part.clicks), f"{part.ctr:.1%}")
            table.add_row(part.variant, *figures, f"{low:.1%} - {high:.1%}")
        console.print(table)
    lift = measured_lift(engine, campaign)
    if lift is not None:
        relative = f" ({lift.relative:+.0%} relative)" if lift.relative is not None else ""
        console.print(
            Text(
                f"lift against the control group: CTR {lift.treatment.ctr:.1%} "
                f"(n={lift.treatment.n}) vs {lift.control.ctr:.1%} (n={lift.control.n}): "
                f"{_ci(lift.ctr, points=True)}{relative}; "
                f"mean reward {_ci(lift.reward)}"
            )
        )
    values = value_summary(engine, config)
    if values:
        table = Table(title="value per decision (mean reward, 95% interval)")
        table.add_column("policy")
        table.add_column("value [95% CI]", justify="right")
        for label, estimate in values.items():
            table.add_row(Text(label), _ci(estimate))
        console.print(table)
    models = history(engine.db, campaign)
    changes = [r for r in models if (r.decision or "promoted").startswith(("promoted", "pinned"))]
    if changes:
        table = Table(title="champion over time")
        for column in ("when", "version", "kind", "decision"):
            table.add_column(column)
        for row in changes[-10:]:
            when = f"{row.created_at:%Y-%m-%d %H:%M}"
            table.add_row(when, Text(row.version), row.kind or "online", row.decision or "")
        console.print(table)
        refused = sum(1 for r in models if r.decision in ("not promoted", "rolled back"))
        console.print(
            Text(
                f"{refused} trained models were not promoted or rolled back "
                f"(`tailormail models {campaign}`)"
            )
        )
    console.print(Text(waiting_line(engine, campaign)))
    chart = ctr_chart(engine, campaign, png)
    if chart is not None:
        console.print(Text(f"CTR per variant over time: {chart}"))
