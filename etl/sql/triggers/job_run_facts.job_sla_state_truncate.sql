-- Keeps job_sla_state exact whatever writes job_run_facts (a sync, rebuild, a repair by hand).
CREATE TRIGGER job_sla_state_truncate AFTER TRUNCATE ON vspc.job_run_facts
  FOR EACH STATEMENT EXECUTE FUNCTION vspc.job_sla_state_truncated();
