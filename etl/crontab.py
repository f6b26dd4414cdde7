"""Crontab lines as APScheduler 3 triggers, weekdays numbered as crontab numbers them.

Kept apart from :mod:`etl.schedule` so that the settings can check a SYNC_CRON line when they
are read without importing the scheduler, which itself reads the settings.
"""

from __future__ import annotations

from apscheduler.triggers.cron import CronTrigger

_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")  # crontab numbering: 0 = Sunday


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
