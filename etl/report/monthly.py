"""A calendar month (UTC) of one organization's SLA: the figures of the customer report.

Read from the reporting views, so the numbers are the views' numbers: the days of
``sla_daily`` (or, when ``report_settings.time_zone`` is not UTC, the same computation in UTC,
``sla_daily_compute``), the jobs that missed their RPO at the end of each day as
``job_sla_at`` answers then, ``job_runs`` for their failure messages. A month still running is
read up to now.

The jobs that missed are found for every day at once, only among the selected jobs: each
live, enabled job at each day's end with its latest successful session by then (one query,
where calling ``job_sla_at`` once per day reads every job's history thirty times). Each day's
answer is checked against ``sla_daily``'s count of jobs that missed; a day where they differ
(the definition of meeting the RPO counts more than sessions, or a session's order is odd) is
asked of ``job_sla_at`` itself, so the list always agrees with the definition.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from sqlalchemy import Connection, text

from etl.report.filters import NO_FILTERS, Filters, Window
from etl.report.queries import reading

_DAYS_STORED = """
SELECT d.day, d.organization_uid, d.organization_name, d.jobs_protected, d.jobs_meeting_rpo,
  d.runs, d.success_runs, d.warning_runs, d.failed_runs, d.rpo_hours
FROM vspc.sla_daily d
WHERE d.day BETWEEN CAST(:first AS date) AND CAST(:last AS date){where}
ORDER BY d.day
"""

# The report time zone is not UTC: the same computation as sla_daily, over UTC days.
_DAYS_COMPUTED = """
SELECT d.day, d.organization_uid, o.name AS organization_name, d.jobs_protected,
  d.jobs_meeting_rpo, d.runs, d.success_runs, d.warning_runs, d.failed_runs, d.rpo_hours
FROM vspc.sla_daily_compute(CAST(:first AS date), CAST(:last AS date), 'UTC', now()) d
LEFT JOIN vspc.organizations o ON o.instance_uid = d.organization_uid
WHERE true{where}
ORDER BY d.day
"""

_PROTECTED = """
SELECT s.organization_uid, count(*) AS jobs, count(DISTINCT s.backup_agent_uid) AS computers
FROM vspc.job_sla_at(CAST(:as_of AS timestamptz)) s
WHERE s.is_enabled{where}
GROUP BY s.organization_uid
"""

# Each day judged at its end, as sla_daily's jobs_meeting_rpo is: the protected jobs that
# did not meet their RPO then. Only the days on which sla_daily counts a miss are asked.
# The definition, one job_sla_at per day: asked only for days the fast query below gets wrong.
_MISSED = """
SELECT g.day, s.organization_uid, s.instance_uid, s.job_name,
  s.backup_agent_uid, s.computer_name, s.last_success_at, s.rpo_hours
FROM unnest(CAST(:days AS date[])) g (day)
CROSS JOIN LATERAL vspc.job_sla_at(least((g.day + 1)::timestamp AT TIME ZONE 'UTC', now())) s
WHERE s.is_enabled AND NOT s.rpo_met{where}
ORDER BY g.day
"""

# The same answer for all days at once, the selected jobs only: the versions live at each
# day's end t (as job_sla_at reads them), each with its latest success by t (the successful
# session started last among those ended by t, as job_sla_at takes it). Successes that ended
# before the first t minus the longest RPO cannot meet any RPO: they are looked up, for the
# jobs that missed, only to say when the last one was (_LAST_SUCCESS).
_MISSED_FAST = """
WITH days AS (
  SELECT g.day, least((g.day + 1)::timestamp AT TIME ZONE 'UTC', now()) AS t
  FROM unnest(CAST(:days AS date[])) g (day)
), live AS MATERIALIZED (
  -- a version holds at the end of the days from day(valid_from - 1us) to
  -- day(valid_to - 1us) - 1: each version meets only its own days, then the exact test
  SELECT d.day, d.t, s.instance_uid, s.organization_uid, s.backup_agent_uid, s.name
  FROM vspc.backup_agent_job_snapshots s
  CROSS JOIN LATERAL generate_series(
    greatest(((s.valid_from AT TIME ZONE 'UTC') - interval '1 microsecond')::date,
             CAST(:first AS date)),
    least(((s.valid_to AT TIME ZONE 'UTC') - interval '1 microsecond')::date - 1,
          CAST(:last AS date)),
    interval '1 day') g (at)
  JOIN days d ON d.day = g.at::date
  WHERE s.is_enabled AND NOT s.is_deleted{where}
    AND s.valid_from <= CAST(:until AS timestamptz)
    AND (s.valid_to IS NULL OR s.valid_to > CAST(:first AS date)::timestamp AT TIME ZONE 'UTC')
    AND s.valid_from <= d.t AND (s.valid_to IS NULL OR s.valid_to > d.t)
), events AS (
  SELECT l.instance_uid, l.t AS at, true AS judged, NULL::timestamptz AS started_at, l.day
  FROM live l
  UNION ALL
  SELECT f.instance_uid, f.ended_at, false, f.started_at, NULL
  FROM vspc.job_run_facts f
  -- every job's: a join to the few live jobs, misjudged, can cost seconds; other jobs'
  -- successes only make partitions of their own, which nothing reads
  WHERE f.status IN ('Success', 'Warning') AND f.ended_at > CAST(:since AS timestamptz)
    AND f.ended_at <= CAST(:until AS timestamptz)
), carried AS (
  -- a success ending exactly at a day's end counts for that day: it sorts first
  SELECT e.instance_uid, e.day, e.judged, max(e.started_at) OVER (
    PARTITION BY e.instance_uid ORDER BY e.at, e.judged ROWS UNBOUNDED PRECEDING
  ) AS ok_started
  FROM events e
)
SELECT l.day, l.organization_uid, l.instance_uid, l.name AS job_name, l.backup_agent_uid,
  a.computer_name, ok.ended_at AS last_success_at, rpo.hours AS rpo_hours
