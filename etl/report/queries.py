"""What ``vspc-etl report`` asks the warehouse. Reads only the views of schema ``vspc``.

The period is the last ``days`` calendar days of ``sla_daily`` (report time zone), today
included; ``--by job`` counts the sessions of ``job_runs`` whose ``day`` falls in it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, CursorResult, text
from sqlalchemy.exc import SQLAlchemyError

from etl.db import short
from etl.errors import LoadError

BY = ("organization", "day", "job")

# The last day sla_daily holds is today in the report time zone (its rows computed when read).
_PERIOD = "period AS (SELECT max(day) - CAST(:days AS integer) AS after FROM vspc.sla_daily)"

_BY_DAY = f"""
WITH {_PERIOD}
SELECT d.day,
  sum(d.jobs_protected) AS jobs_protected,
  sum(d.jobs_meeting_rpo) AS jobs_meeting_rpo,
  round(sum(d.jobs_meeting_rpo)::numeric / nullif(sum(d.jobs_protected), 0), 4)
    AS rpo_compliance,
  sum(d.runs) AS runs, sum(d.success_runs) AS success_runs,
  sum(d.warning_runs) AS warning_runs, sum(d.failed_runs) AS failed_runs,
  round(sum(d.success_runs + d.warning_runs)::numeric / nullif(sum(d.runs), 0), 4)
    AS success_rate
FROM vspc.sla_daily d, period WHERE d.day > period.after
GROUP BY d.day ORDER BY d.day
"""

# rpo_compliance over a period weighs every protected job-day alike; the last day's counts
# say where the organization stands now.
_BY_ORGANIZATION = f"""
WITH {_PERIOD}
SELECT d.organization_uid, max(d.organization_name) AS organization_name,
  (array_agg(d.jobs_protected ORDER BY d.day DESC))[1] AS jobs_protected,
  (array_agg(d.jobs_meeting_rpo ORDER BY d.day DESC))[1] AS jobs_meeting_rpo,
  round(sum(d.jobs_meeting_rpo)::numeric / nullif(sum(d.jobs_protected), 0), 4)
    AS rpo_compliance,
  sum(d.runs) AS runs, sum(d.success_runs) AS success_runs,
  sum(d.warning_runs) AS warning_runs, sum(d.failed_runs) AS failed_runs,
  round(sum(d.success_runs + d.warning_runs)::numeric / nullif(sum(d.runs), 0), 4)
    AS success_rate
FROM vspc.sla_daily d, period WHERE d.day > period.after
GROUP BY d.organization_uid
ORDER BY rpo_compliance NULLS LAST, success_rate NULLS LAST, organization_name,
  d.organization_uid
"""

_BY_JOB = f"""
WITH {_PERIOD}, runs AS (
  SELECT r.instance_uid, count(*) AS runs,
    count(*) FILTER (WHERE r.status = 'Success') AS success_runs,
    count(*) FILTER (WHERE r.status = 'Warning') AS warning_runs,
    count(*) FILTER (WHERE r.status = 'Failed') AS failed_runs
  FROM vspc.job_runs r, period
  -- started_at bounds the scan (index); day decides (report time zone)
  WHERE r.started_at >= now() - make_interval(days => CAST(:days AS integer) + 2)
    AND r.day > period.after
  GROUP BY r.instance_uid
)
SELECT c.organization_name, c.computer_name, c.job_name, c.instance_uid, c.is_enabled,
  c.last_status, c.last_success_at, c.hours_since_success, c.rpo_hours, c.rpo_met,
  c.consecutive_failures,
  coalesce(r.runs, 0) AS runs, coalesce(r.success_runs, 0) AS success_runs,
  coalesce(r.warning_runs, 0) AS warning_runs, coalesce(r.failed_runs, 0) AS failed_runs,
  round((r.success_runs + r.warning_runs)::numeric / nullif(r.runs, 0), 4) AS success_rate
