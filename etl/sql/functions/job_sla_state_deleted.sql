-- Deleted sessions: their jobs are recomputed from what is left.
CREATE OR REPLACE FUNCTION vspc.job_sla_state_deleted() RETURNS trigger
LANGUAGE plpgsql SET jit = off AS $$
BEGIN
  PERFORM vspc.job_sla_state_recompute(ARRAY(SELECT DISTINCT instance_uid FROM old_sessions));
  RETURN NULL;
END
$$;

COMMENT ON FUNCTION vspc.job_sla_state_deleted() IS
  'trigger: recompute job_sla_state for the jobs whose sessions were deleted';