FROM carried c
JOIN live l ON l.instance_uid = c.instance_uid AND l.day = c.day
LEFT JOIN vspc.job_run_facts ok
  ON ok.started_at = c.ok_started AND ok.instance_uid = c.instance_uid
LEFT JOIN vspc.backup_agents a ON a.instance_uid = l.backup_agent_uid
CROSS JOIN LATERAL (
  SELECT coalesce(
    (SELECT p.rpo_hours FROM vspc.sla_policy p WHERE p.organization_uid = l.organization_uid),
    (SELECT p.rpo_hours FROM vspc.sla_policy p WHERE p.organization_uid IS NULL),
    24) AS hours
) rpo
WHERE c.judged AND NOT coalesce(ok.ended_at > l.t - make_interval(hours => rpo.hours), false)
ORDER BY l.day
"""

_LONGEST_RPO = "SELECT greatest(24, (SELECT max(rpo_hours) FROM vspc.sla_policy))"

# When the jobs that missed without a success after the bound last had one, as job_sla_at
# says: the latest-started success (all of theirs ended by the bound).
_LAST_SUCCESS = """
SELECT DISTINCT ON (f.instance_uid) f.instance_uid, f.ended_at
FROM vspc.job_run_facts f
WHERE f.instance_uid = ANY(CAST(:jobs AS uuid[])) AND f.status IN ('Success', 'Warning')
  AND f.ended_at <= CAST(:before AS timestamptz)
ORDER BY f.instance_uid, f.started_at DESC
"""

_MESSAGES = """
SELECT r.instance_uid, r.status, r.failure_message, count(*) AS sessions,
  max(r.started_at) AS last_at
FROM vspc.job_runs r
WHERE r.started_at >= CAST(:start AS timestamptz) AND r.started_at < CAST(:end AS timestamptz)
  AND r.status IN ('Failed', 'Warning'){where}
