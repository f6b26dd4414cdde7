"""What ``vspc-etl report`` asks the warehouse. Reads only the views of schema ``vspc``.

The period is a window of calendar days of ``sla_daily`` (report time zone); ``--by job``
counts the sessions of ``job_runs`` whose ``day`` falls in it; ``--by computer`` is the state
of each live computer now (``computer_sla_current``). Every query takes the same ``Filters``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, CursorResult, text
from sqlalchemy.exc import SQLAlchemyError

from etl.db import short
from etl.errors import LoadError
from etl.report.filters import NO_FILTERS, Filters, Window, last_days, report_today

BY = ("organization", "day", "job", "computer")

_IN_WINDOW = "d.day BETWEEN CAST(:first AS date) AND CAST(:last AS date)"

_BY_DAY = """
SELECT d.day,
  sum(d.jobs_protected) AS jobs_protected,
  sum(d.jobs_meeting_rpo) AS jobs_meeting_rpo,
  round(sum(d.jobs_meeting_rpo)::numeric / nullif(sum(d.jobs_protected), 0), 4)
    AS rpo_compliance,
  sum(d.runs) AS runs, sum(d.success_runs) AS success_runs,
  sum(d.warning_runs) AS warning_runs, sum(d.failed_runs) AS failed_runs,
  round(sum(d.success_runs + d.warning_runs)::numeric / nullif(sum(d.runs), 0), 4)
    AS success_rate
FROM vspc.sla_daily d WHERE {window}{where}
GROUP BY d.day ORDER BY d.day
"""

# rpo_compliance over a period weighs every protected job-day alike; the last day's counts
# say where the organization stands now.
_BY_ORGANIZATION = """
SELECT d.organization_uid, max(d.organization_name) AS organization_name,
  (array_agg(d.jobs_protected ORDER BY d.day DESC))[1] AS jobs_protected,
  (array_agg(d.jobs_meeting_rpo ORDER BY d.day DESC))[1] AS jobs_meeting_rpo,
  round(sum(d.jobs_meeting_rpo)::numeric / nullif(sum(d.jobs_protected), 0), 4)
    AS rpo_compliance,
  sum(d.runs) AS runs, sum(d.success_runs) AS success_runs,
  sum(d.warning_runs) AS warning_runs, sum(d.failed_runs) AS failed_runs,
  round(sum(d.success_runs + d.warning_runs)::numeric / nullif(sum(d.runs), 0), 4)
    AS success_rate
FROM vspc.sla_daily d WHERE {window}{where}
GROUP BY d.organization_uid
ORDER BY rpo_compliance NULLS LAST, success_rate NULLS LAST, organization_name,
  d.organization_uid
"""

_BY_JOB = """
WITH runs AS (
  SELECT r.instance_uid, count(*) AS runs,
    count(*) FILTER (WHERE r.status = 'Success') AS success_runs,
    count(*) FILTER (WHERE r.status = 'Warning') AS warning_runs,
    count(*) FILTER (WHERE r.status = 'Failed') AS failed_runs
  FROM vspc.job_runs r
  -- started_at bounds the scan (index; a time zone is less than a day off UTC); day decides
  WHERE r.started_at >= (CAST(:first AS timestamp) - interval '1 day') AT TIME ZONE 'UTC'
    AND r.started_at < (CAST(:last AS timestamp) + interval '2 days') AT TIME ZONE 'UTC'
    AND r.day BETWEEN CAST(:first AS date) AND CAST(:last AS date){runs_where}
  GROUP BY r.instance_uid
)
SELECT c.organization_name, c.computer_name, c.job_name, c.instance_uid, c.organization_uid,
  c.backup_agent_uid, c.is_enabled, c.last_status, c.last_success_at, c.hours_since_success,
  c.rpo_hours, c.rpo_met, c.consecutive_failures,
  coalesce(r.runs, 0) AS runs, coalesce(r.success_runs, 0) AS success_runs,
  coalesce(r.warning_runs, 0) AS warning_runs, coalesce(r.failed_runs, 0) AS failed_runs,
  round((r.success_runs + r.warning_runs)::numeric / nullif(r.runs, 0), 4) AS success_rate
FROM vspc.job_sla_current c LEFT JOIN runs r ON r.instance_uid = c.instance_uid
WHERE true{where}
ORDER BY c.rpo_met, c.consecutive_failures DESC, c.organization_name, c.computer_name,
  c.job_name, c.instance_uid
"""

# Computers outside their RPO first, then those with failing jobs.
_BY_COMPUTER = """
SELECT c.organization_name, c.computer_name, c.system_type, c.jobs, c.enabled_jobs,
  c.failing_jobs, c.last_restore_point_at, c.last_success_at, c.hours_since_success,
  c.rpo_hours, c.rpo_met, c.connection_status, c.last_heartbeat_at, c.backup_agent_uid,
  c.organization_uid, c.source
FROM vspc.computer_sla_current c
WHERE true{where}
ORDER BY c.rpo_met, c.failing_jobs DESC, c.organization_name, c.computer_name,
  c.backup_agent_uid
"""

_TREND = """
SELECT d.day, d.organization_uid, d.organization_name, d.jobs_protected, d.jobs_meeting_rpo,
  d.runs, d.success_runs + d.warning_runs AS good_runs, d.failed_runs
