"""Restore points in the SLA answers: per job, per day, and per computer.

A restore point exists only if a backup succeeded, and the console says when it was created:
evidence of protection that does not depend on a sync having seen the session.
``job_sla_at`` (and ``job_sla_current``) return ``last_restore_point_at``, the job's newest
point that existed at the instant (created by then, not merged away yet), and judge
``rpo_met`` and ``hours_since_success`` on the newer of it and the latest successful session.
``sla_daily_counts`` (and the view ``sla_daily``) gain ``restore_points_created``, and
``jobs_meeting_rpo`` counts the restore points too. Statement-level triggers on
``restore_points`` recompute the completed days a written point counts on (a late-indexed
point for yesterday updates yesterday's row). The new view ``computer_sla_current`` answers per
computer. An index on ``restore_points (creation_date)`` serves the days' reads of points; the
indexes of a job's and of an agent's points include ``gone_at``.

A function's result type cannot be replaced in place: ``job_sla_at``, ``sla_daily_compute``,
``sla_daily_today`` and the views that read them are dropped and created again (grants follow
the schema's default privileges, see ``vspc-etl grant``). The stored days are recomputed from
the first day of a stored point, if any. Downgrade restores the definitions of revision 0009
verbatim and drops what this revision added.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "vspc"
MEETING_COMMENT = (
    "protected jobs whose latest successful session ended within rpo_hours",
    "protected jobs whose latest successful session ended, or newest restore point was "
    "created, within rpo_hours",
)
# The indexes of a job's and of an agent's points include gone_at: the newest point listed at
# an instant is then read from the index alone (a heap visit per point skipped would read
# pages all over the table, points being stored in time order).
POINT_OWNERS = ("job_uid", "backup_agent_uid")
CREATED_COMMENT = (
    "restore points created that day by jobs live at its end, or without a known job by the "
    "organization's computers"
)


JOB_SLA_AT = r"""
-- The live jobs at as_of with their kept answer (job_sla_state). A job whose answer is not
-- settled by as_of (a past instant; a session that ends after it) is computed from its
-- sessions instead, read backwards from as_of in windows of 1, 2, 4, ... days until each such
-- job has met its latest success then (or the oldest session is passed): most jobs run daily,
-- so a past instant reads days of sessions, not the year before it. Per window and job: the
-- latest success in it and the visible failures after it (all of them, if it has none).
-- A job's newest restore point that existed at as_of (created by then, not merged away yet)
-- is one backward probe of (job_uid, creation_date) per job; the RPO is judged on the newer
-- of it and the latest successful session's end.
CREATE OR REPLACE FUNCTION vspc.job_sla_at(as_of timestamptz)
RETURNS TABLE (
  instance_uid uuid, source text, organization_uid uuid, organization_name text,
  backup_agent_uid uuid, computer_name text, job_name text, is_enabled boolean,
  last_status text, last_run timestamptz, last_success_at timestamptz,
  hours_since_success numeric, rpo_hours integer, rpo_met boolean,
  consecutive_failures integer, system_type text, agent_connection_status text,
  agent_last_heartbeat_at timestamptz, last_restore_point_at timestamptz)
LANGUAGE plpgsql STABLE
SET jit = off
-- Each call plans its statements for its own as_of and windows: a cached generic plan, which
-- PL/pgSQL may switch to after five calls, read every version (1 s instead of 50 ms).
SET plan_cache_mode = force_custom_plan
ROWS 10000
AS $$
#variable_conflict use_column
DECLARE
  pending uuid[];
  oldest timestamptz;
  lo timestamptz;
  hi timestamptz := as_of + interval '1 microsecond';  -- windows are [lo, hi)
  span interval := interval '1 day';
  w_uid uuid[] := '{}';
  w_ok timestamptz[] := '{}';
  w_after bigint[] := '{}';
