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
