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
from etl.crontab import cron_trigger
from etl.errors import ConfigError


@dataclass(frozen=True)
class Schedule:
    """When to run. ``period`` is the interval, or for cron the longest gap between fires."""

    trigger: IntervalTrigger | CronTrigger
    period: float
    description: str


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
