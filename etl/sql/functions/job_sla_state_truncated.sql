-- job_run_facts emptied: job_sla_state goes with it.
CREATE OR REPLACE FUNCTION vspc.job_sla_state_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM vspc.job_sla_state;
  RETURN NULL;
END
$$;

COMMENT ON FUNCTION vspc.job_sla_state_truncated() IS
  'trigger: empty job_sla_state with job_run_facts';
