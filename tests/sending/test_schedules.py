"""Issue 18: schedules mean what crontab(5) says they mean.

The expected fire dates are computed here from crontab(5)'s reading, written out as a
table (which weekdays a day-of-week field names), never from the code under test.
"""

from __future__ import annotations

import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kit.project import Project

from engine.campaigns import cron_trigger, load_campaign
from engine.errors import ConfigError
from engine.schedule_notice import NOTICES_FILE, ScheduleChangeWarning
from engine.schedules import next_fire_times
from engine.sending.scheduler import build_scheduler, latest_tick

START = datetime(2026, 1, 1, tzinfo=UTC)  # a Thursday
DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")

# crontab(5): 0 and 7 are Sunday, 1 Monday ... 6 Saturday; names are the first three
# letters in any case; ranges, lists and steps (over a range or *) combine.
WEEKDAY_FORMS = {
    "0": {"Sun"},
    "1": {"Mon"},
    "2": {"Tue"},
    "3": {"Wed"},
    "4": {"Thu"},
    "5": {"Fri"},
    "6": {"Sat"},
    "7": {"Sun"},
    "1-5": {"Mon", "Tue", "Wed", "Thu", "Fri"},
    "0-6": set(DAYS),
    "0-7": set(DAYS),
    "5-7": {"Fri", "Sat", "Sun"},
    "6,0": {"Sat", "Sun"},
    "6,7": {"Sat", "Sun"},
    "1,3,5": {"Mon", "Wed", "Fri"},
    "*/2": {"Sun", "Tue", "Thu", "Sat"},
    "1-5/2": {"Mon", "Wed", "Fri"},
    "0-7/3": {"Sun", "Wed", "Sat"},
    "1-2,4-5": {"Mon", "Tue", "Thu", "Fri"},
    "MON": {"Mon"},
    "sun": {"Sun"},
    "Sat": {"Sat"},
    "mon-fri": {"Mon", "Tue", "Wed", "Thu", "Fri"},
    "MON,WED,FRI": {"Mon", "Wed", "Fri"},
    "tue,7": {"Tue", "Sun"},
    "*": set(DAYS),
}


def _expected(hour: int, weekdays: set[str], days: int = 21) -> list[datetime]:
    """Every ``hour``:00 in the first ``days`` days of 2026 that falls on ``weekdays``."""
    moments = (START + timedelta(days=n, hours=hour) for n in range(days))
    return [moment for moment in moments if DAYS[moment.weekday()] in weekdays]


def _fires(schedule: str, count: int) -> list[datetime]:
    return next_fire_times(cron_trigger(schedule, "UTC"), count, START)


def test_every_weekday_form_fires_on_the_days_crontab_names() -> None:
    wrong = {}
    for field, weekdays in WEEKDAY_FORMS.items():
        expected = _expected(9, weekdays)
        try:
            fired = _fires(f"0 9 * * {field}", len(expected))
        except ValueError as exc:  # today's main refuses 7
            fired = [str(exc)]  # type: ignore[list-item]
        if fired != expected:
            wrong[field] = [f"{m:%a %d}" if isinstance(m, datetime) else m for m in fired]
    assert not wrong, f"fired on other days than crontab(5) reads: {wrong}"


def test_six_fields_are_seconds_then_the_five_field_meaning() -> None:
    fired = _fires("30 0 9 * * 1", 3)
    assert fired == [m + timedelta(seconds=30) for m in _expected(9, {"Mon"})]
    assert _fires("*/20 * * * * *", 4) == [START + timedelta(seconds=s) for s in (0, 20, 40, 60)]


def test_either_day_field_fires_when_both_are_restricted() -> None:
    # crontab(5): "If both fields are restricted (i.e., do not contain the "*" character),
    # the command will be run when either field matches the current time."
    days = [START + timedelta(days=n, hours=9) for n in range(62)]
    thirteenth_or_friday = [d for d in days if d.day == 13 or d.weekday() == 4]
    assert _fires("0 9 13 * 5", len(thirteenth_or_friday)) == thirteenth_or_friday
    # A field starting with * is not restricted (Vixie cron): both must match.
    odd_mondays = [d for d in days if d.day % 2 == 1 and d.weekday() == 0]
    assert _fires("0 9 */2 * 1", len(odd_mondays)) == odd_mondays
    # A day no month has is no obstacle when the weekday offers others: Mondays of February.
    february_mondays = [d for d in days if d.month == 2 and d.weekday() == 0]
    assert _fires("0 9 31 2 mon", 4) == february_mondays


