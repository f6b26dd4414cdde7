-- Only a change of what the answer reads (key, outcome, end) recomputes: a renamed job or a
-- new restore point rewrites sessions without touching job_sla_state.
CREATE OR REPLACE FUNCTION vspc.job_sla_state_updated() RETURNS trigger
LANGUAGE plpgsql SET jit = off AS $$
BEGIN
  PERFORM vspc.job_sla_state_recompute(ARRAY(
    SELECT DISTINCT instance_uid FROM (
      (SELECT instance_uid, started_at, ended_at, status FROM old_sessions
       EXCEPT SELECT instance_uid, started_at, ended_at, status FROM new_sessions)
      UNION ALL
      (SELECT instance_uid, started_at, ended_at, status FROM new_sessions
       EXCEPT SELECT instance_uid, started_at, ended_at, status FROM old_sessions)
    ) d));
  RETURN NULL;
END
$$;

COMMENT ON FUNCTION vspc.job_sla_state_updated() IS
  'trigger: recompute job_sla_state for sessions whose key, status or end changed';