GROUP BY r.instance_uid, r.status, r.failure_message
ORDER BY r.instance_uid, r.status, max(r.started_at) DESC
"""


@dataclass(frozen=True)
class Day:
    """One day of the organization: its sla_daily numbers."""

    day: date
    jobs_protected: int
    jobs_meeting_rpo: int
    runs: int
    good_runs: int  # Success or Warning
    failed_runs: int

    @property
    def rpo_compliance(self) -> float | None:
        return ratio(self.jobs_meeting_rpo, self.jobs_protected)

    @property
    def success_rate(self) -> float | None:
        return ratio(self.good_runs, self.runs)


@dataclass(frozen=True)
class Message:
    """The sessions of a job that ended with one status and one message."""

    status: str
    text: str | None
    sessions: int
    last_at: datetime


@dataclass
class MissedJob:
    """A job that, at the end of at least one day, was protected and missed its RPO."""

    instance_uid: UUID
    job_name: str | None
    backup_agent_uid: UUID | None
    computer_name: str | None
    rpo_hours: int
    days: list[date] = field(default_factory=list)
    last_success_at: datetime | None = None  # as of the last day it missed
    messages: list[Message] = field(default_factory=list)


@dataclass(frozen=True)
class MissedComputer:
    backup_agent_uid: UUID | None
    computer_name: str | None
    jobs: int
    days: int


@dataclass
class MonthlyReport:
    """One organization's month: the figures, the days, and what missed its RPO."""

    organization_uid: UUID | None
    organization_name: str | None
    window: Window  # the calendar month
    as_of: datetime  # the month's end, or now for the running month
    days: list[Day]
    jobs_protected: int = 0  # at as_of
    computers_protected: int = 0
    rpo_hours: list[int] = field(default_factory=list)
    missed_jobs: list[MissedJob] = field(default_factory=list)

    @property
    def protected_job_days(self) -> int:
        return sum(d.jobs_protected for d in self.days)

    @property
    def met_job_days(self) -> int:
        return sum(d.jobs_meeting_rpo for d in self.days)

    @property
    def rpo_compliance(self) -> float | None:
        return ratio(self.met_job_days, self.protected_job_days)

    @property
    def runs(self) -> int:
        return sum(d.runs for d in self.days)

    @property
    def good_runs(self) -> int:
        return sum(d.good_runs for d in self.days)

    @property
    def failed_runs(self) -> int:
        return sum(d.failed_runs for d in self.days)

    @property
    def success_rate(self) -> float | None:
        return ratio(self.good_runs, self.runs)

    @property
    def complete(self) -> bool:
        return self.as_of >= month_end(self.window)

    @property
    def missed_computers(self) -> list[MissedComputer]:
        groups: dict[UUID | None, list[MissedJob]] = defaultdict(list)
        for job in self.missed_jobs:
            groups[job.backup_agent_uid].append(job)
        computers = [
            MissedComputer(
                uid,
                next((j.computer_name for j in jobs if j.computer_name), None),
                len(jobs),
                len({d for j in jobs for d in j.days}),
            )
            for uid, jobs in groups.items()
        ]
        return sorted(
            computers, key=lambda c: (-c.days, c.computer_name or "", str(c.backup_agent_uid))
        )


@dataclass(frozen=True)
class MissedRow:
    """A job that missed its RPO at the end of ``day``, as ``job_sla_at`` answers then."""

    day: date
    organization_uid: UUID | None
    instance_uid: UUID
    job_name: str | None
    backup_agent_uid: UUID | None
    computer_name: str | None
    last_success_at: datetime | None
    rpo_hours: int


def missed_rows(
    conn: Connection,
    reports: dict[Any, MonthlyReport],
    days: list[date],
    filters: Filters = NO_FILTERS,
    *,
    fast: bool = True,
) -> list[MissedRow]:
    """The selected jobs that missed their RPO at the end of each of ``days``, by day.

    ``fast``: one query for every day (see the module's docstring), each day checked against
    the reports' count of jobs that missed then and asked of ``job_sla_at`` if it differs;
    else ``job_sla_at`` for every day, the definition itself."""
    if not days:
        return []
    where, params = filters.where("s", "jobs")
    if not fast:
        return _defined(conn, days, where, params)
    since = datetime.combine(days[0] + timedelta(days=1), time(), UTC) - timedelta(
        hours=conn.execute(text(_LONGEST_RPO)).scalar_one()
    )
    # The planner cannot see how few versions each day holds: its estimate would have the
    # query JIT-compiled, for longer than the query runs. Only this transaction's.
    conn.execute(text("SET LOCAL jit = off"))
    rows = [
        MissedRow(*r)
        for r in conn.execute(
            text(_MISSED_FAST.format(where=where)),
            params
            | {
                "days": days,
                "first": days[0],
                "last": days[-1],
                "since": since,
                "until": datetime.combine(days[-1] + timedelta(days=1), time(), UTC),
            },
        )
    ]
    unknown = sorted({r.instance_uid for r in rows if r.last_success_at is None})
    if unknown:
        answer = conn.execute(text(_LAST_SUCCESS), {"jobs": unknown, "before": since})
        last: dict[UUID, datetime] = {uid: ended for uid, ended in answer}
        rows = [
            r if r.last_success_at is not None else _with_last(r, last.get(r.instance_uid))
            for r in rows
        ]
    found: Counter[tuple[Any, date]] = Counter((r.organization_uid, r.day) for r in rows)
    wrong = sorted(
        {
            d.day
            for uid, report in reports.items()
            for d in report.days
            if d.day in set(days) and found[uid, d.day] != d.jobs_protected - d.jobs_meeting_rpo
        }
    )
    if not wrong:
        return rows
    kept = [r for r in rows if r.day not in set(wrong)]
    return sorted(kept + _defined(conn, wrong, where, params), key=lambda r: r.day)


