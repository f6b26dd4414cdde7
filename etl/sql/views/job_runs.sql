-- What BI tools read for sessions: job_run_facts with the names of organization and computer.
CREATE OR REPLACE VIEW vspc.job_runs AS
SELECT f.instance_uid, f.source, f.organization_uid, o.name AS organization_name,
       f.backup_agent_uid, a.computer_name, f.job_name, f.started_at, f.ended_at,
       f.duration_s, f.status, f.failure_message, f.backed_up_size, f.restore_points,
       (f.started_at AT TIME ZONE coalesce(
          (SELECT r.time_zone FROM vspc.report_settings r LIMIT 1), 'UTC'))::date AS day,
       j.system_type
FROM vspc.job_run_facts f
LEFT JOIN vspc.organizations o ON o.instance_uid = f.organization_uid
LEFT JOIN vspc.backup_agents a ON a.instance_uid = f.backup_agent_uid
LEFT JOIN vspc.backup_agent_jobs j ON j.instance_uid = f.instance_uid;

COMMENT ON VIEW vspc.job_runs IS
  'one row per observed job session with a final outcome (Success, Warning, Failed); a '
  'session seen Running and later finished is one row with its final status';
COMMENT ON COLUMN vspc.job_runs.instance_uid IS 'job instanceUid';
COMMENT ON COLUMN vspc.job_runs.source IS 'console the session was read from';
COMMENT ON COLUMN vspc.job_runs.organization_uid IS 'organization of the job';
COMMENT ON COLUMN vspc.job_runs.organization_name IS
  'organization name (null until /organizations was read)';
COMMENT ON COLUMN vspc.job_runs.backup_agent_uid IS 'agent (computer) of the job';
COMMENT ON COLUMN vspc.job_runs.computer_name IS
  'computer name (null until /infrastructure/backupAgents was read)';
COMMENT ON COLUMN vspc.job_runs.job_name IS 'job name when the session was observed';
COMMENT ON COLUMN vspc.job_runs.started_at IS
  'session start (the job''s lastRun); with instance_uid the key';
COMMENT ON COLUMN vspc.job_runs.ended_at IS
  'session end (lastEndTime); null when the console did not tell it';
COMMENT ON COLUMN vspc.job_runs.duration_s IS 'seconds from started_at to ended_at';
COMMENT ON COLUMN vspc.job_runs.status IS 'final outcome: Success, Warning or Failed';
COMMENT ON COLUMN vspc.job_runs.failure_message IS 'failure or warning message of the session';
COMMENT ON COLUMN vspc.job_runs.backed_up_size IS 'bytes in all restore points after the session';
COMMENT ON COLUMN vspc.job_runs.restore_points IS 'restore points after the session';
COMMENT ON COLUMN vspc.job_runs.day IS 'calendar day of started_at in report_settings.time_zone';
COMMENT ON COLUMN vspc.job_runs.system_type IS
  'platform of the job''s agent: Windows, Linux or Mac';