def test_nicknames_read_as_crontab() -> None:
    assert _fires("@weekly", 2) == _expected(0, {"Sun"}, days=14)
    assert _fires("@daily", 2) == [START, START + timedelta(days=1)]


@pytest.mark.filterwarnings("ignore::engine.schedule_notice.ScheduleChangeWarning")
def test_the_scheduler_fires_campaigns_on_the_crontab_day(sqlite_project: Project) -> None:
    path = sqlite_project.root / "config" / "campaigns" / "alerts.toml"
    path.write_text(path.read_text().replace('"0 9 * * *"', '"0 9 * * 1-5"'))
    engine = sqlite_project.engine()
    job = {job.id: job for job in build_scheduler(engine).get_jobs()}["campaign:alerts"]
    assert next_fire_times(job.trigger, 5, START) == _expected(9, WEEKDAY_FORMS["1-5"])[:5]
    saturday = datetime(2026, 1, 3, 9, 30, tzinfo=UTC)  # a tick due on Saturday is none
    assert latest_tick(job.trigger, saturday, timedelta(hours=1)) is None


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ("0 9 31 2 *", "can never fire: there is no day 31 in February"),
        ("0 9 30,31 2 *", "can never fire: there is no day 30 or 31 in February"),
        ("0 9 31 4,6 *", "can never fire: there is no day 31 in April or June"),
        ("0 9 * * 8", "day-of-week: 8 is out of range (0-7, 0 and 7 are Sunday, or SUN-SAT)"),
        ("0 9 * * MOM", "day-of-week: 'MOM' is not one of 0-7, 0 and 7 are Sunday, or SUN-SAT"),
        ("0 9 * * 5-1", "the range '5-1' runs backwards"),
        ("0 9 * * 1/2", "'1/2' needs a range before the step (write 1-7/2)"),
        ("0 9 * * */0", "the step in '*/0' must be a positive number"),
        ("0 9 * 13 *", "month: 13 is out of range (1-12 or JAN-DEC)"),
        ("0 9 L * *", "day-of-month: 'L' is not one of 1-31"),
        ("0 9 ? * MON", "day-of-month: '?' is not crontab syntax"),
        ("0 9 * *", "has 4 fields; write five (minute hour day-of-month month day-of-week)"),
        ("@reboot", "@reboot has no time to fire at"),
    ],
)
def test_a_schedule_that_cannot_work_is_named_at_start_up(
    tmp_path: Path, schedule: str, message: str
) -> None:
    path = tmp_path / "alerts.toml"
    variant = '[[variants]]\nkey = "a"\nsubject = "s"\ntemplate = "t.html"\n'
    path.write_text(f'schedule = "{schedule}"\n{variant}')
    with pytest.raises(ConfigError) as caught:
        load_campaign(path)
    assert str(caught.value).startswith(f"{path}: invalid value for 'schedule': ")
    assert message in str(caught.value)


def _engine_warnings(project: Project) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        project.engine().close()
    return [str(w.message) for w in caught if issubclass(w.category, ScheduleChangeWarning)]


def _schedule(project: Project, name: str, schedule: str) -> None:
    path = project.add_campaign(name)
    path.write_text(path.read_text().replace('"0 9 * * *"', f'"{schedule}"'))


def test_schedules_whose_days_changed_are_announced_once_per_project(
    sqlite_project: Project,
) -> None:
    # Names, `*` and the whole week meant the same days before: nothing to announce.
    _schedule(sqlite_project, "named", "0 9 * * mon")
    _schedule(sqlite_project, "week", "0 9 * * 0-6")
    assert _engine_warnings(sqlite_project) == []
    assert not (sqlite_project.root / NOTICES_FILE).exists()

    _schedule(sqlite_project, "weekdays", "0 9 * * 1-5")
    _schedule(sqlite_project, "either", "0 9 13 * fri")
    first = _engine_warnings(sqlite_project)
    assert len(first) == 1
    assert (
        "campaign 'weekdays': '0 9 * * 1-5' now fires on Monday, Tuesday, Wednesday, "
        "Thursday, Friday; it used to fire on Tuesday, Wednesday, Thursday, Friday, Saturday"
    ) in first[0]
    assert (
        "campaign 'either': '0 9 13 * fri' now fires on day 13 of the month or any Friday; "
        "it used to fire on day 13 of the month when it is a Friday"
    ) in first[0]
    for unchanged in ("'named'", "'week'", "'alerts'"):
        assert unchanged not in first[0]
    assert (sqlite_project.root / NOTICES_FILE).is_file()
    assert _engine_warnings(sqlite_project) == []  # shown once
