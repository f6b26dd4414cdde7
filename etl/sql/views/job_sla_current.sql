-- The SLA answer now, per live job (job_sla_at at now()).
CREATE OR REPLACE VIEW vspc.job_sla_current AS
SELECT instance_uid, source, organization_uid, organization_name, backup_agent_uid,
       computer_name, job_name, is_enabled, last_status, last_run, last_success_at,
       hours_since_success, rpo_hours, rpo_met, consecutive_failures, system_type,
       agent_connection_status, agent_last_heartbeat_at, last_restore_point_at
FROM vspc.job_sla_at(now());

COMMENT ON VIEW vspc.job_sla_current IS
  'one row per live job: its latest outcome and whether it meets its RPO now';
COMMENT ON COLUMN vspc.job_sla_current.instance_uid IS 'job instanceUid';
COMMENT ON COLUMN vspc.job_sla_current.source IS 'console the job was read from';
COMMENT ON COLUMN vspc.job_sla_current.organization_uid IS 'organization of the job';
COMMENT ON COLUMN vspc.job_sla_current.organization_name IS 'organization name (null if unknown)';
COMMENT ON COLUMN vspc.job_sla_current.backup_agent_uid IS 'agent (computer) of the job';
COMMENT ON COLUMN vspc.job_sla_current.computer_name IS
  'computer name from /infrastructure/backupAgents (null if unknown)';
COMMENT ON COLUMN vspc.job_sla_current.job_name IS 'job name';
COMMENT ON COLUMN vspc.job_sla_current.is_enabled IS
  'job enabled; a disabled job is not counted as protected';
COMMENT ON COLUMN vspc.job_sla_current.last_status IS
  'status of the latest session as last read (Running included)';
COMMENT ON COLUMN vspc.job_sla_current.last_run IS 'start of the latest session as last read';
COMMENT ON COLUMN vspc.job_sla_current.last_success_at IS
  'end of the latest Success or Warning session';
COMMENT ON COLUMN vspc.job_sla_current.hours_since_success IS
  'hours from the newer of last_success_at and last_restore_point_at to now';
COMMENT ON COLUMN vspc.job_sla_current.rpo_hours IS
  'RPO from sla_policy (the organization''s row, else the default)';
COMMENT ON COLUMN vspc.job_sla_current.rpo_met IS
  'the newer of last_success_at and last_restore_point_at is within rpo_hours before now';
COMMENT ON COLUMN vspc.job_sla_current.consecutive_failures IS
  'Failed sessions since the latest Success/Warning';
COMMENT ON COLUMN vspc.job_sla_current.system_type IS
  'platform of the job''s agent: Windows, Linux or Mac';
COMMENT ON COLUMN vspc.job_sla_current.agent_connection_status IS
  'connection of the computer''s management agent: Online, Inaccessible, Rejected, Unknown '
  '(null if unknown)';
COMMENT ON COLUMN vspc.job_sla_current.agent_last_heartbeat_at IS
  'when the console last heard from the computer''s management agent (null if unknown)';
COMMENT ON COLUMN vspc.job_sla_current.last_restore_point_at IS
  'creation of the job''s newest restore point the console still lists (restore_points with '
  'job_uid = instance_uid)';
