"""When simulated jobs run: a schedule's occurrences on the virtual clock."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

_TICK = timedelta(microseconds=1)


@dataclass(frozen=True)
class Schedule:
    """When a job runs: every ``period`` from ``anchor``, or monthly on ``day`` at anchor's time."""

    anchor: datetime
    period: timedelta | None
    day: int = 0
    continuous: bool = False

    def next_after(self, t: datetime) -> datetime:
        if self.period is not None:
            return self.anchor + ((t - self.anchor) // self.period + 1) * self.period
        local_anchor = self.anchor.astimezone(self.anchor.tzinfo)
        local = t.astimezone(local_anchor.tzinfo)
        year, month = local.year, local.month
        while True:
            candidate = local_anchor.replace(year=year, month=month, day=self.day)
            if candidate > t:
                return candidate.astimezone(UTC)
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)

    def last_at_or_before(self, t: datetime) -> datetime:
        if self.period is not None:
            return self.anchor + ((t - self.anchor) // self.period) * self.period
        occurrence = self.next_after(t - timedelta(days=62))
        while (following := self.next_after(occurrence)) <= t:
            occurrence = following
        return occurrence

    def between(self, low: datetime, high: datetime) -> Iterator[datetime]:
        """Occurrences in ``[low, high]``, in order."""
        occurrence = self.next_after(low - _TICK)
        while occurrence <= high:
            yield occurrence
            occurrence = self.next_after(occurrence)

    @property
    def spacing(self) -> timedelta:
        """The usual time between two runs (a month counts as 30 days)."""
        return self.period if self.period is not None else timedelta(days=30)
