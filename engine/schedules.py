"""Campaign schedules read exactly as crontab(5) reads them, then handed to APScheduler.

Five fields (minute, hour, day of month, month, day of week) or six (seconds first). In
the day-of-week field 0 and 7 are Sunday and 1 is Monday, names are ``SUN``..``SAT``;
when both day fields are restricted (neither starts with ``*``), a day matching either
fires, as in Vixie cron. APScheduler counts weekdays from Monday = 0 and requires both day
fields to match, so this module parses every field itself and gives APScheduler explicit
value lists (weekdays by name), never the text as written.
"""

from __future__ import annotations

import calendar
import difflib
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger

WEEKDAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
"""crontab's day names by number: 0 is Sunday (7 is Sunday too)."""
_MONTH_NAMES = tuple(name.lower() for name in calendar.month_abbr[1:])
_APSCHEDULER_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # its 0..6
_NICKNAMES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_ELEMENT = re.compile(r"^(?:(\*)|([A-Za-z0-9]+)(?:-([A-Za-z0-9]+))?)(?:/([A-Za-z0-9]+))?$")
_LONGEST_MONTH = {
    month: 29 if month == 2 else calendar.monthrange(2001, month)[1] for month in range(1, 13)
}


class ScheduleError(ValueError):
    """A schedule that is malformed or can never fire; the message says what to write."""


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()  # names[i] spells low + i
    note: str = ""

    @property
    def accepted(self) -> str:
        """What the field takes, for error messages: ``0-7 (0 and 7 are Sunday) or SUN-SAT``."""
        names = f" or {self.names[0].upper()}-{self.names[-1].upper()}" if self.names else ""
        return f"{self.low}-{self.high}{self.note}{names}"


_SECOND = _Field("second", 0, 59)
_MINUTE = _Field("minute", 0, 59)
_HOUR = _Field("hour", 0, 23)
_DAY = _Field("day-of-month", 1, 31)
_MONTH = _Field("month", 1, 12, _MONTH_NAMES)
_WEEKDAY = _Field("day-of-week", 0, 7, WEEKDAY_NAMES, ", 0 and 7 are Sunday,")
# How APScheduler 3 read the field before tailormail translated it: Monday = 0, no 7.
_LEGACY_WEEKDAY = _Field("day-of-week", 0, 6, _APSCHEDULER_DAYS)


def _value(text: str, spec: _Field) -> int:
    if text.isdigit():
        number = int(text)
    elif text.lower() in spec.names:
        number = spec.low + spec.names.index(text.lower())
    else:
        raise ScheduleError(f"{spec.name}: {text!r} is not one of {spec.accepted}")
    if not spec.low <= number <= spec.high:
        raise ScheduleError(f"{spec.name}: {number} is out of range ({spec.accepted})")
    return number


def _element(text: str, spec: _Field) -> set[int]:
    match = _ELEMENT.match(text)
    if not match:
        raise ScheduleError(
            f"{spec.name}: {text!r} is not crontab syntax; use *, a number, a range (1-5), "
            "a list (1,3,5) or a step (*/2, 1-5/2)"
        )
    star, first, last, step_text = match.groups()
    if star:
        low, high = spec.low, spec.high
    else:
        low = _value(first, spec)
        if last is None and step_text is not None:
            raise ScheduleError(
                f"{spec.name}: {text!r} needs a range before the step "
                f"(write {first}-{spec.high}/{step_text})"
            )
        high = low if last is None else _value(last, spec)
        if high < low:
            raise ScheduleError(
                f"{spec.name}: the range {text!r} runs backwards; write it from low to high "
                "or as a list"
            )
    step = 1
    if step_text is not None:
        if not step_text.isdigit() or int(step_text) == 0:
            raise ScheduleError(f"{spec.name}: the step in {text!r} must be a positive number")
        step = int(step_text)
    return set(range(low, high + 1, step))


def _parse_field(text: str, spec: _Field) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        values |= _element(part, spec)
    return frozenset(values)


def _compact(values: frozenset[int], spec: _Field) -> str:
    """APScheduler's spelling of a value set (same numbering as crontab for every field but
    the weekday): ``*``, ``*/2``, ``9-17``, ``1-31/3`` or an explicit list."""
    ordered = sorted(values)
    if ordered == list(range(spec.low, spec.high + 1)):
        return "*"
    steps = {b - a for a, b in zip(ordered, ordered[1:], strict=False)}
    if len(ordered) < 3 or len(steps) != 1:
        return ",".join(str(v) for v in ordered)
    step = steps.pop()
    if ordered[0] == spec.low and ordered[-1] + step > spec.high:
        return f"*/{step}"
    return f"{ordered[0]}-{ordered[-1]}" + (f"/{step}" if step > 1 else "")


