"""The jobs that missed their RPO at the end of each day of a period, as ``job_sla_at`` says.

``job_sla_at`` once per day reads every job's versions and sessions for each day, whatever the
organization asked for: thirty calls for a month. ``missed_rows`` asks one query instead, over
the selected jobs only: each live, enabled job at each day's end with its latest successful
session by then. Each day's answer is checked against ``sla_daily``'s count of jobs that
missed; a day where they differ (the definition of meeting the RPO counts more than sessions,
say) is asked of ``job_sla_at`` itself, so the list agrees with the definition.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from uuid import UUID

from sqlalchemy import Connection, text

from etl.report.filters import NO_FILTERS, Filters

# The definition: job_sla_at at each day's end, the protected jobs that did not meet their
# RPO then; asked only for the days the query below gets wrong.
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
    days: list[date],
    expected: Mapping[tuple[UUID | None, date], int],
    filters: Filters = NO_FILTERS,
    *,
    fast: bool = True,
) -> list[MissedRow]:
    """The selected jobs that missed their RPO at the end of each of ``days`` (ascending), by
    day. ``expected``: how many missed, by organization and day, as ``sla_daily`` counts them
    (an organization and day it lacks is not checked).

    ``fast``: one query for every day, each day checked against ``expected`` and asked of
    ``job_sla_at`` if they differ; else ``job_sla_at`` for every day, the definition itself."""
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
    found = Counter((r.organization_uid, r.day) for r in rows)
    asked = set(days)
    wrong = sorted({d for (org, d), n in expected.items() if d in asked and found[org, d] != n})
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
