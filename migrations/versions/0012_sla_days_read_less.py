"""The days' computation reads only the job versions opened by the end of the last day it judges.

``sla_daily_compute`` read every open version of every job to find those live at the end of
each day judged, and kept none opened later: recomputing days that come before a version
(the days of sessions older than the warehouse's first sync, which a refresh catches up on at
each sync until a day holds a row) read the whole snapshot table for nothing. It now asks the
index on ``valid_from`` for the versions opened by the end of the last day. The numbers do
not change. Downgrade restores the function of revision 0010 verbatim.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SLA_DAILY_COMPUTE = r"""
-- Days from_day..last_day, each judged at its end (or at as_of, if that comes first). A
-- version holds at the end of D for D in [day(vf - 1us), day(vt - 1us) - 1] (local days); one
-- ordered pass per job carries the newest evidence forward: a successful session's end or a
-- restore point's creation. A point merged away (gone_at) later than the longest RPO after its
-- creation no longer matters when it goes, so the pass ignores gone_at; the rare point merged
-- away sooner ("brief") is left out of the pass and checked exactly (created <= t < gone_at).
-- A point is created on the local day of its creation_date and counts there while its job is
-- live at that day's end (merged away since or not); a point without a job the warehouse
-- knows counts for its agent's organization.
CREATE OR REPLACE FUNCTION vspc.sla_daily_compute(
  from_day date, last_day date, tz text, as_of timestamptz)
RETURNS TABLE (
  day date, organization_uid uuid, jobs_protected integer, runs integer,
  success_runs integer, warning_runs integer, failed_runs integer,
  jobs_meeting_rpo integer, rpo_hours integer, restore_points_created integer)
LANGUAGE plpgsql STABLE
-- The planner cannot see how many days generate_series yields per version (it guesses 1000):
-- the inflated cost would make it JIT-compile a query that runs in milliseconds, for seconds.
SET jit = off
AS $$
#variable_conflict use_column
DECLARE
  default_rpo integer := coalesce(
    (SELECT p.rpo_hours FROM vspc.sla_policy p WHERE p.organization_uid IS NULL), 24);
  max_rpo integer := greatest(
    coalesce((SELECT max(p.rpo_hours) FROM vspc.sla_policy p), 24), default_rpo);
  -- The first instant judged: only versions still open then, and successes within the
  -- longest RPO before it, can count (for today, only the current versions).
  first_end timestamptz := least(((from_day + 1)::timestamp AT TIME ZONE tz), as_of);