@dataclass(frozen=True)
class Schedule:
    """A parsed schedule: the values each field allows (weekdays 0-6, Sunday = 0)."""

    text: str
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    day_restricted: bool
    weekday_restricted: bool

    @property
    def days_exist(self) -> bool:
        """True when some allowed month has some allowed day of the month (not ``31 2``)."""
        return any(day <= _LONGEST_MONTH[m] for m in self.months for day in self.days)

    @property
    def either_day(self) -> bool:
        """True when both day fields are restricted, so a day matching either one fires."""
        return self.day_restricted and self.weekday_restricted

    def trigger(self, timezone: str = "UTC") -> BaseTrigger:
        """The APScheduler trigger firing exactly when crontab(5) would."""
        common = {
            "second": _compact(self.seconds, _SECOND),
            "minute": _compact(self.minutes, _MINUTE),
            "hour": _compact(self.hours, _HOUR),
            "month": _compact(self.months, _MONTH),
            "timezone": timezone,
        }
        days = _compact(self.days, _DAY)
        weekdays = "*" if len(self.weekdays) == 7 else weekday_list(self.weekdays)
        if self.either_day:  # crontab's rule: either day field matching fires
            by_weekday = CronTrigger(day="*", day_of_week=weekdays, **common)
            if not self.days_exist:  # APScheduler would search to year 9999 at every tick
                return by_weekday
            return OrTrigger([CronTrigger(day=days, day_of_week="*", **common), by_weekday])
        return CronTrigger(day=days, day_of_week=weekdays, **common)


def weekday_list(weekdays: frozenset[int]) -> str:
    """``mon,fri``: weekdays (Sunday = 0) as names, Monday first."""
    return ",".join(WEEKDAY_NAMES[d] for d in sorted(weekdays, key=lambda d: (d + 6) % 7))


def parse_schedule(text: str) -> Schedule:
    """Parse a crontab line (five fields, or six with seconds first, or ``@daily`` and the
    other nicknames); ``ScheduleError`` says what is wrong and what to write."""
    if text.strip().lower() == "@reboot":
        raise ScheduleError("@reboot has no time to fire at; write a crontab line")
    fields = _NICKNAMES.get(text.strip().lower(), text).split()
    if len(fields) not in (5, 6):
        raise ScheduleError(
            f"{text!r} has {len(fields)} fields; write five (minute hour day-of-month month "
            "day-of-week) or six (seconds first)"
        )
    second = fields.pop(0) if len(fields) == 6 else "0"
    minute, hour, day, month, weekday = fields
    weekdays = frozenset(d % 7 for d in _parse_field(weekday, _WEEKDAY))
    schedule = Schedule(
        text=text,
        seconds=_parse_field(second, _SECOND),
        minutes=_parse_field(minute, _MINUTE),
        hours=_parse_field(hour, _HOUR),
        days=_parse_field(day, _DAY),
        months=_parse_field(month, _MONTH),
        weekdays=weekdays,
        day_restricted=not day.startswith("*"),
        weekday_restricted=not weekday.startswith("*"),
    )
    _check_fires(schedule)
    return schedule


def _check_fires(schedule: Schedule) -> None:
    """A day of the month that no allowed month has (``31 2``) never fires, unless a
    restricted day-of-week offers other days."""
    if schedule.either_day or schedule.days_exist:
        return
    months = " or ".join(calendar.month_name[m] for m in sorted(schedule.months))
    days = " or ".join(str(d) for d in sorted(schedule.days))
    raise ScheduleError(
        f"{schedule.text!r} can never fire: there is no day {days} in {months}; "
        "change the day-of-month or the month"
    )


def legacy_weekdays(text: str) -> frozenset[int] | None:
    """The weekdays (Sunday = 0) that APScheduler read in the day-of-week field before
    tailormail translated it (Monday = 0, names as now); None if it refused the schedule."""
    fields = text.split()
    if len(fields) not in (5, 6):
        return None
    try:
        monday_based = _parse_field(fields[-1], _LEGACY_WEEKDAY)
    except ScheduleError:
        return None
    return frozenset((d + 1) % 7 for d in monday_based)


def next_fire_times(
    trigger: BaseTrigger, count: int = 5, after: datetime | None = None
) -> list[datetime]:
    """The next ``count`` fire times of ``trigger`` after ``after`` (default: now)."""
    now = after or datetime.now(UTC)
    times: list[datetime] = []
    tick: datetime | None = trigger.get_next_fire_time(None, now)
    while tick is not None and len(times) < count:
        times.append(tick)
        tick = trigger.get_next_fire_time(tick, tick + timedelta(microseconds=1))
    return times


def check_timezone(name: str) -> str:
    """``name`` if it is an IANA time zone (``UTC``, ``Europe/Paris``); else a
    ``ScheduleError`` suggesting the nearest spellings."""
    try:
        ZoneInfo(name)
        return name
    except (ZoneInfoNotFoundError, ValueError):
        pass
    near = difflib.get_close_matches(name, sorted(available_timezones()), n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(repr(z) for z in near)}?" if near else ""
    raise ScheduleError(f"{name!r} is not an IANA time zone (like 'UTC' or 'Europe/Paris'){hint}")