BEGIN
  SELECT array_agg(s.instance_uid) INTO pending
  FROM vspc.backup_agent_job_snapshots s
  JOIN vspc.job_sla_state st ON st.instance_uid = s.instance_uid
  WHERE s.valid_from <= as_of AND (s.valid_to IS NULL OR s.valid_to > as_of)
    AND NOT s.is_deleted AND st.settled_at > as_of;
  IF pending IS NOT NULL THEN
    SELECT min(f.started_at) INTO oldest FROM vspc.job_run_facts f;
  END IF;
  WHILE pending IS NOT NULL AND hi > oldest AND isfinite(hi) LOOP
    lo := hi - span;
    WITH counted AS (
      SELECT f.instance_uid,
        max(f.started_at) FILTER (WHERE f.status IN ('Success', 'Warning')
                                    AND f.ended_at <= as_of) AS ok_started,
        array_agg(f.started_at) FILTER (WHERE f.status = 'Failed'
                                          AND coalesce(f.ended_at, f.started_at) <= as_of)
          AS failed_starts
      FROM vspc.job_run_facts f
      WHERE f.started_at >= lo AND f.started_at < hi
        AND f.instance_uid IN (SELECT unnest(pending))
      GROUP BY f.instance_uid
    ), window_rows AS (
      SELECT c.instance_uid, c.ok_started,
        (SELECT count(*) FROM unnest(c.failed_starts) AS x (started)
         WHERE x.started > coalesce(c.ok_started, '-infinity')) AS after_ok
      FROM counted c
    )
    SELECT w_uid || coalesce(array_agg(r.instance_uid), '{}'),
           w_ok || coalesce(array_agg(r.ok_started), '{}'),
           w_after || coalesce(array_agg(r.after_ok), '{}'),
           (SELECT array_agg(p.uid) FROM unnest(pending) AS p (uid)
            WHERE NOT EXISTS (SELECT 1 FROM window_rows k
                              WHERE k.instance_uid = p.uid AND k.ok_started IS NOT NULL))
      INTO w_uid, w_ok, w_after, pending
    FROM window_rows r;
    hi := lo;
    span := span * 2;
  END LOOP;
  RETURN QUERY
  WITH jobs AS MATERIALIZED (
    SELECT s.instance_uid, s.source, s.organization_uid, s.backup_agent_uid, s.name,
           s.is_enabled, s.status, s.last_run, s.system_type, st.ok_ended_at, st.failures,
           coalesce(st.settled_at > as_of, false) AS unsettled
    FROM vspc.backup_agent_job_snapshots s
    LEFT JOIN vspc.job_sla_state st ON st.instance_uid = s.instance_uid
    WHERE s.valid_from <= as_of AND (s.valid_to IS NULL OR s.valid_to > as_of)
      AND NOT s.is_deleted
  ), windows AS (
    -- the windows before the one with the job's success count all their failures
    SELECT w.uid, max(w.ok) AS ok_started, sum(w.n_after) AS n
    FROM unnest(w_uid, w_ok, w_after) AS w (uid, ok, n_after)
    GROUP BY w.uid
  ), computed AS (
    SELECT w.uid, e.ended_at, w.n
    FROM windows w
    LEFT JOIN vspc.job_run_facts e ON e.started_at = w.ok_started AND e.instance_uid = w.uid
  ), answer AS (
    SELECT j.*,
      CASE WHEN j.unsettled THEN c.ended_at ELSE j.ok_ended_at END AS ok_end,
      CASE WHEN j.unsettled THEN coalesce(c.n, 0) ELSE coalesce(j.failures, 0) END AS n
    FROM jobs j
    LEFT JOIN computed c ON j.unsettled AND c.uid = j.instance_uid
  )
  SELECT j.instance_uid, j.source, j.organization_uid, o.name, j.backup_agent_uid,
         a.computer_name, j.name, j.is_enabled, j.status, j.last_run, j.ok_end,
         round((extract(epoch FROM as_of - greatest(j.ok_end, rp.created)) / 3600)::numeric, 2),
         rpo.hours,
         coalesce(greatest(j.ok_end, rp.created) > as_of - make_interval(hours => rpo.hours),
                  false),
         j.n::integer, j.system_type, m.connection_status, m.last_heartbeat_at, rp.created
  FROM answer j
  LEFT JOIN LATERAL (
    SELECT p.creation_date AS created FROM vspc.restore_points p
    WHERE p.job_uid = j.instance_uid AND p.creation_date <= as_of
      AND (p.gone_at IS NULL OR p.gone_at > as_of)
    ORDER BY p.creation_date DESC LIMIT 1
  ) rp ON true
  LEFT JOIN vspc.organizations o ON o.instance_uid = j.organization_uid
  LEFT JOIN vspc.backup_agents a ON a.instance_uid = j.backup_agent_uid
  LEFT JOIN vspc.management_agents m ON m.instance_uid = a.management_agent_uid
  CROSS JOIN LATERAL (
    SELECT coalesce(
      (SELECT p.rpo_hours FROM vspc.sla_policy p WHERE p.organization_uid = j.organization_uid),
      (SELECT p.rpo_hours FROM vspc.sla_policy p WHERE p.organization_uid IS NULL),
      24) AS hours
  ) rpo;
END
$$;

COMMENT ON FUNCTION vspc.job_sla_at(timestamptz) IS
  'job_sla_current as it was at as_of: jobs live then, sessions ended by then, restore '
  'points created by then and not yet merged away';
"""

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

SLA_DAILY_TODAY = r"""
-- Today's rows of sla_daily, as of the moment the view is read.
CREATE OR REPLACE FUNCTION vspc.sla_daily_today()
RETURNS TABLE (
  day date, organization_uid uuid, jobs_protected integer, runs integer,
  success_runs integer, warning_runs integer, failed_runs integer,
  jobs_meeting_rpo integer, rpo_hours integer, restore_points_created integer)
LANGUAGE plpgsql STABLE
SET jit = off
AS $$
DECLARE
  tz text := coalesce((SELECT time_zone FROM vspc.report_settings LIMIT 1), 'UTC');
  today date := (now() AT TIME ZONE tz)::date;
BEGIN
  RETURN QUERY SELECT * FROM vspc.sla_daily_compute(today, today, tz, now());
END
$$;

COMMENT ON FUNCTION vspc.sla_daily_today() IS
  'today''s rows of sla_daily, as of now (sla_daily_counts keeps completed days only)';