FROM vspc.job_sla_current c LEFT JOIN runs r ON r.instance_uid = c.instance_uid
ORDER BY c.rpo_met, c.consecutive_failures DESC, c.organization_name, c.computer_name,
  c.job_name, c.instance_uid
"""

_QUERIES = {"day": _BY_DAY, "organization": _BY_ORGANIZATION, "job": _BY_JOB}

_TREND = f"""
WITH {_PERIOD}
SELECT d.day, d.organization_uid, d.organization_name, d.jobs_protected, d.jobs_meeting_rpo,
  d.runs, d.success_runs + d.warning_runs AS good_runs
FROM vspc.sla_daily d, period WHERE d.day > period.after
ORDER BY d.day
"""


@dataclass(frozen=True)
class Report:
    """A result set: column names and rows, in the order the query gave them."""

    by: str
    days: int
    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]

    def records(self) -> list[dict[str, Any]]:
        """The rows as dicts keyed by column name."""
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


def sla_report(conn: Connection, *, by: str, days: int) -> Report:
    """SLA for the last ``days`` days, one row per organization, day or job."""
    if by not in _QUERIES:
        raise ValueError(f"by must be one of {', '.join(BY)}")
    if days < 1:
        raise ValueError("days must be at least 1")
    result = _read(conn, _QUERIES[by], {"days": days})
    return Report(by, days, tuple(result.keys()), [tuple(row) for row in result])


@dataclass
class Series:
    """One line of the trend chart: a value (0..1) or None per day."""

    label: str
    rpo_compliance: list[float | None] = field(default_factory=list)
    success_rate: list[float | None] = field(default_factory=list)


@dataclass
class Trend:
    """Per day: every organization together, and the worst organizations on their own."""

    days: list[date]
    overall: Series
    worst: list[Series]


def trend(conn: Connection, *, days: int, worst: int = 5) -> Trend:
    """RPO compliance and success rate per day; ``worst`` organizations by RPO compliance."""
    rows = _read(conn, _TREND, {"days": days}).all()
    all_days = sorted({r.day for r in rows})
    index = {d: i for i, d in enumerate(all_days)}
    totals: dict[Any, list[list[int]]] = {}  # org -> [protected, meeting, runs, good] per day
    names: dict[Any, str] = {}
    for r in rows:
        per_day = totals.setdefault(r.organization_uid, [[0, 0, 0, 0] for _ in all_days])
        cell = per_day[index[r.day]]
        for i, value in enumerate((r.jobs_protected, r.jobs_meeting_rpo, r.runs, r.good_runs)):
            cell[i] += value
        names[r.organization_uid] = r.organization_name or str(r.organization_uid)
    overall = [[sum(t[i][k] for t in totals.values()) for k in range(4)] for i in index.values()]

    def series(label: str, cells: list[list[int]]) -> Series:
        return Series(
            label,
            [_ratio(c[1], c[0]) for c in cells],
            [_ratio(c[3], c[2]) for c in cells],
        )

    def period_compliance(org: Any) -> float:
        protected = sum(c[0] for c in totals[org])
        met = sum(c[1] for c in totals[org])
        return met / protected if protected else 2.0  # no protected job: never "worst"

    ranked = sorted(totals, key=lambda org: (period_compliance(org), names[org]))
    chosen = [org for org in ranked if period_compliance(org) < 1.0][:worst]
    return Trend(
        all_days,
        series("all organizations", overall),
        [series(names[org], totals[org]) for org in chosen],
    )


def _ratio(part: int, whole: int) -> float | None:
    return float(Decimal(part) / Decimal(whole)) if whole else None


def _read(conn: Connection, sql: str, params: Mapping[str, Any]) -> CursorResult[Any]:
    with _reading():
        return conn.execute(text(sql), params)


@contextmanager
def _reading() -> Iterator[None]:
    try:
        yield
    except SQLAlchemyError as exc:
        raise LoadError(
            f"cannot read the reporting views: {short(exc)} (if schema vspc is older than "
            "revision 0002, run `vspc-etl migrate`)"
        ) from exc