FROM vspc.sla_daily d WHERE {window}{where}
ORDER BY d.day
"""

_NEWEST = """
SELECT r.started_at, r.day, r.job_name, r.organization_name FROM vspc.job_runs r
WHERE true{where} ORDER BY r.started_at DESC LIMIT 1
"""


@dataclass(frozen=True)
class Report:
    """A result set: column names and rows, in the order the query gave them."""

    by: str
    window: Window
    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]

    def records(self) -> list[dict[str, Any]]:
        """The rows as dicts keyed by column name."""
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]

    @property
    def runs(self) -> int | None:
        """Sessions in the window, all rows together (None: a report without sessions)."""
        if "runs" not in self.columns:
            return None
        index = self.columns.index("runs")
        return sum(int(row[index]) for row in self.rows)


def sla_report(
    conn: Connection,
    *,
    by: str,
    window: Window | None = None,
    days: int | None = None,
    filters: Filters = NO_FILTERS,
) -> Report:
    """SLA over ``window`` (or the last ``days`` days, today included), one row per
    organization, day or job; or one row per live computer, as it stands now."""
    if window is None:
        if days is None:
            raise ValueError("give a window or a number of days")
        window = last_days(_read_today(conn), days)
    if by not in BY:
        raise ValueError(f"by must be one of {', '.join(BY)}")
    params: dict[str, Any] = {"first": window.first, "last": window.last}
    if by == "job":
        where, extra = filters.where("c", "jobs")
        runs_where, _ = filters.where("r", "jobs")
        sql = _BY_JOB.format(where=where, runs_where=runs_where)
    elif by == "computer":
        where, extra = filters.where("c", "jobs")
        sql = _BY_COMPUTER.format(where=where)
    else:
        where, extra = filters.where("d", "organizations")
        query = _BY_DAY if by == "day" else _BY_ORGANIZATION
        sql = query.format(window=_IN_WINDOW, where=where)
    result = _read(conn, sql, params | extra)
    return Report(by, window, tuple(result.keys()), [tuple(row) for row in result])


@dataclass(frozen=True)
class Session:
    """The newest session the warehouse holds (within the filters)."""

    started_at: datetime
    day: date
    job_name: str | None
    organization_name: str | None


def newest_session(conn: Connection, filters: Filters = NO_FILTERS) -> Session | None:
    """The session started last, or None if there is none."""
    where, params = filters.where("r", "jobs")
    row = _read(conn, _NEWEST.format(where=where), params).first()
    return (
        None
        if row is None
        else Session(row.started_at, row.day, row.job_name, row.organization_name)
    )


@dataclass
class Series:
    """One line of the trend chart: a value (0..1) or None per day."""

    label: str
    rpo_compliance: list[float | None] = field(default_factory=list)
    success_rate: list[float | None] = field(default_factory=list)


@dataclass
class Trend:
    """Per day of the window: every organization together, and the worst organizations."""

    window: Window
    overall: Series
    worst: list[Series]

    @property
    def days(self) -> list[date]:
        return self.window.days

    @property
    def has_data(self) -> bool:
        return any(v is not None for v in self.overall.rpo_compliance + self.overall.success_rate)


def trend(
    conn: Connection, *, window: Window, filters: Filters = NO_FILTERS, worst: int = 5
) -> Trend:
    """RPO compliance and success rate per day of ``window`` (None where there is nothing).

    ``worst`` organizations: the lowest RPO compliance over the window (met job-days over
    protected job-days), ties broken by more failed runs, then by name.
    """
    where, params = filters.where("d", "organizations")
    sql = _TREND.format(window=_IN_WINDOW, where=where)
    rows = _read(conn, sql, {"first": window.first, "last": window.last} | params).all()
    index = {d: i for i, d in enumerate(window.days)}
    # org -> [protected, meeting, runs, good, failed] per day
    totals: dict[Any, list[list[int]]] = {}
    names: dict[Any, str] = {}
    for r in rows:
        per_day = totals.setdefault(r.organization_uid, [[0] * 5 for _ in index])
        cell = per_day[index[r.day]]
        values = (r.jobs_protected, r.jobs_meeting_rpo, r.runs, r.good_runs, r.failed_runs)
        for i, value in enumerate(values):
            cell[i] += value
        names[r.organization_uid] = r.organization_name or str(r.organization_uid)
    overall = [[sum(t[i][k] for t in totals.values()) for k in range(5)] for i in index.values()]

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

    def failed(org: Any) -> int:
        return sum(c[4] for c in totals[org])

    ranked = sorted(totals, key=lambda org: (period_compliance(org), -failed(org), names[org]))
    chosen = [org for org in ranked if period_compliance(org) < 1.0][:worst]
    return Trend(
        window,
        series("all organizations", overall),
        [series(names[org], totals[org]) for org in chosen],
    )


def _read_today(conn: Connection) -> date:
    with reading():
        return report_today(conn)[0]


def _ratio(part: int, whole: int) -> float | None:
    return float(Decimal(part) / Decimal(whole)) if whole else None


def _read(conn: Connection, sql: str, params: Mapping[str, Any]) -> CursorResult[Any]:
    with reading():
        return conn.execute(text(sql), params)


@contextmanager
def reading() -> Iterator[None]:
    """A database error while reading the views becomes one LoadError sentence."""
    try:
        yield
    except SQLAlchemyError as exc:
        raise LoadError(
            f"cannot read the reporting views: {short(exc)} (if schema vspc is older than "
            "revision 0002, run `vspc-etl migrate`)"
        ) from exc