"""

REFRESH_SLA_DAILY = r"""
-- Completed days only: from the local day of `since` or the day after the last one computed,
-- whichever is earlier (NULL: from the first day of history), through yesterday. Today's rows
-- come from sla_daily_today() when the view is read.
CREATE OR REPLACE FUNCTION vspc.refresh_sla_daily(since timestamptz DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql
SET jit = off
AS $$
DECLARE
  tz text := coalesce((SELECT time_zone FROM vspc.report_settings LIMIT 1), 'UTC');
  yesterday date := (now() AT TIME ZONE tz)::date - 1;
  first_day date;
  from_day date;
  written integer;
BEGIN
  -- One writer at a time (a sync and a settings change); readers are never blocked.
  LOCK TABLE vspc.sla_daily_counts IN EXCLUSIVE MODE;
  first_day := least(
    (SELECT (min(valid_from) AT TIME ZONE tz)::date FROM vspc.backup_agent_job_snapshots),
    (SELECT (min(started_at) AT TIME ZONE tz)::date FROM vspc.job_run_facts));
  IF first_day IS NULL THEN
    DELETE FROM vspc.sla_daily_counts;
    RETURN 0;
  END IF;
  from_day := CASE WHEN since IS NULL THEN first_day ELSE least(
    (since AT TIME ZONE tz)::date,
    coalesce((SELECT max(day) + 1 FROM vspc.sla_daily_counts), first_day)) END;
  from_day := greatest(from_day, first_day);
  DELETE FROM vspc.sla_daily_counts WHERE day >= from_day OR day < first_day;
  IF from_day > yesterday THEN
    RETURN 0;
  END IF;
  INSERT INTO vspc.sla_daily_counts (day, organization_uid, jobs_protected, runs,
    success_runs, warning_runs, failed_runs, jobs_meeting_rpo, rpo_hours,
    restore_points_created)
  SELECT * FROM vspc.sla_daily_compute(from_day, yesterday, tz, now());
  GET DIAGNOSTICS written = ROW_COUNT;
  RETURN written;
END
$$;

COMMENT ON FUNCTION vspc.refresh_sla_daily(timestamptz) IS
  'recompute sla_daily_counts from the day of since, or the day after the last one computed '
  'if earlier (NULL: everything), through yesterday';
"""

JOB_SLA_CURRENT = r"""
-- The SLA answer now, per live job (job_sla_at at now()).
CREATE OR REPLACE VIEW vspc.job_sla_current AS
SELECT instance_uid, source, organization_uid, organization_name, backup_agent_uid,
       computer_name, job_name, is_enabled, last_status, last_run, last_success_at,
       hours_since_success, rpo_hours, rpo_met, consecutive_failures, system_type,
       agent_connection_status, agent_last_heartbeat_at, last_restore_point_at
FROM vspc.job_sla_at(now());

COMMENT ON VIEW vspc.job_sla_current IS
  'one row per live job: its latest outcome and whether it meets its RPO now';
COMMENT ON COLUMN vspc.job_sla_current.instance_uid IS 'job instanceUid';
COMMENT ON COLUMN vspc.job_sla_current.source IS 'console the job was read from';
COMMENT ON COLUMN vspc.job_sla_current.organization_uid IS 'organization of the job';
COMMENT ON COLUMN vspc.job_sla_current.organization_name IS 'organization name (null if unknown)';
COMMENT ON COLUMN vspc.job_sla_current.backup_agent_uid IS 'agent (computer) of the job';
COMMENT ON COLUMN vspc.job_sla_current.computer_name IS
  'computer name from /infrastructure/backupAgents (null if unknown)';
COMMENT ON COLUMN vspc.job_sla_current.job_name IS 'job name';
COMMENT ON COLUMN vspc.job_sla_current.is_enabled IS
  'job enabled; a disabled job is not counted as protected';
COMMENT ON COLUMN vspc.job_sla_current.last_status IS
  'status of the latest session as last read (Running included)';
COMMENT ON COLUMN vspc.job_sla_current.last_run IS 'start of the latest session as last read';
COMMENT ON COLUMN vspc.job_sla_current.last_success_at IS
  'end of the latest Success or Warning session';
COMMENT ON COLUMN vspc.job_sla_current.hours_since_success IS
  'hours from the newer of last_success_at and last_restore_point_at to now';
COMMENT ON COLUMN vspc.job_sla_current.rpo_hours IS
  'RPO from sla_policy (the organization''s row, else the default)';
COMMENT ON COLUMN vspc.job_sla_current.rpo_met IS
  'the newer of last_success_at and last_restore_point_at is within rpo_hours before now';
COMMENT ON COLUMN vspc.job_sla_current.consecutive_failures IS
  'Failed sessions since the latest Success/Warning';
COMMENT ON COLUMN vspc.job_sla_current.system_type IS
  'platform of the job''s agent: Windows, Linux or Mac';
COMMENT ON COLUMN vspc.job_sla_current.agent_connection_status IS
  'connection of the computer''s management agent: Online, Inaccessible, Rejected, Unknown '
  '(null if unknown)';
COMMENT ON COLUMN vspc.job_sla_current.agent_last_heartbeat_at IS
  'when the console last heard from the computer''s management agent (null if unknown)';
COMMENT ON COLUMN vspc.job_sla_current.last_restore_point_at IS
  'creation of the job''s newest restore point the console still lists (restore_points with '
  'job_uid = instance_uid)';
"""

SLA_DAILY = r"""
-- Completed days from sla_daily_counts (kept by each sync), today computed when read.
CREATE OR REPLACE VIEW vspc.sla_daily AS
SELECT c.day, c.organization_uid, o.name AS organization_name, c.jobs_protected, c.runs,
       c.success_runs, c.warning_runs, c.failed_runs,
       round((c.success_runs + c.warning_runs)::numeric / nullif(c.runs, 0), 4)
         AS success_rate,
       c.jobs_meeting_rpo,
       round(c.jobs_meeting_rpo::numeric / nullif(c.jobs_protected, 0), 4) AS rpo_compliance,
       c.rpo_hours, c.restore_points_created
FROM (
  SELECT k.day, k.organization_uid, k.jobs_protected, k.runs, k.success_runs, k.warning_runs,
         k.failed_runs, k.jobs_meeting_rpo, k.rpo_hours, k.restore_points_created
  FROM vspc.sla_daily_counts k
  WHERE k.day < (now() AT TIME ZONE coalesce(
    (SELECT r.time_zone FROM vspc.report_settings r LIMIT 1), 'UTC'))::date
  UNION ALL
  SELECT * FROM vspc.sla_daily_today()
) c
LEFT JOIN vspc.organizations o ON o.instance_uid = c.organization_uid;

COMMENT ON VIEW vspc.sla_daily IS
  'SLA per calendar day (report_settings.time_zone) and organization; a day is judged at its '
  'end (today: as of the moment the view is read)';
COMMENT ON COLUMN vspc.sla_daily.day IS 'calendar day in report_settings.time_zone';
COMMENT ON COLUMN vspc.sla_daily.organization_uid IS 'organization';
COMMENT ON COLUMN vspc.sla_daily.organization_name IS 'organization name (null if unknown)';
COMMENT ON COLUMN vspc.sla_daily.jobs_protected IS 'jobs live and enabled at the end of the day';
COMMENT ON COLUMN vspc.sla_daily.runs IS 'sessions started that day';
COMMENT ON COLUMN vspc.sla_daily.success_runs IS 'of which Success';
COMMENT ON COLUMN vspc.sla_daily.warning_runs IS 'of which Warning';
COMMENT ON COLUMN vspc.sla_daily.failed_runs IS 'of which Failed';
COMMENT ON COLUMN vspc.sla_daily.success_rate IS
  '(success_runs + warning_runs) / runs, 0..1; null without runs';
COMMENT ON COLUMN vspc.sla_daily.jobs_meeting_rpo IS
  'protected jobs whose newest evidence at the end of the day (the later of the latest '
  'Success/Warning session''s end and the newest restore point then listed) is within '
  'rpo_hours before it';
COMMENT ON COLUMN vspc.sla_daily.rpo_compliance IS
  'jobs_meeting_rpo / jobs_protected, 0..1; null without jobs';
COMMENT ON COLUMN vspc.sla_daily.rpo_hours IS 'the RPO applied (sla_policy)';
COMMENT ON COLUMN vspc.sla_daily.restore_points_created IS
  'restore points created that day (merged away since or not) by jobs live at its end, or '
  'without a known job by the organization''s computers';
"""

RESTORE_POINTS_CHANGED = r"""
-- Restore points written for a completed day (a late-indexed point, a point a sync first sees
-- after midnight, a repair by hand) recompute sla_daily_counts from that day. Points of today
-- are counted when sla_daily is read, and a point merged away long after its creation (every
-- full read finds some) changes no day: only the creation, job, agent, or a merge within the
-- longest RPO (see sla_daily_compute) moves a day.
CREATE OR REPLACE FUNCTION vspc.restore_points_changed() RETURNS trigger
LANGUAGE plpgsql SET jit = off AS $$
DECLARE
  tz text := coalesce((SELECT time_zone FROM vspc.report_settings LIMIT 1), 'UTC');
  today_start timestamptz := date_trunc('day', now() AT TIME ZONE tz) AT TIME ZONE tz;
  max_rpo interval := make_interval(hours => greatest(
    coalesce((SELECT max(p.rpo_hours) FROM vspc.sla_policy p), 24), 24));
  since timestamptz;
BEGIN
  IF TG_OP = 'INSERT' THEN
    SELECT min(creation_date) INTO since FROM new_points;
  ELSIF TG_OP = 'DELETE' THEN
    SELECT min(creation_date) INTO since FROM old_points;
  ELSE
    SELECT min(least(o.creation_date, n.creation_date)) INTO since
    FROM old_points o JOIN new_points n ON n.instance_uid = o.instance_uid
    WHERE (o.creation_date, o.job_uid, o.backup_agent_uid)
            IS DISTINCT FROM (n.creation_date, n.job_uid, n.backup_agent_uid)
       OR (o.gone_at IS DISTINCT FROM n.gone_at
           AND (o.gone_at < o.creation_date + max_rpo OR n.gone_at < n.creation_date + max_rpo));
  END IF;
  IF since < today_start THEN
    PERFORM vspc.refresh_sla_daily(since);
  END IF;
  RETURN NULL;
END
$$;

COMMENT ON FUNCTION vspc.restore_points_changed() IS
  'trigger: recompute sla_daily_counts from the first completed day restore points written '
  'by the statement count on';
"""

COMPUTER_SLA_CURRENT = r"""
-- The SLA answer now, per live computer (backup agent). Live: it has a live job, or the console
-- still lists a restore point of it (a computer protected by a job the console does not list).
-- Its evidence is the newest of its jobs' successful sessions and restore points, and of the
-- points the console lists for the agent without a job (one backward probe of
-- (backup_agent_uid, creation_date) per agent). Reads job_sla_at(now()), not job_sla_current:
-- a view may not depend on another that sorts after it.
CREATE OR REPLACE VIEW vspc.computer_sla_current AS
WITH jobs AS (
  SELECT j.backup_agent_uid, min(j.source) AS source, min(j.organization_uid::text)::uuid
           AS organization_uid,
         min(j.system_type) AS system_type, count(*)::integer AS jobs,
         (count(*) FILTER (WHERE j.is_enabled))::integer AS enabled_jobs,
         (count(*) FILTER (WHERE j.is_enabled AND j.consecutive_failures > 0))::integer
           AS failing_jobs,
         max(j.last_success_at) AS last_success_at,
         max(j.last_restore_point_at) AS last_restore_point_at
  FROM vspc.job_sla_at(now()) j
  WHERE j.backup_agent_uid IS NOT NULL
  GROUP BY j.backup_agent_uid
), computers AS (
  SELECT g.uid, j.source AS job_source, j.organization_uid AS job_organization_uid,
         j.system_type AS job_system_type, j.jobs, j.enabled_jobs, j.failing_jobs,
         j.last_success_at, greatest(j.last_restore_point_at, p.created) AS last_point
  FROM (SELECT backup_agent_uid AS uid FROM jobs
        UNION SELECT instance_uid FROM vspc.backup_agents) g
  LEFT JOIN jobs j ON j.backup_agent_uid = g.uid
  LEFT JOIN LATERAL (
    SELECT r.creation_date AS created FROM vspc.restore_points r
    WHERE r.backup_agent_uid = g.uid AND r.gone_at IS NULL AND r.creation_date <= now()
    ORDER BY r.creation_date DESC LIMIT 1
  ) p ON true
  WHERE j.backup_agent_uid IS NOT NULL OR p.created IS NOT NULL
)
SELECT c.uid AS backup_agent_uid, coalesce(a.source, c.job_source) AS source,
       a.computer_name, coalesce(a.organization_uid, c.job_organization_uid) AS organization_uid,
       o.name AS organization_name, coalesce(a.agent_platform, c.job_system_type) AS system_type,
       coalesce(c.jobs, 0) AS jobs, coalesce(c.enabled_jobs, 0) AS enabled_jobs,
       coalesce(c.failing_jobs, 0) AS failing_jobs, c.last_success_at,
       c.last_point AS last_restore_point_at,
       round((extract(epoch FROM now() - greatest(c.last_success_at, c.last_point)) / 3600)
             ::numeric, 2) AS hours_since_success,
       rpo.hours AS rpo_hours,
       coalesce(greatest(c.last_success_at, c.last_point)
                > now() - make_interval(hours => rpo.hours), false) AS rpo_met,
       m.connection_status, m.last_heartbeat_at
FROM computers c
LEFT JOIN vspc.backup_agents a ON a.instance_uid = c.uid
LEFT JOIN vspc.organizations o
  ON o.instance_uid = coalesce(a.organization_uid, c.job_organization_uid)
LEFT JOIN vspc.management_agents m ON m.instance_uid = a.management_agent_uid
CROSS JOIN LATERAL (
  SELECT coalesce(
    (SELECT p.rpo_hours FROM vspc.sla_policy p
     WHERE p.organization_uid = coalesce(a.organization_uid, c.job_organization_uid)),
    (SELECT p.rpo_hours FROM vspc.sla_policy p WHERE p.organization_uid IS NULL),
    24) AS hours
) rpo;

COMMENT ON VIEW vspc.computer_sla_current IS
  'one row per live computer (backup agent: one with a live job, or with a restore point the '
  'console still lists): its jobs and whether its newest evidence of a backup meets its RPO now';
COMMENT ON COLUMN vspc.computer_sla_current.backup_agent_uid IS 'backup agent (computer) uid';
COMMENT ON COLUMN vspc.computer_sla_current.source IS 'console the computer was read from';
COMMENT ON COLUMN vspc.computer_sla_current.computer_name IS
  'computer name from /infrastructure/backupAgents (null if unknown)';
COMMENT ON COLUMN vspc.computer_sla_current.organization_uid IS
  'organization of the agent (of its jobs until the agent was read)';
COMMENT ON COLUMN vspc.computer_sla_current.organization_name IS
  'organization name (null if unknown)';
COMMENT ON COLUMN vspc.computer_sla_current.system_type IS
  'platform of the computer: Windows, Linux or Mac';
COMMENT ON COLUMN vspc.computer_sla_current.jobs IS 'live jobs of the computer';
COMMENT ON COLUMN vspc.computer_sla_current.enabled_jobs IS 'of which enabled';
COMMENT ON COLUMN vspc.computer_sla_current.failing_jobs IS
  'enabled jobs with a Failed session since their latest Success/Warning';
COMMENT ON COLUMN vspc.computer_sla_current.last_success_at IS
  'end of the latest Success or Warning session of any of its jobs';
COMMENT ON COLUMN vspc.computer_sla_current.last_restore_point_at IS
  'creation of the newest restore point the console still lists for the computer, its jobs'' '
  'and those without a job';
COMMENT ON COLUMN vspc.computer_sla_current.hours_since_success IS
  'hours from the newer of last_success_at and last_restore_point_at to now';
COMMENT ON COLUMN vspc.computer_sla_current.rpo_hours IS
  'RPO from sla_policy (the organization''s row, else the default)';
COMMENT ON COLUMN vspc.computer_sla_current.rpo_met IS
  'the newer of last_success_at and last_restore_point_at is within rpo_hours before now';
COMMENT ON COLUMN vspc.computer_sla_current.connection_status IS
  'connection of the computer''s management agent: Online, Inaccessible, Rejected, Unknown '
  '(null if unknown)';
COMMENT ON COLUMN vspc.computer_sla_current.last_heartbeat_at IS
  'when the console last heard from the computer''s management agent (null if unknown)';
"""

SLA_DAILY_INSERT_TRIGGER = r"""
-- Keeps sla_daily_counts exact whatever writes restore_points (a sync, a repair by hand).
CREATE TRIGGER sla_daily_insert AFTER INSERT ON vspc.restore_points
  REFERENCING NEW TABLE AS new_points
  FOR EACH STATEMENT EXECUTE FUNCTION vspc.restore_points_changed();
"""

SLA_DAILY_UPDATE_TRIGGER = r"""
-- Keeps sla_daily_counts exact whatever writes restore_points (a sync, a repair by hand).
CREATE TRIGGER sla_daily_update AFTER UPDATE ON vspc.restore_points
  REFERENCING OLD TABLE AS old_points NEW TABLE AS new_points
  FOR EACH STATEMENT EXECUTE FUNCTION vspc.restore_points_changed();
"""

SLA_DAILY_DELETE_TRIGGER = r"""
-- Keeps sla_daily_counts exact whatever writes restore_points (a sync, a repair by hand).
CREATE TRIGGER sla_daily_delete AFTER DELETE ON vspc.restore_points
  REFERENCING OLD TABLE AS old_points
  FOR EACH STATEMENT EXECUTE FUNCTION vspc.restore_points_changed();
"""

# The definitions of revision 0009, restored by downgrade.

JOB_SLA_AT_0009 = r"""
-- The live jobs at as_of with their kept answer (job_sla_state). A job whose answer is not
-- settled by as_of (a past instant; a session that ends after it) is computed from its
-- sessions instead, read backwards from as_of in windows of 1, 2, 4, ... days until each such
-- job has met its latest success then (or the oldest session is passed): most jobs run daily,
-- so a past instant reads days of sessions, not the year before it. Per window and job: the
-- latest success in it and the visible failures after it (all of them, if it has none).
CREATE OR REPLACE FUNCTION vspc.job_sla_at(as_of timestamptz)
RETURNS TABLE (
  instance_uid uuid, source text, organization_uid uuid, organization_name text,
  backup_agent_uid uuid, computer_name text, job_name text, is_enabled boolean,
  last_status text, last_run timestamptz, last_success_at timestamptz,
  hours_since_success numeric, rpo_hours integer, rpo_met boolean,
  consecutive_failures integer, system_type text, agent_connection_status text,
  agent_last_heartbeat_at timestamptz)
LANGUAGE plpgsql STABLE
SET jit = off
-- Each call plans its statements for its own as_of and windows: a cached generic plan, which
-- PL/pgSQL may switch to after five calls, read every version (1 s instead of 50 ms).
SET plan_cache_mode = force_custom_plan
ROWS 10000
AS $$
#variable_conflict use_column
DECLARE
  pending uuid[];
  oldest timestamptz;
  lo timestamptz;
  hi timestamptz := as_of + interval '1 microsecond';  -- windows are [lo, hi)
  span interval := interval '1 day';
  w_uid uuid[] := '{}';
  w_ok timestamptz[] := '{}';
  w_after bigint[] := '{}';
BEGIN
  SELECT array_agg(s.instance_uid) INTO pending
  FROM vspc.backup_agent_job_snapshots s
  JOIN vspc.job_sla_state st ON st.instance_uid = s.instance_uid
  WHERE s.valid_from <= as_of AND (s.valid_to IS NULL OR s.valid_to > as_of)
    AND NOT s.is_deleted AND st.settled_at > as_of;
  IF pending IS NOT NULL THEN
    SELECT min(f.started_at) INTO oldest FROM vspc.job_run_facts f;
  END IF;
  WHILE pending IS NOT NULL AND hi > oldest AND isfinite(hi) LOOP
    lo := hi - span;
    WITH counted AS (
      SELECT f.instance_uid,
        max(f.started_at) FILTER (WHERE f.status IN ('Success', 'Warning')
                                    AND f.ended_at <= as_of) AS ok_started,
        array_agg(f.started_at) FILTER (WHERE f.status = 'Failed'
                                          AND coalesce(f.ended_at, f.started_at) <= as_of)
          AS failed_starts
      FROM vspc.job_run_facts f
      WHERE f.started_at >= lo AND f.started_at < hi
        AND f.instance_uid IN (SELECT unnest(pending))
      GROUP BY f.instance_uid
    ), window_rows AS (
      SELECT c.instance_uid, c.ok_started,
        (SELECT count(*) FROM unnest(c.failed_starts) AS x (started)
         WHERE x.started > coalesce(c.ok_started, '-infinity')) AS after_ok
      FROM counted c
    )
    SELECT w_uid || coalesce(array_agg(r.instance_uid), '{}'),
           w_ok || coalesce(array_agg(r.ok_started), '{}'),
           w_after || coalesce(array_agg(r.after_ok), '{}'),
           (SELECT array_agg(p.uid) FROM unnest(pending) AS p (uid)
            WHERE NOT EXISTS (SELECT 1 FROM window_rows k
                              WHERE k.instance_uid = p.uid AND k.ok_started IS NOT NULL))
      INTO w_uid, w_ok, w_after, pending
    FROM window_rows r;
    hi := lo;
    span := span * 2;
  END LOOP;
  RETURN QUERY
  WITH jobs AS MATERIALIZED (
    SELECT s.instance_uid, s.source, s.organization_uid, s.backup_agent_uid, s.name,
           s.is_enabled, s.status, s.last_run, s.system_type, st.ok_ended_at, st.failures,
           coalesce(st.settled_at > as_of, false) AS unsettled
    FROM vspc.backup_agent_job_snapshots s
    LEFT JOIN vspc.job_sla_state st ON st.instance_uid = s.instance_uid
    WHERE s.valid_from <= as_of AND (s.valid_to IS NULL OR s.valid_to > as_of)
      AND NOT s.is_deleted
  ), windows AS (
    -- the windows before the one with the job's success count all their failures
    SELECT w.uid, max(w.ok) AS ok_started, sum(w.n_after) AS n
    FROM unnest(w_uid, w_ok, w_after) AS w (uid, ok, n_after)
    GROUP BY w.uid
  ), computed AS (
    SELECT w.uid, e.ended_at, w.n
    FROM windows w
    LEFT JOIN vspc.job_run_facts e ON e.started_at = w.ok_started AND e.instance_uid = w.uid
  ), answer AS (
    SELECT j.*,
      CASE WHEN j.unsettled THEN c.ended_at ELSE j.ok_ended_at END AS ok_end,
      CASE WHEN j.unsettled THEN coalesce(c.n, 0) ELSE coalesce(j.failures, 0) END AS n
    FROM jobs j
    LEFT JOIN computed c ON j.unsettled AND c.uid = j.instance_uid
  )
  SELECT j.instance_uid, j.source, j.organization_uid, o.name, j.backup_agent_uid,
         a.computer_name, j.name, j.is_enabled, j.status, j.last_run, j.ok_end,
         round((extract(epoch FROM as_of - j.ok_end) / 3600)::numeric, 2),
         rpo.hours,
         coalesce(j.ok_end > as_of - make_interval(hours => rpo.hours), false),
         j.n::integer, j.system_type, m.connection_status, m.last_heartbeat_at
  FROM answer j
  LEFT JOIN vspc.organizations o ON o.instance_uid = j.organization_uid
  LEFT JOIN vspc.backup_agents a ON a.instance_uid = j.backup_agent_uid
  LEFT JOIN vspc.management_agents m ON m.instance_uid = a.management_agent_uid
  CROSS JOIN LATERAL (
    SELECT coalesce(
      (SELECT p.rpo_hours FROM vspc.sla_policy p WHERE p.organization_uid = j.organization_uid),
      (SELECT p.rpo_hours FROM vspc.sla_policy p WHERE p.organization_uid IS NULL),
      24) AS hours
  ) rpo;
END
$$;

COMMENT ON FUNCTION vspc.job_sla_at(timestamptz) IS
  'job_sla_current as it was at as_of: jobs live then, sessions ended by then';
"""

SLA_DAILY_COMPUTE_0009 = r"""
-- Days from_day..last_day, each judged at its end (or at as_of, if that comes first). A
-- version holds at the end of D for D in [day(vf - 1us), day(vt - 1us) - 1] (local days); one
-- ordered pass per job carries the latest successful end forward.
CREATE OR REPLACE FUNCTION vspc.sla_daily_compute(
  from_day date, last_day date, tz text, as_of timestamptz)
RETURNS TABLE (
  day date, organization_uid uuid, jobs_protected integer, runs integer,
  success_runs integer, warning_runs integer, failed_runs integer,
  jobs_meeting_rpo integer, rpo_hours integer)
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
    WITH live AS (
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
    ), events AS (
      SELECT instance_uid, t, NULL::timestamptz AS ended_at, day, organization_uid, enabled
      FROM live
      UNION ALL
      SELECT instance_uid, ended_at, ended_at, NULL, NULL, NULL FROM vspc.job_run_facts
      WHERE status IN ('Success', 'Warning') AND ended_at <= as_of
        AND ended_at > first_end - make_interval(hours => max_rpo)
    ), carried AS (
      -- A success ending exactly at a day's end counts for that day: it sorts first.
      SELECT day, organization_uid, enabled, t, max(ended_at) OVER (
        PARTITION BY instance_uid ORDER BY t, ended_at IS NULL ROWS UNBOUNDED PRECEDING
      ) AS last_success
      FROM events
    ), jobs AS (
      SELECT c.day, c.organization_uid,
        count(*) FILTER (WHERE c.enabled) AS protected,
        count(*) FILTER (WHERE c.enabled AND c.last_success > c.t - make_interval(
          hours => coalesce(p.rpo_hours, default_rpo))) AS meeting
      FROM carried c LEFT JOIN vspc.sla_policy p ON p.organization_uid = c.organization_uid
      WHERE c.day IS NOT NULL
      GROUP BY c.day, c.organization_uid
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
             0 AS warning_runs, 0 AS failed_runs FROM jobs
      UNION ALL
      SELECT day, organization_uid, 0, 0, runs, success_runs, warning_runs, failed_runs
      FROM sessions
    )
    SELECT m.day, m.organization_uid, sum(m.protected)::integer, sum(m.runs)::integer,
           sum(m.success_runs)::integer, sum(m.warning_runs)::integer,
           sum(m.failed_runs)::integer, sum(m.meeting)::integer,
           coalesce(min(p.rpo_hours), default_rpo)
    FROM merged m LEFT JOIN vspc.sla_policy p ON p.organization_uid = m.organization_uid
    GROUP BY m.day, m.organization_uid;
END
$$;

COMMENT ON FUNCTION vspc.sla_daily_compute(date, date, text, timestamptz) IS
  'the daily numbers of days from_day..last_day, each judged at its end or at as_of';
"""

SLA_DAILY_TODAY_0009 = r"""
-- Today's rows of sla_daily, as of the moment the view is read.
CREATE OR REPLACE FUNCTION vspc.sla_daily_today()
RETURNS TABLE (
  day date, organization_uid uuid, jobs_protected integer, runs integer,
  success_runs integer, warning_runs integer, failed_runs integer,
  jobs_meeting_rpo integer, rpo_hours integer)
LANGUAGE plpgsql STABLE
SET jit = off
AS $$
DECLARE
  tz text := coalesce((SELECT time_zone FROM vspc.report_settings LIMIT 1), 'UTC');
  today date := (now() AT TIME ZONE tz)::date;
BEGIN
  RETURN QUERY SELECT * FROM vspc.sla_daily_compute(today, today, tz, now());
END
$$;

COMMENT ON FUNCTION vspc.sla_daily_today() IS
  'today''s rows of sla_daily, as of now (sla_daily_counts keeps completed days only)';
"""

REFRESH_SLA_DAILY_0009 = r"""
-- Completed days only: from the local day of `since` or the day after the last one computed,
-- whichever is earlier (NULL: from the first day of history), through yesterday. Today's rows
-- come from sla_daily_today() when the view is read.
CREATE OR REPLACE FUNCTION vspc.refresh_sla_daily(since timestamptz DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql
SET jit = off
AS $$
DECLARE
  tz text := coalesce((SELECT time_zone FROM vspc.report_settings LIMIT 1), 'UTC');
  yesterday date := (now() AT TIME ZONE tz)::date - 1;
  first_day date;
  from_day date;
  written integer;
BEGIN
  -- One writer at a time (a sync and a settings change); readers are never blocked.
  LOCK TABLE vspc.sla_daily_counts IN EXCLUSIVE MODE;
  first_day := least(
    (SELECT (min(valid_from) AT TIME ZONE tz)::date FROM vspc.backup_agent_job_snapshots),
    (SELECT (min(started_at) AT TIME ZONE tz)::date FROM vspc.job_run_facts));
  IF first_day IS NULL THEN
    DELETE FROM vspc.sla_daily_counts;
    RETURN 0;
  END IF;
  from_day := CASE WHEN since IS NULL THEN first_day ELSE least(
    (since AT TIME ZONE tz)::date,
    coalesce((SELECT max(day) + 1 FROM vspc.sla_daily_counts), first_day)) END;
  from_day := greatest(from_day, first_day);
  DELETE FROM vspc.sla_daily_counts WHERE day >= from_day OR day < first_day;
  IF from_day > yesterday THEN
    RETURN 0;
  END IF;
  INSERT INTO vspc.sla_daily_counts (day, organization_uid, jobs_protected, runs,
    success_runs, warning_runs, failed_runs, jobs_meeting_rpo, rpo_hours)
  SELECT * FROM vspc.sla_daily_compute(from_day, yesterday, tz, now());
  GET DIAGNOSTICS written = ROW_COUNT;
  RETURN written;
END
$$;

COMMENT ON FUNCTION vspc.refresh_sla_daily(timestamptz) IS
  'recompute sla_daily_counts from the day of since, or the day after the last one computed '
  'if earlier (NULL: everything), through yesterday';
"""

JOB_SLA_CURRENT_0009 = r"""
-- The SLA answer now, per live job (job_sla_at at now()).
CREATE OR REPLACE VIEW vspc.job_sla_current AS
SELECT instance_uid, source, organization_uid, organization_name, backup_agent_uid,
       computer_name, job_name, is_enabled, last_status, last_run, last_success_at,
       hours_since_success, rpo_hours, rpo_met, consecutive_failures, system_type,
       agent_connection_status, agent_last_heartbeat_at
FROM vspc.job_sla_at(now());

COMMENT ON VIEW vspc.job_sla_current IS
  'one row per live job: its latest outcome and whether it meets its RPO now';
COMMENT ON COLUMN vspc.job_sla_current.instance_uid IS 'job instanceUid';
COMMENT ON COLUMN vspc.job_sla_current.source IS 'console the job was read from';
COMMENT ON COLUMN vspc.job_sla_current.organization_uid IS 'organization of the job';
COMMENT ON COLUMN vspc.job_sla_current.organization_name IS 'organization name (null if unknown)';
COMMENT ON COLUMN vspc.job_sla_current.backup_agent_uid IS 'agent (computer) of the job';
COMMENT ON COLUMN vspc.job_sla_current.computer_name IS
  'computer name from /infrastructure/backupAgents (null if unknown)';
COMMENT ON COLUMN vspc.job_sla_current.job_name IS 'job name';
COMMENT ON COLUMN vspc.job_sla_current.is_enabled IS
  'job enabled; a disabled job is not counted as protected';
COMMENT ON COLUMN vspc.job_sla_current.last_status IS
  'status of the latest session as last read (Running included)';
COMMENT ON COLUMN vspc.job_sla_current.last_run IS 'start of the latest session as last read';
COMMENT ON COLUMN vspc.job_sla_current.last_success_at IS
  'end of the latest Success or Warning session';
COMMENT ON COLUMN vspc.job_sla_current.hours_since_success IS 'hours from last_success_at to now';
COMMENT ON COLUMN vspc.job_sla_current.rpo_hours IS
  'RPO from sla_policy (the organization''s row, else the default)';
COMMENT ON COLUMN vspc.job_sla_current.rpo_met IS
  'a Success/Warning session ended within rpo_hours before now';
COMMENT ON COLUMN vspc.job_sla_current.consecutive_failures IS
  'Failed sessions since the latest Success/Warning';
COMMENT ON COLUMN vspc.job_sla_current.system_type IS
  'platform of the job''s agent: Windows, Linux or Mac';
COMMENT ON COLUMN vspc.job_sla_current.agent_connection_status IS
  'connection of the computer''s management agent: Online, Inaccessible, Rejected, Unknown '
  '(null if unknown)';
COMMENT ON COLUMN vspc.job_sla_current.agent_last_heartbeat_at IS
  'when the console last heard from the computer''s management agent (null if unknown)';
"""

SLA_DAILY_0009 = r"""
-- Completed days from sla_daily_counts (kept by each sync), today computed when read.
CREATE OR REPLACE VIEW vspc.sla_daily AS
SELECT c.day, c.organization_uid, o.name AS organization_name, c.jobs_protected, c.runs,
       c.success_runs, c.warning_runs, c.failed_runs,
       round((c.success_runs + c.warning_runs)::numeric / nullif(c.runs, 0), 4)
         AS success_rate,
       c.jobs_meeting_rpo,
       round(c.jobs_meeting_rpo::numeric / nullif(c.jobs_protected, 0), 4) AS rpo_compliance,
       c.rpo_hours
FROM (
  SELECT k.day, k.organization_uid, k.jobs_protected, k.runs, k.success_runs, k.warning_runs,
         k.failed_runs, k.jobs_meeting_rpo, k.rpo_hours
  FROM vspc.sla_daily_counts k
  WHERE k.day < (now() AT TIME ZONE coalesce(
    (SELECT r.time_zone FROM vspc.report_settings r LIMIT 1), 'UTC'))::date
  UNION ALL
  SELECT * FROM vspc.sla_daily_today()
) c
LEFT JOIN vspc.organizations o ON o.instance_uid = c.organization_uid;

COMMENT ON VIEW vspc.sla_daily IS
  'SLA per calendar day (report_settings.time_zone) and organization; a day is judged at its '
  'end (today: as of the moment the view is read)';
COMMENT ON COLUMN vspc.sla_daily.day IS 'calendar day in report_settings.time_zone';
COMMENT ON COLUMN vspc.sla_daily.organization_uid IS 'organization';
COMMENT ON COLUMN vspc.sla_daily.organization_name IS 'organization name (null if unknown)';
COMMENT ON COLUMN vspc.sla_daily.jobs_protected IS 'jobs live and enabled at the end of the day';
COMMENT ON COLUMN vspc.sla_daily.runs IS 'sessions started that day';
COMMENT ON COLUMN vspc.sla_daily.success_runs IS 'of which Success';
COMMENT ON COLUMN vspc.sla_daily.warning_runs IS 'of which Warning';
COMMENT ON COLUMN vspc.sla_daily.failed_runs IS 'of which Failed';
COMMENT ON COLUMN vspc.sla_daily.success_rate IS
  '(success_runs + warning_runs) / runs, 0..1; null without runs';
COMMENT ON COLUMN vspc.sla_daily.jobs_meeting_rpo IS
  'protected jobs whose latest Success/Warning session ended within rpo_hours before the end '
  'of the day';
COMMENT ON COLUMN vspc.sla_daily.rpo_compliance IS
  'jobs_meeting_rpo / jobs_protected, 0..1; null without jobs';
COMMENT ON COLUMN vspc.sla_daily.rpo_hours IS 'the RPO applied (sla_policy)';
"""


# Dropped (dependents first) before their new result types are created.
DROP = (
    "DROP VIEW vspc.job_sla_current",
    "DROP VIEW vspc.sla_daily",
    "DROP FUNCTION vspc.job_sla_at(timestamptz)",
    "DROP FUNCTION vspc.sla_daily_today()",
    "DROP FUNCTION vspc.sla_daily_compute(date, date, text, timestamptz)",
)
RECOUNT = """
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM vspc.restore_points) THEN
    PERFORM vspc.refresh_sla_daily((SELECT min(creation_date) FROM vspc.restore_points));
  END IF;
END
$$
"""


def upgrade() -> None:
    op.add_column(
        "sla_daily_counts",
        sa.Column(
            "restore_points_created",
            sa.Integer(),
            nullable=False,
            server_default=sa.text("0"),
            comment=CREATED_COMMENT,
        ),
        schema=S,
    )
    op.alter_column("sla_daily_counts", "restore_points_created", server_default=None, schema=S)
    op.alter_column(
        "sla_daily_counts",
        "jobs_meeting_rpo",
        existing_type=sa.Integer(),
        existing_nullable=False,
        comment=MEETING_COMMENT[1],
        existing_comment=MEETING_COMMENT[0],
        schema=S,
    )
    op.create_index(
        "ix_restore_points_creation_date", "restore_points", ["creation_date"], schema=S
    )
    for column in POINT_OWNERS:
        name = f"ix_restore_points_{column}_creation_date"
        op.drop_index(name, table_name="restore_points", schema=S)
        op.create_index(
            name,
            "restore_points",
            [column, "creation_date"],
            postgresql_include=["gone_at"],
            schema=S,
        )
    for statement in DROP:
        op.execute(statement)
    for sql in (
        JOB_SLA_AT,
        SLA_DAILY_COMPUTE,
        SLA_DAILY_TODAY,
        REFRESH_SLA_DAILY,
        RESTORE_POINTS_CHANGED,
        COMPUTER_SLA_CURRENT,
        JOB_SLA_CURRENT,
        SLA_DAILY,
        SLA_DAILY_INSERT_TRIGGER,
        SLA_DAILY_UPDATE_TRIGGER,
        SLA_DAILY_DELETE_TRIGGER,
    ):
        op.execute(sql)
    op.execute(RECOUNT)


def downgrade() -> None:
    for name in ("sla_daily_insert", "sla_daily_update", "sla_daily_delete"):
        op.execute(f"DROP TRIGGER {name} ON vspc.restore_points")
    op.execute("DROP VIEW vspc.computer_sla_current")
    op.execute("DROP FUNCTION vspc.restore_points_changed()")
    for statement in DROP:
        op.execute(statement)
    for sql in (
        JOB_SLA_AT_0009,
        SLA_DAILY_COMPUTE_0009,
        SLA_DAILY_TODAY_0009,
        REFRESH_SLA_DAILY_0009,
        JOB_SLA_CURRENT_0009,
        SLA_DAILY_0009,
    ):
        op.execute(sql)
    for column in POINT_OWNERS:
        name = f"ix_restore_points_{column}_creation_date"
        op.drop_index(name, table_name="restore_points", schema=S)
        op.create_index(name, "restore_points", [column, "creation_date"], schema=S)
    op.drop_index("ix_restore_points_creation_date", table_name="restore_points", schema=S)
    op.alter_column(
        "sla_daily_counts",
        "jobs_meeting_rpo",
        existing_type=sa.Integer(),
        existing_nullable=False,
        comment=MEETING_COMMENT[0],
        existing_comment=MEETING_COMMENT[1],
        schema=S,
    )
    op.drop_column("sla_daily_counts", "restore_points_created", schema=S)
