-- Keeps job_sla_state exact whatever writes job_run_facts (a sync, rebuild, a repair by hand).
CREATE TRIGGER job_sla_state_insert AFTER INSERT ON vspc.job_run_facts
  REFERENCING NEW TABLE AS new_sessions
  FOR EACH STATEMENT EXECUTE FUNCTION vspc.job_sla_state_inserted();
