-- Counts restore points just inserted into the completed days already stored, without
-- recomputing them: what sla_daily_compute would now answer differs only where the new points
-- are counted. A point is created on its local day and counts there for the organization of
-- its job's version live at that day's end, or, without a job the warehouse knows, of its
-- computer. A point is evidence for a job at a day's end t when created in (t - RPO, t] and not
-- merged away by t (a point merged away later than the longest RPO after its creation always
-- is, see sla_daily_compute): the job now meets the RPO that day if it is live and enabled
-- then and nothing else (a successful session's end, another point) was evidence already.
-- Only for days through the last stored one; the caller (restore_points_changed) recomputes
-- instead when days are missing or the points are many.
CREATE OR REPLACE FUNCTION vspc.sla_daily_add_points(added uuid[])
RETURNS integer
LANGUAGE plpgsql
SET jit = off
AS $$
#variable_conflict use_column
DECLARE
  tz text := coalesce((SELECT time_zone FROM vspc.report_settings LIMIT 1), 'UTC');
  default_rpo integer := coalesce(
    (SELECT p.rpo_hours FROM vspc.sla_policy p WHERE p.organization_uid IS NULL), 24);
  max_rpo interval := make_interval(hours => greatest(
    coalesce((SELECT max(p.rpo_hours) FROM vspc.sla_policy p), 24), default_rpo));
  first_day date;
  last_day date;
  meeting integer;
  created integer;
BEGIN
  LOCK TABLE vspc.sla_daily_counts IN EXCLUSIVE MODE;
  first_day := least(
    (SELECT (min(valid_from) AT TIME ZONE tz)::date FROM vspc.backup_agent_job_snapshots),
    (SELECT (min(started_at) AT TIME ZONE tz)::date FROM vspc.job_run_facts));
  last_day := (SELECT max(day) FROM vspc.sla_daily_counts);
  IF first_day IS NULL OR last_day IS NULL THEN
    RETURN 0;
  END IF;
  -- Few points, and a history of any length: each lookup is bounded by an index (a job's
  -- version at an instant by its primary key, a job's points by job and creation time, the
  -- sessions by their end), never a scan of a whole table whatever the statistics say.
  WITH points AS MATERIALIZED (
    SELECT r.instance_uid, r.job_uid, r.creation_date, r.gone_at
    FROM vspc.restore_points r
    WHERE r.instance_uid = ANY (added) AND r.job_uid IS NOT NULL
      AND r.creation_date < ((last_day + 1)::timestamp AT TIME ZONE tz)
  ), judged AS MATERIALIZED (
    -- Each stored day whose end t falls in [creation, creation + RPO) of a new point of a job
    -- live and enabled then. Versions never overlap: the one covering t, if any, is the
    -- latest that began by t, if it has not ended by then.
    SELECT DISTINCT v.instance_uid, e.day, v.organization_uid, e.t,
      make_interval(hours => coalesce(p.rpo_hours, default_rpo)) AS rpo
    FROM points n
    CROSS JOIN LATERAL (
      SELECT d::date AS day, ((d::date + 1)::timestamp AT TIME ZONE tz) AS t
      FROM generate_series(
        greatest(((n.creation_date AT TIME ZONE tz) - interval '1 microsecond')::date,
                 first_day),
        least(((n.creation_date + max_rpo) AT TIME ZONE tz)::date, last_day),
        interval '1 day') AS d
    ) e
    CROSS JOIN LATERAL (
      SELECT s.instance_uid, s.organization_uid, s.valid_to, s.is_deleted, s.is_enabled
      FROM vspc.backup_agent_job_snapshots s
      WHERE s.instance_uid = n.job_uid AND s.valid_from <= e.t
      ORDER BY s.valid_from DESC LIMIT 1
    ) v
    LEFT JOIN vspc.sla_policy p ON p.organization_uid = v.organization_uid
    WHERE (v.valid_to IS NULL OR v.valid_to > e.t) AND NOT v.is_deleted
      AND v.is_enabled IS TRUE
      AND n.creation_date <= e.t
      AND n.creation_date > e.t - make_interval(hours => coalesce(p.rpo_hours, default_rpo))
      AND (n.gone_at IS NULL OR n.gone_at > e.t)
  ), sessions AS (
    SELECT f.instance_uid, f.ended_at FROM vspc.job_run_facts f
    WHERE f.status IN ('Success', 'Warning')
      AND f.ended_at > (SELECT min(j.t - j.rpo) FROM judged j)
      AND f.ended_at <= (SELECT max(j.t) FROM judged j)
  ), newly AS (
    SELECT j.day, j.organization_uid, count(*) AS jobs
    FROM judged j
    WHERE NOT EXISTS (
        SELECT 1 FROM sessions f
        WHERE f.instance_uid = j.instance_uid
          AND f.ended_at <= j.t AND f.ended_at > j.t - j.rpo)
      AND NOT EXISTS (
        SELECT 1 FROM vspc.restore_points r
        WHERE r.job_uid = j.instance_uid
          AND r.creation_date <= j.t AND r.creation_date > j.t - j.rpo
          AND (r.gone_at IS NULL OR r.gone_at > j.t)
          AND r.instance_uid <> ALL (added)
        OFFSET 0)
    GROUP BY j.day, j.organization_uid
  )
  UPDATE vspc.sla_daily_counts c SET jobs_meeting_rpo = c.jobs_meeting_rpo + n.jobs
  FROM newly n
  WHERE c.day = n.day AND c.organization_uid IS NOT DISTINCT FROM n.organization_uid;
  GET DIAGNOSTICS meeting = ROW_COUNT;

  WITH points AS MATERIALIZED (
    SELECT r.job_uid, r.backup_agent_uid, (r.creation_date AT TIME ZONE tz)::date AS day,
      ((r.creation_date AT TIME ZONE tz)::date + 1)::timestamp AT TIME ZONE tz AS t
    FROM vspc.restore_points r
    WHERE r.instance_uid = ANY (added)
      AND r.creation_date >= (first_day::timestamp AT TIME ZONE tz)
      AND r.creation_date < ((last_day + 1)::timestamp AT TIME ZONE tz)
  ), counted AS (
    SELECT n.day, v.organization_uid
    FROM points n
    CROSS JOIN LATERAL (
      SELECT s.organization_uid, s.valid_to, s.is_deleted
      FROM vspc.backup_agent_job_snapshots s
      WHERE s.instance_uid = n.job_uid AND s.valid_from <= n.t
      ORDER BY s.valid_from DESC LIMIT 1
    ) v
    WHERE (v.valid_to IS NULL OR v.valid_to > n.t) AND NOT v.is_deleted
    UNION ALL
    SELECT n.day, (SELECT a.organization_uid FROM vspc.backup_agents a
                   WHERE a.instance_uid = n.backup_agent_uid)
    FROM points n
    WHERE n.job_uid IS NULL OR NOT EXISTS (
      SELECT 1 FROM vspc.backup_agent_jobs j WHERE j.instance_uid = n.job_uid OFFSET 0)
  )
  INSERT INTO vspc.sla_daily_counts AS c (day, organization_uid, jobs_protected, runs,
    success_runs, warning_runs, failed_runs, jobs_meeting_rpo, rpo_hours,
    restore_points_created)
  SELECT n.day, n.organization_uid, 0, 0, 0, 0, 0, 0, coalesce(min(p.rpo_hours), default_rpo),
    count(*)
  FROM counted n LEFT JOIN vspc.sla_policy p ON p.organization_uid = n.organization_uid
  GROUP BY n.day, n.organization_uid
  ON CONFLICT (day, organization_uid) DO UPDATE
    SET restore_points_created = c.restore_points_created + EXCLUDED.restore_points_created;
  GET DIAGNOSTICS created = ROW_COUNT;
  RETURN meeting + created;
END
$$;

COMMENT ON FUNCTION vspc.sla_daily_add_points(uuid[]) IS
  'count restore points just inserted into the stored completed days (jobs_meeting_rpo, '
  'restore_points_created) without recomputing them; returns the rows changed';
