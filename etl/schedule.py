"""When ``vspc-etl run`` syncs: SYNC_INTERVAL or SYNC_CRON, with SYNC_JITTER, as an APScheduler
3 trigger, and the period that readiness and misfire handling are measured in.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise

from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from etl.config import Settings
from etl.errors import ConfigError

_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")  # crontab numbering: 0 = Sunday


@dataclass(frozen=True)
class Schedule:
    """When to run. ``period`` is the interval, or for cron the longest gap between fires."""

    trigger: IntervalTrigger | CronTrigger
    period: float
    description: str


def cron_trigger(expr: str, *, jitter: int = 0) -> CronTrigger:
    """A trigger for a 5-field crontab line, weekdays numbered as crontab does (0/7 = Sunday).

    APScheduler 3's ``CronTrigger.from_crontab`` counts 0 as Monday; the weekday field is
    therefore translated to names first. Raises ValueError with a readable reason.
    """
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(
            f"{expr!r} has {len(fields)} fields; a crontab line has 5: "
            "minute hour day-of-month month day-of-week"
        )
    minute, hour, day, month, weekday = fields
    try:
        return CronTrigger(
            minute=minute,
            hour=hour,
            day=day,
            month=month,
            day_of_week=_crontab_weekdays(weekday),
            jitter=jitter or None,
        )
    except ValueError as exc:
        raise ValueError(f"{expr!r} is not a valid crontab line: {exc}") from None


def _crontab_weekdays(field: str) -> str:
    if field in ("*", "?"):
        return "*"
    days: set[int] = set()
    for part in field.lower().split(","):
        body, slash, step_text = part.partition("/")
        if (slash and not step_text.isdigit()) or step_text == "0":
            raise ValueError(f"bad step in weekday {part!r}")
        step = int(step_text) if slash else 1
        if body == "*":
            low, high = 0, 6
        elif "-" in body:
            first, last = body.split("-", 1)
            low, high = _weekday(first), _weekday(last)
        else:
            low = _weekday(body)
            high = 6 if slash else low
        if low > high:
            raise ValueError(f"weekday range {body!r} runs backwards")
        days.update(day % 7 for day in range(low, high + 1, step))
    return ",".join(_WEEKDAYS[day] for day in sorted(days))


def _weekday(text: str) -> int:
    if text.isdigit() and int(text) <= 7:
        return int(text)
    if text in _WEEKDAYS:
        return _WEEKDAYS.index(text)
    raise ValueError(f"weekday {text!r} is not 0-7 or sun-sat")


def build_schedule(settings: Settings) -> Schedule:
    """The trigger for SYNC_CRON if set, else SYNC_INTERVAL; both with SYNC_JITTER."""
    jitter = settings.sync_jitter
    if settings.sync_cron:
        try:
            trigger = cron_trigger(settings.sync_cron, jitter=jitter)
        except ValueError as exc:
            raise ConfigError(f"SYNC_CRON: {exc}") from None
        period = _longest_gap(cron_trigger(settings.sync_cron))
        return Schedule(trigger, period, f"on cron {settings.sync_cron!r} ({trigger.timezone})")
    interval = settings.sync_interval
    trigger = IntervalTrigger(seconds=interval, jitter=jitter or None)
    return Schedule(trigger, float(interval), f"every {_duration(interval)}")


def _longest_gap(trigger: CronTrigger, fires: int = 24) -> float:
    """The longest gap among the next ``fires`` fire times (weekday crons have long ones)."""
    now = datetime.now(trigger.timezone)
    times = [trigger.get_next_fire_time(None, now)]
    while len(times) <= fires and times[-1] is not None:
        times.append(trigger.get_next_fire_time(times[-1], times[-1]))
    known = [t for t in times if t is not None]
    if len(known) < 2:
        raise ConfigError("SYNC_CRON: the expression fires at most once; give a recurring one")
    return float(max((b - a).total_seconds() for a, b in pairwise(known)))


def _duration(seconds: float) -> str:
    for unit, size in (("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)} {unit}"
    return f"{seconds:g} s"
