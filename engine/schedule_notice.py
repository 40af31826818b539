"""The one-time notice for schedules whose meaning changed when tailormail began reading
them as crontab(5) does (see CHANGELOG.md): numeric weekdays fire one day earlier than before, and a
schedule restricting both day fields fires on either day instead of on both.

The notice is printed once per project: a line in ``.tailormail-notices`` (in the project
directory) remembers it was shown.
"""

from __future__ import annotations

import calendar
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path

from engine.errors import TailormailWarning
from engine.schedules import Schedule, legacy_weekdays, parse_schedule

NOTICES_FILE = ".tailormail-notices"
"""Where a project remembers the notices it has shown, one id a line."""
NOTICE_ID = "crontab-weekdays"


class ScheduleChangeWarning(TailormailWarning):
    """A campaign's schedule fires on other days than it used to."""


def day_names(weekdays: frozenset[int]) -> str:
    """``Monday, Friday``: weekdays (Sunday = 0) by full name, Monday first."""
    order = sorted(weekdays, key=lambda d: (d + 6) % 7)
    return ", ".join(calendar.day_name[(d + 6) % 7] for d in order)


def _days(schedule: Schedule, weekdays: frozenset[int], *, either: bool) -> str:
    names = day_names(weekdays)
    if not schedule.day_restricted:
        return names
    days = ", ".join(str(d) for d in sorted(schedule.days))
    if either:
        return f"day {days} of the month or any {names}"
    return f"day {days} of the month when it is a {names}"


def changed_schedules(schedules: Mapping[str, str | None]) -> list[str]:
    """One line per campaign (name -> schedule) whose days differ from the old reading."""
    lines = []
    for name, text in sorted(schedules.items()):
        old = None if text is None else legacy_weekdays(text)
        if text is None or old is None:  # unscheduled, or refused before: nothing changed
            continue
        schedule = parse_schedule(text)
        if old == schedule.weekdays and not schedule.either_day:
            continue
        now = _days(schedule, schedule.weekdays, either=schedule.either_day)
        before = _days(schedule, old, either=False)
        lines.append(f"campaign {name!r}: {text!r} now fires on {now}; it used to fire on {before}")
    return lines


def _shown(project_dir: Path) -> set[str]:
    try:
        return set((project_dir / NOTICES_FILE).read_text(encoding="utf-8").split())
    except OSError:
        return set()


def warn_changed_schedules(project_dir: Path, schedules: Mapping[str, str | None]) -> bool:
    """Warn, once per project, about schedules whose days changed; True when it warned."""
    lines = changed_schedules(schedules)
    if not lines or NOTICE_ID in _shown(project_dir):
        return False
    warnings.warn(
        ScheduleChangeWarning(
            "schedules are now read as crontab(5) reads them (0 and 7 are Sunday, 1 is "
            "Monday; when both day fields are set, either one fires):\n  "
            + "\n  ".join(lines)
            + "\n  Check with `tailormail schedule`; see CHANGELOG.md. (Shown once.)"
        ),
        stacklevel=2,
    )
    _remember(project_dir, [NOTICE_ID])
    return True


def _remember(project_dir: Path, notices: Iterable[str]) -> None:
    try:
        with (project_dir / NOTICES_FILE).open("a", encoding="utf-8") as handle:
            handle.writelines(f"{notice}\n" for notice in notices)
    except OSError:  # a read-only project shows the notice again next time, nothing worse
        pass
