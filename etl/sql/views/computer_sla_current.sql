-- The SLA answer now, per live computer (backup agent). Live: it has a live job, or the console
-- still lists a restore point of it (a computer protected by a job the console does not list).
-- Its evidence is the newest of its jobs' successful sessions and restore points, and of the
-- points the console lists for the agent without a job (one backward probe of
-- (backup_agent_uid, creation_date) per agent). Reads job_sla_at(now()), not job_sla_current:
-- a view may not depend on another that sorts after it.
CREATE OR REPLACE VIEW vspc.computer_sla_current AS
WITH jobs AS (
  SELECT j.backup_agent_uid, min(j.source) AS source, min(j.organization_uid::text)::uuid
           AS organization_uid,
         min(j.system_type) AS system_type, count(*)::integer AS jobs,
         (count(*) FILTER (WHERE j.is_enabled))::integer AS enabled_jobs,
         (count(*) FILTER (WHERE j.is_enabled AND j.consecutive_failures > 0))::integer
           AS failing_jobs,
         max(j.last_success_at) AS last_success_at,
         max(j.last_restore_point_at) AS last_restore_point_at
  FROM vspc.job_sla_at(now()) j
  WHERE j.backup_agent_uid IS NOT NULL
  GROUP BY j.backup_agent_uid
), computers AS (
  SELECT g.uid, j.source AS job_source, j.organization_uid AS job_organization_uid,
         j.system_type AS job_system_type, j.jobs, j.enabled_jobs, j.failing_jobs,
         j.last_success_at, greatest(j.last_restore_point_at, p.created) AS last_point
  FROM (SELECT backup_agent_uid AS uid FROM jobs
        UNION SELECT instance_uid FROM vspc.backup_agents) g
  LEFT JOIN jobs j ON j.backup_agent_uid = g.uid
  LEFT JOIN LATERAL (
    SELECT r.creation_date AS created FROM vspc.restore_points r
    WHERE r.backup_agent_uid = g.uid AND r.gone_at IS NULL AND r.creation_date <= now()
    ORDER BY r.creation_date DESC LIMIT 1
  ) p ON true
  WHERE j.backup_agent_uid IS NOT NULL OR p.created IS NOT NULL
)
SELECT c.uid AS backup_agent_uid, coalesce(a.source, c.job_source) AS source,
       a.computer_name, coalesce(a.organization_uid, c.job_organization_uid) AS organization_uid,
       o.name AS organization_name, coalesce(a.agent_platform, c.job_system_type) AS system_type,
       coalesce(c.jobs, 0) AS jobs, coalesce(c.enabled_jobs, 0) AS enabled_jobs,
       coalesce(c.failing_jobs, 0) AS failing_jobs, c.last_success_at,
       c.last_point AS last_restore_point_at,
       round((extract(epoch FROM now() - greatest(c.last_success_at, c.last_point)) / 3600)
             ::numeric, 2) AS hours_since_success,
       rpo.hours AS rpo_hours,
       coalesce(greatest(c.last_success_at, c.last_point)
                > now() - make_interval(hours => rpo.hours), false) AS rpo_met,
       m.connection_status, m.last_heartbeat_at
FROM computers c
LEFT JOIN vspc.backup_agents a ON a.instance_uid = c.uid
LEFT JOIN vspc.organizations o
  ON o.instance_uid = coalesce(a.organization_uid, c.job_organization_uid)
LEFT JOIN vspc.management_agents m ON m.instance_uid = a.management_agent_uid
CROSS JOIN LATERAL (
  SELECT coalesce(
    (SELECT p.rpo_hours FROM vspc.sla_policy p
     WHERE p.organization_uid = coalesce(a.organization_uid, c.job_organization_uid)),
    (SELECT p.rpo_hours FROM vspc.sla_policy p WHERE p.organization_uid IS NULL),
    24) AS hours
) rpo;

COMMENT ON VIEW vspc.computer_sla_current IS
  'one row per live computer (backup agent: one with a live job, or with a restore point the '
  'console still lists): its jobs and whether its newest evidence of a backup meets its RPO now';
COMMENT ON COLUMN vspc.computer_sla_current.backup_agent_uid IS 'backup agent (computer) uid';
COMMENT ON COLUMN vspc.computer_sla_current.source IS 'console the computer was read from';
COMMENT ON COLUMN vspc.computer_sla_current.computer_name IS
  'computer name from /infrastructure/backupAgents (null if unknown)';
COMMENT ON COLUMN vspc.computer_sla_current.organization_uid IS
  'organization of the agent (of its jobs until the agent was read)';
COMMENT ON COLUMN vspc.computer_sla_current.organization_name IS
  'organization name (null if unknown)';
COMMENT ON COLUMN vspc.computer_sla_current.system_type IS
  'platform of the computer: Windows, Linux or Mac';
COMMENT ON COLUMN vspc.computer_sla_current.jobs IS 'live jobs of the computer';
COMMENT ON COLUMN vspc.computer_sla_current.enabled_jobs IS 'of which enabled';
COMMENT ON COLUMN vspc.computer_sla_current.failing_jobs IS
  'enabled jobs with a Failed session since their latest Success/Warning';
COMMENT ON COLUMN vspc.computer_sla_current.last_success_at IS
  'end of the latest Success or Warning session of any of its jobs';
COMMENT ON COLUMN vspc.computer_sla_current.last_restore_point_at IS
  'creation of the newest restore point the console still lists for the computer, its jobs'' '
  'and those without a job';
COMMENT ON COLUMN vspc.computer_sla_current.hours_since_success IS
  'hours from the newer of last_success_at and last_restore_point_at to now';
COMMENT ON COLUMN vspc.computer_sla_current.rpo_hours IS
  'RPO from sla_policy (the organization''s row, else the default)';
COMMENT ON COLUMN vspc.computer_sla_current.rpo_met IS
  'the newer of last_success_at and last_restore_point_at is within rpo_hours before now';
COMMENT ON COLUMN vspc.computer_sla_current.connection_status IS
  'connection of the computer''s management agent: Online, Inaccessible, Rejected, Unknown '
  '(null if unknown)';
COMMENT ON COLUMN vspc.computer_sla_current.last_heartbeat_at IS
  'when the console last heard from the computer''s management agent (null if unknown)';
