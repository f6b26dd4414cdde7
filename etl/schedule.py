"""When ``vspc-etl run`` syncs: SYNC_INTERVAL or SYNC_CRON, with SYNC_JITTER, as an APScheduler
3 trigger, and the period that readiness and misfire handling are measured in.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise

from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from etl.config import Settings
from etl.crontab import cron_trigger
from etl.errors import ConfigError

log = logging.getLogger(__name__)

_warned: set[tuple[str, int, int]] = set()


@dataclass(frozen=True)
class Schedule:
    """When to run. ``period`` is the interval, or for cron the longest gap between fires;
    ``jitter`` the most seconds a fire may come late on purpose (SYNC_JITTER, clamped)."""

    trigger: IntervalTrigger | CronTrigger
    period: float
    description: str
    jitter: int = 0


def build_schedule(settings: Settings) -> Schedule:
    """The trigger for SYNC_CRON if set, else SYNC_INTERVAL; both with SYNC_JITTER.

    A jitter longer than the time between two runs would let runs overtake each other and
    make readiness unpredictable: it is clamped to that time, with a warning.
    """
    if settings.sync_cron:
        name = settings.label("sync_cron")
        try:
            gaps = _gaps(cron_trigger(settings.sync_cron))
        except ValueError as exc:
            raise ConfigError(f"{name}: {exc}") from None
        if not gaps:
            raise ConfigError(f"{name}: the expression fires at most once; give a recurring one")
        jitter = _clamped_jitter(settings, min(gaps), "the shortest gap between two cron runs")
        trigger = cron_trigger(settings.sync_cron, jitter=jitter)
        description = f"on cron {settings.sync_cron!r} ({trigger.timezone})"
        return Schedule(trigger, max(gaps), description, jitter)
    interval = settings.sync_interval
    jitter = _clamped_jitter(settings, interval, f"the {_duration(interval)} interval")
    trigger = IntervalTrigger(seconds=interval, jitter=jitter or None)
    return Schedule(trigger, float(interval), f"every {_duration(interval)}", jitter)


def _clamped_jitter(settings: Settings, limit: float, what: str) -> int:
    jitter = settings.sync_jitter
    if jitter <= limit:
        return jitter
    clamped = int(limit)
    said = (settings.label("sync_jitter"), jitter, clamped)
    if said in _warned:
        return clamped
    _warned.add(said)  # once per process: the CLI checks the schedule, then the daemon builds it
    log.warning(
        "%s %d s is longer than %s: using %d s",
        settings.label("sync_jitter"),
        jitter,
        what,
        clamped,
    )
    return clamped


def _gaps(trigger: CronTrigger, fires: int = 24) -> list[float]:
    """The gaps between the next ``fires`` fire times (weekday crons have long ones)."""
    now = datetime.now(trigger.timezone)
    times = [trigger.get_next_fire_time(None, now)]
    while len(times) <= fires and times[-1] is not None:
        times.append(trigger.get_next_fire_time(times[-1], times[-1]))
    known = [t for t in times if t is not None]
    return [(b - a).total_seconds() for a, b in pairwise(known)]


def _duration(seconds: float) -> str:
    for unit, size in (("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)} {unit}"
    return f"{seconds:g} s"
