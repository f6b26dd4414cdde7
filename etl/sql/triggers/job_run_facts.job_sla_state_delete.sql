-- Keeps job_sla_state exact whatever writes job_run_facts (a sync, rebuild, a repair by hand).
CREATE TRIGGER job_sla_state_delete AFTER DELETE ON vspc.job_run_facts
  REFERENCING OLD TABLE AS old_sessions
  FOR EACH STATEMENT EXECUTE FUNCTION vspc.job_sla_state_deleted();