def _with_last(row: MissedRow, last_success_at: datetime | None) -> MissedRow:
    return MissedRow(
        row.day,
        row.organization_uid,
        row.instance_uid,
        row.job_name,
        row.backup_agent_uid,
        row.computer_name,
        last_success_at,
        row.rpo_hours,
    )


def _defined(
    conn: Connection, days: list[date], where: str, params: dict[str, Any]
) -> list[MissedRow]:
    return [
        MissedRow(
            r.day,
            r.organization_uid,
            r.instance_uid,
            r.job_name,
            r.backup_agent_uid,
            r.computer_name,
            r.last_success_at,
            r.rpo_hours,
        )
        for r in conn.execute(text(_MISSED.format(where=where)), params | {"days": days})
    ]


def ratio(part: int, whole: int) -> float | None:
    return float(Decimal(part) / Decimal(whole)) if whole else None


def month_end(window: Window) -> datetime:
    return datetime.combine(window.last + timedelta(days=1), time(), UTC)


def monthly_reports(
    conn: Connection, window: Window, filters: Filters = NO_FILTERS
) -> list[MonthlyReport]:
    """The month of every organization (within ``filters``) that had protected jobs or
    sessions in it, ordered by name."""
    with reading():
        now = conn.execute(text("SELECT now()")).scalar_one()
        tz = conn.execute(
            text("SELECT coalesce((SELECT time_zone FROM vspc.report_settings LIMIT 1), 'UTC')")
        ).scalar_one()
        as_of = min(month_end(window), now)
        last = min(window.last, as_of.astimezone(UTC).date())
        if as_of <= datetime.combine(window.first, time(), UTC):
            return []  # a month that has not begun
        days_sql = _DAYS_STORED if tz == "UTC" else _DAYS_COMPUTED
        where, params = filters.where("d", "organizations")
        params |= {"first": window.first, "last": last}
        day_rows = conn.execute(text(days_sql.format(where=where)), params).all()

        reports: dict[Any, MonthlyReport] = {}
        for r in day_rows:
            if not (r.jobs_protected or r.runs):
                continue
            report = reports.get(r.organization_uid)
            if report is None:
                report = reports[r.organization_uid] = MonthlyReport(
                    r.organization_uid, r.organization_name, window, as_of, []
                )
            report.days.append(
                Day(
                    r.day,
                    r.jobs_protected,
                    r.jobs_meeting_rpo,
                    r.runs,
                    r.success_runs + r.warning_runs,
                    r.failed_runs,
                )
            )
            if r.rpo_hours not in report.rpo_hours:
                report.rpo_hours.append(r.rpo_hours)
        if not reports:
            return []

        jobs_where, job_params = filters.where("s", "jobs")
        for r in conn.execute(
            text(_PROTECTED.format(where=jobs_where)), job_params | {"as_of": as_of}
        ):
            if r.organization_uid in reports:
                reports[r.organization_uid].jobs_protected = r.jobs
                reports[r.organization_uid].computers_protected = r.computers

        missed: dict[UUID, MissedJob] = {}
        missed_days = sorted(
            {
                d.day
                for m in reports.values()
                for d in m.days
                if d.jobs_meeting_rpo < d.jobs_protected
            }
        )
        for row in missed_rows(conn, reports, missed_days, filters):
            if row.organization_uid not in reports:
                continue
            job = missed.get(row.instance_uid)
            if job is None:
                job = missed[row.instance_uid] = MissedJob(
                    row.instance_uid,
                    row.job_name,
                    row.backup_agent_uid,
                    row.computer_name,
                    row.rpo_hours,
                )
                reports[row.organization_uid].missed_jobs.append(job)
            job.days.append(row.day)
            job.last_success_at = row.last_success_at
            job.job_name = row.job_name
            job.computer_name = row.computer_name or job.computer_name

        runs_where, run_params = filters.where("r", "jobs")
        start = datetime.combine(window.first, time(), UTC)
        for r in conn.execute(
            text(_MESSAGES.format(where=runs_where)), run_params | {"start": start, "end": as_of}
        ):
            if r.instance_uid in missed:
                missed[r.instance_uid].messages.append(
                    Message(r.status, r.failure_message, r.sessions, r.last_at)
                )

    for report in reports.values():
        report.missed_jobs.sort(
            key=lambda j: (
                -len(j.days),
                j.computer_name or "",
                j.job_name or "",
                str(j.instance_uid),
            )
        )
    return sorted(
        reports.values(),
        key=lambda m: ((m.organization_name or "").casefold(), str(m.organization_uid)),
    )
