"""A calendar month (UTC) of one organization's SLA: the figures of the customer report.

Read from the reporting views, so the numbers are the views' numbers: the days of
``sla_daily`` (or, when ``report_settings.time_zone`` is not UTC, the same computation in UTC,
``sla_daily_compute``), the jobs that missed their RPO at the end of each day as
``job_sla_at`` answers then (``etl.report.missed``), ``job_runs`` for their failure messages.
A month still running is read up to now.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from sqlalchemy import Connection, text

from etl.report.filters import NO_FILTERS, Filters, Window
from etl.report.missed import missed_rows
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
    # as of the last day it missed: its latest successful session's end, its newest restore
    # point's creation
    last_success_at: datetime | None = None
    last_restore_point_at: datetime | None = None
    messages: list[Message] = field(default_factory=list)

    @property
    def last_backup_at(self) -> datetime | None:
        """The newer of the two, the evidence the RPO is judged on."""
        return max(
            (at for at in (self.last_success_at, self.last_restore_point_at) if at), default=None
        )

    @property
    def last_backup_is_point(self) -> bool:
        """Whether a restore point (rather than a session) is the newer evidence."""
        point, session = self.last_restore_point_at, self.last_success_at
        return point is not None and (session is None or point > session)


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
        expected = {
            (uid, d.day): d.jobs_protected - d.jobs_meeting_rpo
            for uid, report in reports.items()
            for d in report.days
        }
        for row in missed_rows(conn, missed_days, expected, filters):
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
            job.last_restore_point_at = row.last_restore_point_at
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
