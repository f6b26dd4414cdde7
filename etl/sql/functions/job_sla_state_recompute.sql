-- Per job: the latest success (Success or Warning with an end: job_sla_at's "ok"), the Failed
-- sessions after it, and when the last counted session became visible to job_sla_at (a
-- success at its end, a failure at its end or, without one, its start). One aggregate pass;
-- the success's end is read back by its key.
CREATE OR REPLACE FUNCTION vspc.job_sla_state_recompute(jobs uuid[]) RETURNS void
LANGUAGE plpgsql SET jit = off AS $$
BEGIN
  IF coalesce(cardinality(jobs), 0) = 0 THEN
    RETURN;
  END IF;
  DELETE FROM vspc.job_sla_state WHERE instance_uid IN (SELECT unnest(jobs));
  INSERT INTO vspc.job_sla_state (instance_uid, last_started_at, ok_started_at, ok_ended_at, failures, settled_at)
  WITH sessions AS (
    SELECT instance_uid, started_at, ended_at, status FROM vspc.job_run_facts
    WHERE instance_uid IN (SELECT unnest(jobs))
  ), 
summary AS (
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
)
  SELECT instance_uid, last_started, ok_started, ok_ended, failed_after_ok, settled
  FROM summary;
END
$$;

COMMENT ON FUNCTION vspc.job_sla_state_recompute(uuid[]) IS
  'recompute the job_sla_state rows of these jobs from job_run_facts';
