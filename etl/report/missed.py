"""The jobs that missed their RPO at the end of each day of a period, as ``job_sla_at`` says.

``job_sla_at`` once per day reads every job's versions and sessions for each day, whatever the
organization asked for: thirty calls for a month. ``missed_rows`` asks one query instead, over
the selected jobs only: each live, enabled job at each day's end with its latest successful
session and its newest restore point by then, both counted as ``job_sla_at`` counts them.
Each day's answer is checked against ``sla_daily``'s count of jobs that missed; a day where
they differ (a row written while the report read, say) is asked of ``job_sla_at`` itself, so
the list agrees with the definition.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from uuid import UUID

from sqlalchemy import Connection, text

from etl.report.filters import NO_FILTERS, Filters

# The definition: job_sla_at at each day's end, the protected jobs that did not meet their
# RPO then; asked only for the days the query below gets wrong.
_MISSED = """
SELECT g.day, s.organization_uid, s.instance_uid, s.job_name,
  s.backup_agent_uid, s.computer_name, s.last_success_at, s.last_restore_point_at, s.rpo_hours
FROM unnest(CAST(:days AS date[])) g (day)
CROSS JOIN LATERAL vspc.job_sla_at(least((g.day + 1)::timestamp AT TIME ZONE 'UTC', now())) s
WHERE s.is_enabled AND NOT s.rpo_met{where}
ORDER BY g.day
"""

# The same answer for all days at once, the selected jobs only: the versions live at each
# day's end t (as job_sla_at reads them), each with its latest success by t (the successful
# session started last among those ended by t, as job_sla_at takes it) and its restore points.
# A point counts at t if it was created by t and not merged away by t. A point that outlived
# its creation by the longest RPO is carried like a success: once it is gone it is too old to
# meet any RPO anyway. A briefer one is looked up per job and day, by (job_uid, creation_date).
# Evidence from before the first t minus the longest RPO cannot meet any RPO: for the jobs
# that missed it is looked up only to say when it was (_LAST_SUCCESS, the point's probe).
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
), points AS (
  SELECT p.job_uid, p.creation_date, p.gone_at,
    p.gone_at < p.creation_date + make_interval(hours => CAST(:longest AS integer)) AS brief
  FROM vspc.restore_points p
  WHERE p.job_uid IS NOT NULL AND p.creation_date > CAST(:since AS timestamptz)
    AND p.creation_date <= CAST(:until AS timestamptz)
), brief AS MATERIALIZED (
  SELECT job_uid, creation_date, gone_at FROM points WHERE brief
), events AS (
  SELECT l.instance_uid, l.t AS at, true AS judged, NULL::timestamptz AS started_at,
    NULL::timestamptz AS created, l.day
  FROM live l
  UNION ALL
  SELECT f.instance_uid, f.ended_at, false, f.started_at, NULL, NULL
  FROM vspc.job_run_facts f
  -- every job's: a join to the few live jobs, misjudged, can cost seconds; other jobs'
  -- successes only make partitions of their own, which nothing reads
  WHERE f.status IN ('Success', 'Warning') AND f.ended_at > CAST(:since AS timestamptz)
    AND f.ended_at <= CAST(:until AS timestamptz)
  UNION ALL
  SELECT p.job_uid, p.creation_date, false, NULL, p.creation_date, NULL
  FROM points p WHERE p.brief IS NOT TRUE
), carried AS (
  -- a success ending or a point created exactly at a day's end counts for that day: it
  -- sorts first
  SELECT e.instance_uid, e.day, e.judged,
    max(e.started_at) OVER w AS ok_started, max(e.created) OVER w AS point_at
  FROM events e
  WINDOW w AS (PARTITION BY e.instance_uid ORDER BY e.at, e.judged ROWS UNBOUNDED PRECEDING)
), missed AS (
  SELECT l.day, l.t, l.organization_uid, l.instance_uid, l.name AS job_name,
    l.backup_agent_uid, ok.ended_at AS last_success_at, rpo.hours AS rpo_hours
  FROM carried c
  JOIN live l ON l.instance_uid = c.instance_uid AND l.day = c.day
  LEFT JOIN vspc.job_run_facts ok
    ON ok.started_at = c.ok_started AND ok.instance_uid = c.instance_uid
  CROSS JOIN LATERAL (
    SELECT coalesce(
      (SELECT p.rpo_hours FROM vspc.sla_policy p WHERE p.organization_uid = l.organization_uid),
      (SELECT p.rpo_hours FROM vspc.sla_policy p WHERE p.organization_uid IS NULL),
      24) AS hours
  ) rpo
  WHERE c.judged
    AND NOT coalesce(greatest(ok.ended_at, c.point_at) > l.t - make_interval(hours => rpo.hours),
                     false)
    AND NOT EXISTS (
      SELECT 1 FROM brief b WHERE b.job_uid = l.instance_uid AND b.creation_date <= l.t
        AND b.gone_at > l.t AND b.creation_date > l.t - make_interval(hours => rpo.hours))
)
-- the few that missed: their newest point at t, as job_sla_at probes it, to show
SELECT m.day, m.organization_uid, m.instance_uid, m.job_name, m.backup_agent_uid,
  a.computer_name, m.last_success_at, rp.created AS last_restore_point_at, m.rpo_hours
FROM missed m
LEFT JOIN vspc.backup_agents a ON a.instance_uid = m.backup_agent_uid
LEFT JOIN LATERAL (
  SELECT p.creation_date AS created FROM vspc.restore_points p
  WHERE p.job_uid = m.instance_uid AND p.creation_date <= m.t
    AND (p.gone_at IS NULL OR p.gone_at > m.t)
  ORDER BY p.creation_date DESC LIMIT 1
) rp ON true
ORDER BY m.day
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
    last_restore_point_at: datetime | None
    rpo_hours: int

    @property
    def last_backup_at(self) -> datetime | None:
        """The newer evidence of a backup: the RPO is judged on it."""
        return max(
            (at for at in (self.last_success_at, self.last_restore_point_at) if at), default=None
        )


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
    longest = conn.execute(text(_LONGEST_RPO)).scalar_one()
    since = datetime.combine(days[0] + timedelta(days=1), time(), UTC) - timedelta(hours=longest)
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
                "longest": longest,
                "until": datetime.combine(days[-1] + timedelta(days=1), time(), UTC),
            },
        )
    ]
    unknown = sorted({r.instance_uid for r in rows if r.last_success_at is None})
    if unknown:
        answer = conn.execute(text(_LAST_SUCCESS), {"jobs": unknown, "before": since})
        last: dict[UUID, datetime] = {uid: ended for uid, ended in answer}
        rows = [
            r
            if r.last_success_at is not None
            else replace(r, last_success_at=last.get(r.instance_uid))
            for r in rows
        ]
    found = Counter((r.organization_uid, r.day) for r in rows)
    asked = set(days)
    wrong = sorted({d for (org, d), n in expected.items() if d in asked and found[org, d] != n})
    if not wrong:
        return rows
    kept = [r for r in rows if r.day not in set(wrong)]
    return sorted(kept + _defined(conn, wrong, where, params), key=lambda r: r.day)


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
            r.last_restore_point_at,
            r.rpo_hours,
        )
        for r in conn.execute(text(_MISSED.format(where=where)), params | {"days": days})
    ]