BEGIN
  RETURN QUERY
    WITH live AS MATERIALIZED (
      SELECT from_day + k AS day, s.instance_uid, s.organization_uid,
             s.is_enabled IS TRUE AS enabled,
             least(((from_day + k + 1)::timestamp AT TIME ZONE tz), as_of) AS t
      FROM vspc.backup_agent_job_snapshots s
      CROSS JOIN LATERAL generate_series(
        greatest(((s.valid_from AT TIME ZONE tz) - interval '1 microsecond')::date, from_day)
          - from_day,
        CASE WHEN s.valid_to IS NULL THEN last_day
             ELSE least(((s.valid_to AT TIME ZONE tz) - interval '1 microsecond')::date - 1,
                        last_day) END - from_day) AS k
      WHERE NOT s.is_deleted
        AND (s.valid_to IS NULL OR s.valid_to > first_end)
        -- Opened by the end of last_day, or it holds at no day's end judged: read through
        -- the index, the versions a later sync opened (a whole first sync's) are not read.
        AND s.valid_from <= ((last_day + 1)::timestamp AT TIME ZONE tz)
    ), points AS (
      SELECT r.job_uid, r.backup_agent_uid, r.creation_date, r.gone_at,
        r.gone_at < r.creation_date + make_interval(hours => max_rpo) AS brief
      FROM vspc.restore_points r
      WHERE r.creation_date <= as_of
        AND r.creation_date > least(first_end - make_interval(hours => max_rpo),
                                    (from_day::timestamp AT TIME ZONE tz))
    ), brief AS MATERIALIZED (
      SELECT job_uid, creation_date, gone_at FROM points WHERE brief AND job_uid IS NOT NULL
    ), events AS (
      SELECT instance_uid, t, NULL::timestamptz AS ended_at, day, organization_uid, enabled
      FROM live
      UNION ALL
      SELECT instance_uid, ended_at, ended_at, NULL, NULL, NULL FROM vspc.job_run_facts
      WHERE status IN ('Success', 'Warning') AND ended_at <= as_of
        AND ended_at > first_end - make_interval(hours => max_rpo)
      UNION ALL
      SELECT job_uid, creation_date, creation_date, NULL, NULL, NULL FROM points
      WHERE job_uid IS NOT NULL AND brief IS NOT TRUE
        AND creation_date > first_end - make_interval(hours => max_rpo)
    ), carried AS (
      -- A success ending exactly at a day's end counts for that day: it sorts first.
      SELECT instance_uid, day, organization_uid, enabled, t, max(ended_at) OVER (
        PARTITION BY instance_uid ORDER BY t, ended_at IS NULL ROWS UNBOUNDED PRECEDING
      ) AS last_success
      FROM events
    ), jobs AS (
      SELECT c.day, c.organization_uid,
        count(*) FILTER (WHERE c.enabled) AS protected,
        count(*) FILTER (WHERE c.enabled AND (c.last_success > c.t - make_interval(
          hours => coalesce(p.rpo_hours, default_rpo)) OR EXISTS (
            SELECT 1 FROM brief b WHERE b.job_uid = c.instance_uid AND b.creation_date <= c.t
              AND b.gone_at > c.t AND b.creation_date > c.t - make_interval(
                hours => coalesce(p.rpo_hours, default_rpo))))) AS meeting
      FROM carried c LEFT JOIN vspc.sla_policy p ON p.organization_uid = c.organization_uid
      WHERE c.day IS NOT NULL
      GROUP BY c.day, c.organization_uid
    ), created AS (
      SELECT (r.creation_date AT TIME ZONE tz)::date AS day, r.job_uid, r.backup_agent_uid
      FROM points r
      WHERE r.creation_date >= (from_day::timestamp AT TIME ZONE tz)
        AND r.creation_date < ((last_day + 1)::timestamp AT TIME ZONE tz)
    ), created_counts AS (
      SELECT l.day, l.organization_uid, count(*) AS created
      FROM created r JOIN live l ON l.instance_uid = r.job_uid AND l.day = r.day
      GROUP BY 1, 2
      UNION ALL
      SELECT r.day, a.organization_uid, count(*)
      FROM created r LEFT JOIN vspc.backup_agents a ON a.instance_uid = r.backup_agent_uid
      WHERE r.job_uid IS NULL OR NOT EXISTS (
        SELECT 1 FROM vspc.backup_agent_jobs j WHERE j.instance_uid = r.job_uid)
      GROUP BY 1, 2
    ), sessions AS (
      SELECT (f.started_at AT TIME ZONE tz)::date AS day, f.organization_uid,
        count(*) AS runs,
        count(*) FILTER (WHERE f.status = 'Success') AS success_runs,
        count(*) FILTER (WHERE f.status = 'Warning') AS warning_runs,
        count(*) FILTER (WHERE f.status = 'Failed') AS failed_runs
      FROM vspc.job_run_facts f
      WHERE f.started_at >= (from_day::timestamp AT TIME ZONE tz)
        AND f.started_at < ((last_day + 1)::timestamp AT TIME ZONE tz)
      GROUP BY 1, 2
    ), merged AS (
      SELECT day, organization_uid, protected, meeting, 0 AS runs, 0 AS success_runs,
             0 AS warning_runs, 0 AS failed_runs, 0 AS created FROM jobs
      UNION ALL
      SELECT day, organization_uid, 0, 0, runs, success_runs, warning_runs, failed_runs, 0
      FROM sessions
      UNION ALL
      SELECT day, organization_uid, 0, 0, 0, 0, 0, 0, created FROM created_counts
    )
    SELECT m.day, m.organization_uid, sum(m.protected)::integer, sum(m.runs)::integer,
           sum(m.success_runs)::integer, sum(m.warning_runs)::integer,
           sum(m.failed_runs)::integer, sum(m.meeting)::integer,
           coalesce(min(p.rpo_hours), default_rpo), sum(m.created)::integer
    FROM merged m LEFT JOIN vspc.sla_policy p ON p.organization_uid = m.organization_uid
    GROUP BY m.day, m.organization_uid;
END
$$;

COMMENT ON FUNCTION vspc.sla_daily_compute(date, date, text, timestamptz) IS
  'the daily numbers of days from_day..last_day, each judged at its end or at as_of';
"""

SLA_DAILY_COMPUTE_0010 = r"""
-- Days from_day..last_day, each judged at its end (or at as_of, if that comes first). A
-- version holds at the end of D for D in [day(vf - 1us), day(vt - 1us) - 1] (local days); one
-- ordered pass per job carries the newest evidence forward: a successful session's end or a
-- restore point's creation. A point merged away (gone_at) later than the longest RPO after its
-- creation no longer matters when it goes, so the pass ignores gone_at; the rare point merged
-- away sooner ("brief") is left out of the pass and checked exactly (created <= t < gone_at).
-- A point is created on the local day of its creation_date and counts there while its job is
-- live at that day's end (merged away since or not); a point without a job the warehouse
-- knows counts for its agent's organization.
CREATE OR REPLACE FUNCTION vspc.sla_daily_compute(
  from_day date, last_day date, tz text, as_of timestamptz)
RETURNS TABLE (
  day date, organization_uid uuid, jobs_protected integer, runs integer,
  success_runs integer, warning_runs integer, failed_runs integer,
  jobs_meeting_rpo integer, rpo_hours integer, restore_points_created integer)
LANGUAGE plpgsql STABLE
-- The planner cannot see how many days generate_series yields per version (it guesses 1000):
-- the inflated cost would make it JIT-compile a query that runs in milliseconds, for seconds.
SET jit = off
AS $$
#variable_conflict use_column
DECLARE
  default_rpo integer := coalesce(
    (SELECT p.rpo_hours FROM vspc.sla_policy p WHERE p.organization_uid IS NULL), 24);
  max_rpo integer := greatest(
    coalesce((SELECT max(p.rpo_hours) FROM vspc.sla_policy p), 24), default_rpo);
  -- The first instant judged: only versions still open then, and successes within the
  -- longest RPO before it, can count (for today, only the current versions).
  first_end timestamptz := least(((from_day + 1)::timestamp AT TIME ZONE tz), as_of);
BEGIN
  RETURN QUERY
    WITH live AS MATERIALIZED (
      SELECT from_day + k AS day, s.instance_uid, s.organization_uid,
             s.is_enabled IS TRUE AS enabled,
             least(((from_day + k + 1)::timestamp AT TIME ZONE tz), as_of) AS t
      FROM vspc.backup_agent_job_snapshots s
      CROSS JOIN LATERAL generate_series(
        greatest(((s.valid_from AT TIME ZONE tz) - interval '1 microsecond')::date, from_day)
          - from_day,
        CASE WHEN s.valid_to IS NULL THEN last_day
             ELSE least(((s.valid_to AT TIME ZONE tz) - interval '1 microsecond')::date - 1,
                        last_day) END - from_day) AS k
      WHERE NOT s.is_deleted
        AND (s.valid_to IS NULL OR s.valid_to > first_end)
    ), points AS (
      SELECT r.job_uid, r.backup_agent_uid, r.creation_date, r.gone_at,
        r.gone_at < r.creation_date + make_interval(hours => max_rpo) AS brief
      FROM vspc.restore_points r
      WHERE r.creation_date <= as_of
        AND r.creation_date > least(first_end - make_interval(hours => max_rpo),
                                    (from_day::timestamp AT TIME ZONE tz))
    ), brief AS MATERIALIZED (
      SELECT job_uid, creation_date, gone_at FROM points WHERE brief AND job_uid IS NOT NULL
    ), events AS (
      SELECT instance_uid, t, NULL::timestamptz AS ended_at, day, organization_uid, enabled
      FROM live
      UNION ALL
      SELECT instance_uid, ended_at, ended_at, NULL, NULL, NULL FROM vspc.job_run_facts
      WHERE status IN ('Success', 'Warning') AND ended_at <= as_of
        AND ended_at > first_end - make_interval(hours => max_rpo)
      UNION ALL
      SELECT job_uid, creation_date, creation_date, NULL, NULL, NULL FROM points
      WHERE job_uid IS NOT NULL AND brief IS NOT TRUE
        AND creation_date > first_end - make_interval(hours => max_rpo)
    ), carried AS (
      -- A success ending exactly at a day's end counts for that day: it sorts first.
      SELECT instance_uid, day, organization_uid, enabled, t, max(ended_at) OVER (
        PARTITION BY instance_uid ORDER BY t, ended_at IS NULL ROWS UNBOUNDED PRECEDING
      ) AS last_success
      FROM events
    ), jobs AS (
      SELECT c.day, c.organization_uid,
        count(*) FILTER (WHERE c.enabled) AS protected,
        count(*) FILTER (WHERE c.enabled AND (c.last_success > c.t - make_interval(
          hours => coalesce(p.rpo_hours, default_rpo)) OR EXISTS (
            SELECT 1 FROM brief b WHERE b.job_uid = c.instance_uid AND b.creation_date <= c.t
              AND b.gone_at > c.t AND b.creation_date > c.t - make_interval(
                hours => coalesce(p.rpo_hours, default_rpo))))) AS meeting
      FROM carried c LEFT JOIN vspc.sla_policy p ON p.organization_uid = c.organization_uid
      WHERE c.day IS NOT NULL
      GROUP BY c.day, c.organization_uid
    ), created AS (
      SELECT (r.creation_date AT TIME ZONE tz)::date AS day, r.job_uid, r.backup_agent_uid
      FROM points r
      WHERE r.creation_date >= (from_day::timestamp AT TIME ZONE tz)
        AND r.creation_date < ((last_day + 1)::timestamp AT TIME ZONE tz)
    ), created_counts AS (
      SELECT l.day, l.organization_uid, count(*) AS created
      FROM created r JOIN live l ON l.instance_uid = r.job_uid AND l.day = r.day
      GROUP BY 1, 2
      UNION ALL
      SELECT r.day, a.organization_uid, count(*)
      FROM created r LEFT JOIN vspc.backup_agents a ON a.instance_uid = r.backup_agent_uid
      WHERE r.job_uid IS NULL OR NOT EXISTS (
        SELECT 1 FROM vspc.backup_agent_jobs j WHERE j.instance_uid = r.job_uid)
      GROUP BY 1, 2
    ), sessions AS (
      SELECT (f.started_at AT TIME ZONE tz)::date AS day, f.organization_uid,
        count(*) AS runs,
        count(*) FILTER (WHERE f.status = 'Success') AS success_runs,
        count(*) FILTER (WHERE f.status = 'Warning') AS warning_runs,
        count(*) FILTER (WHERE f.status = 'Failed') AS failed_runs
      FROM vspc.job_run_facts f
      WHERE f.started_at >= (from_day::timestamp AT TIME ZONE tz)
        AND f.started_at < ((last_day + 1)::timestamp AT TIME ZONE tz)
      GROUP BY 1, 2
    ), merged AS (
      SELECT day, organization_uid, protected, meeting, 0 AS runs, 0 AS success_runs,
             0 AS warning_runs, 0 AS failed_runs, 0 AS created FROM jobs
      UNION ALL
      SELECT day, organization_uid, 0, 0, runs, success_runs, warning_runs, failed_runs, 0
      FROM sessions
      UNION ALL
      SELECT day, organization_uid, 0, 0, 0, 0, 0, 0, created FROM created_counts
    )
    SELECT m.day, m.organization_uid, sum(m.protected)::integer, sum(m.runs)::integer,
           sum(m.success_runs)::integer, sum(m.warning_runs)::integer,
           sum(m.failed_runs)::integer, sum(m.meeting)::integer,
           coalesce(min(p.rpo_hours), default_rpo), sum(m.created)::integer
    FROM merged m LEFT JOIN vspc.sla_policy p ON p.organization_uid = m.organization_uid
    GROUP BY m.day, m.organization_uid;
END
$$;

COMMENT ON FUNCTION vspc.sla_daily_compute(date, date, text, timestamptz) IS
  'the daily numbers of days from_day..last_day, each judged at its end or at as_of';
"""


def upgrade() -> None:
    op.execute(SLA_DAILY_COMPUTE)


def downgrade() -> None:
    op.execute(SLA_DAILY_COMPUTE_0010)
