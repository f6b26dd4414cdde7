-- Per job of the inserted batch (the summary below, as in job_sla_state_recompute): its row's
-- latest start, if it has a row (one index probe each: LIMIT 1 keeps the planner from turning
-- the probes into a hash of the whole table). Jobs without a row get one here; jobs given a
-- session at or before their latest are recomputed (late); the others are folded into their
-- row by a second statement, from arrays whose size the planner sees
-- (plan_cache_mode = force_custom_plan: each call plans for its own arrays).
CREATE OR REPLACE FUNCTION vspc.job_sla_state_inserted() RETURNS trigger
LANGUAGE plpgsql SET jit = off SET plan_cache_mode = force_custom_plan AS $$
DECLARE
  late uuid[];
  f_uid uuid[];
  f_last timestamptz[];
  f_ok_started timestamptz[];
  f_ok_ended timestamptz[];
  f_failed integer[];
  f_after_ok integer[];
  f_settled timestamptz[];
BEGIN
  WITH sessions AS (
    SELECT instance_uid, started_at, ended_at, status FROM new_sessions
  ), summary AS (
  SELECT a.instance_uid, a.first_started, a.last_started, a.ok_started, e.ended_at AS ok_ended,
    (SELECT count(*) FROM unnest(a.failed_starts) AS x (started)
     WHERE x.started > coalesce(a.ok_started, '-infinity'))::integer AS failed_after_ok,
    coalesce(cardinality(a.failed_starts), 0) AS failed, a.settled
  FROM (
    SELECT f.instance_uid, min(f.started_at) AS first_started, max(f.started_at) AS last_started,
      max(f.started_at) FILTER (WHERE f.status IN ('Success', 'Warning')
                                  AND f.ended_at IS NOT NULL) AS ok_started,
      array_agg(f.started_at) FILTER (WHERE f.status = 'Failed') AS failed_starts,
      max(CASE WHEN f.status = 'Failed' THEN coalesce(f.ended_at, f.started_at)
               ELSE f.ended_at END) AS settled
    FROM sessions f GROUP BY f.instance_uid
  ) a
  LEFT JOIN sessions e ON e.instance_uid = a.instance_uid AND e.started_at = a.ok_started
),
  known AS MATERIALIZED (
    SELECT b.*, p.last_started_at AS stored_last
    FROM summary b
    LEFT JOIN LATERAL (
      SELECT p.last_started_at FROM vspc.job_sla_state p
      WHERE p.instance_uid = b.instance_uid LIMIT 1
    ) p ON true
  ), added AS (
    INSERT INTO vspc.job_sla_state (instance_uid, last_started_at, ok_started_at, ok_ended_at, failures, settled_at)
    SELECT b.instance_uid, b.last_started, b.ok_started, b.ok_ended, b.failed_after_ok, b.settled
    FROM known b WHERE b.stored_last IS NULL
  )
  SELECT array_agg(b.instance_uid) FILTER (WHERE b.first_started <= b.stored_last),
    array_agg(b.instance_uid) FILTER (WHERE b.first_started > b.stored_last),
    array_agg(b.last_started) FILTER (WHERE b.first_started > b.stored_last),
    array_agg(b.ok_started) FILTER (WHERE b.first_started > b.stored_last),
    array_agg(b.ok_ended) FILTER (WHERE b.first_started > b.stored_last),
    array_agg(b.failed) FILTER (WHERE b.first_started > b.stored_last),
    array_agg(b.failed_after_ok) FILTER (WHERE b.first_started > b.stored_last),
    array_agg(b.settled) FILTER (WHERE b.first_started > b.stored_last)
  INTO late, f_uid, f_last, f_ok_started, f_ok_ended, f_failed, f_after_ok, f_settled
  FROM known b;
  IF f_uid IS NOT NULL THEN
    UPDATE vspc.job_sla_state p SET
      last_started_at = greatest(p.last_started_at, b.last_started),
      ok_started_at = CASE WHEN b.ok_started IS NULL THEN p.ok_started_at ELSE b.ok_started END,
      ok_ended_at = CASE WHEN b.ok_started IS NULL THEN p.ok_ended_at ELSE b.ok_ended END,
      failures = CASE WHEN b.ok_started IS NULL THEN p.failures + b.failed
                      ELSE b.failed_after_ok END,
      settled_at = greatest(p.settled_at, b.settled)
    FROM unnest(f_uid, f_last, f_ok_started, f_ok_ended, f_failed, f_after_ok, f_settled)
      AS b (instance_uid, last_started, ok_started, ok_ended, failed, failed_after_ok, settled)
    WHERE p.instance_uid = b.instance_uid;
  END IF;
  PERFORM vspc.job_sla_state_recompute(late);
  RETURN NULL;
END
$$;

COMMENT ON FUNCTION vspc.job_sla_state_inserted() IS
  'trigger: fold sessions appended to a job into job_sla_state; recompute late ones';
