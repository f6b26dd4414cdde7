"""What the demo prints at the end: the warehouse in a few lines, the commands to try next."""

from __future__ import annotations

import shlex
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import Connection, text

from etl.errors import ConfigError
from etl.report.filters import month_window, report_today, resolve_organization

# `vspc-etl report` shows the last 30 days unless told otherwise.
REPORT_DAYS = 30


def describe_warehouse(conn: Connection, source: str) -> str:
    """A short text picture of what the warehouse holds for ``source``."""
    params = {"s": source}
    statuses = conn.execute(
        text(
            "SELECT status, count(*) FROM vspc.backup_agent_jobs "
            "WHERE source = :s AND deleted_at IS NULL GROUP BY status ORDER BY 2 DESC, 1"
        ),
        params,
    ).all()
    live, deleted = conn.execute(
        text(
            "SELECT count(*) FILTER (WHERE deleted_at IS NULL), "
            "count(*) FILTER (WHERE deleted_at IS NOT NULL) "
            "FROM vspc.backup_agent_jobs WHERE source = :s"
        ),
        params,
    ).one()
    versions = conn.execute(
        text("SELECT count(*) FROM vspc.backup_agent_job_snapshots WHERE source = :s"), params
    ).scalar_one()
    points = conn.execute(
        text("SELECT count(*) FROM vspc.restore_points WHERE source = :s"), params
    ).scalar_one()
    rejects = conn.execute(
        text(
            "SELECT count(*) FROM vspc.etl_rejects WHERE run_id IN "
            "(SELECT run_id FROM vspc.etl_runs WHERE source = :s)"
        ),
        params,
    ).scalar_one()
    # Sessions since the first sync: those before it are the few each job had already run.
    sessions, failed = conn.execute(
        text(
            "SELECT count(*), count(*) FILTER (WHERE status = 'Failed') FROM vspc.job_runs "
            "WHERE source = :s AND started_at >= "
            "(SELECT min(started_at) FROM vspc.etl_runs WHERE source = :s)"
        ),
        params,
    ).one()
    return "\n".join(
        [
            f"warehouse: {live} live jobs, {deleted} deleted, {versions} versions in history, "
            f"{points} restore points, {rejects} rejected records",
            "live jobs by status: " + ", ".join(f"{s} {n}" for s, n in statuses),
            f"sessions since the first sync: {sessions}, {failed} of them failed",
        ]
    )


def try_next(conn: Connection, source: str, prog: str, now: datetime) -> str:
    """The commands to run next: reports over the days the demo filled, and the customer
    report of a month it filled for the organization with the most sessions then."""
    today, zone = report_today(conn)
    first = conn.execute(
        text(
            "SELECT (min(started_at) AT TIME ZONE :zone)::date, min(started_at) "
            "FROM vspc.etl_runs WHERE source = :s"
        ),
        {"s": source, "zone": zone},
    ).one()
    span = (today - first[0]).days + 1 if first[0] is not None else 1
    days = f" --days {span}" if span < REPORT_DAYS else ""
    shown = min(span, REPORT_DAYS)
    commands = [
        (f"{prog} report{days}", f"SLA by organization, the last {shown} days"),
        (f"{prog} report --by day{days}", "day by day"),
        (f"{prog} report --by computer", "is every computer protected? (now)"),
        (f"{prog} report --chart sla.png{days}", "the same days as a chart"),
        (f"{prog} demo", "later on: the history goes on up to then"),
    ]
    width = max(len(command) for command, _ in commands)
    lines = ["try next:", *(f"  {command:<{width}}  # {why}" for command, why in commands)]
    started = (first[1] or now).astimezone(UTC).date()
    month = _fullest_month(started, now.astimezone(UTC).date())
    organization = _busiest_organization(conn, source, month)
    if organization is not None:
        lines += [
            f"  # the SLA report of {month} a customer receives (one file per customer: "
            "--all-organizations --out DIR):",
            f"  {prog} report --format html --organization {shlex.quote(organization)} "
            f"--month {month} --out sla-{month}.html",
        ]
    return "\n".join(lines)


def _fullest_month(first: date, today: date) -> str:
    """This month or the last (UTC, as ``--month``), whichever has more days of history;
    the last on a tie, being complete."""
    this = today.replace(day=1)
    last = (this - timedelta(days=1)).replace(day=1)
    in_this = (today - max(first, this)).days + 1
    in_last = (this - max(first, last)).days
    return f"{last:%Y-%m}" if in_last >= in_this else f"{this:%Y-%m}"


def _busiest_organization(conn: Connection, source: str, month: str) -> str | None:
    """The name of the organization with the most sessions in ``month`` (its uid if the
    name is ambiguous), as ``--organization`` takes it; None without sessions."""
    window = month_window(month)
    row = conn.execute(
        text(
            "SELECT organization_uid, max(organization_name) FROM vspc.job_runs "
            "WHERE source = :s AND organization_uid IS NOT NULL "
            "AND started_at >= :first AND started_at < :after "
            "GROUP BY organization_uid ORDER BY count(*) DESC, 2 LIMIT 1"
        ),
        {
            "s": source,
            "first": datetime.combine(window.first, time(), UTC),
            "after": datetime.combine(window.last + timedelta(days=1), time(), UTC),
        },
    ).first()
    if row is None:
        return None
    uid, name = row
    if name is None:
        return str(uid)
    try:
        return str(name) if resolve_organization(conn, name) == uid else str(uid)
    except ConfigError:
        return str(uid)  # another organization has that name too: the uid says which
