-- Completed days from sla_daily_counts (kept by each sync), today computed when read.
CREATE OR REPLACE VIEW vspc.sla_daily AS
SELECT c.day, c.organization_uid, o.name AS organization_name, c.jobs_protected, c.runs,
       c.success_runs, c.warning_runs, c.failed_runs,
       round((c.success_runs + c.warning_runs)::numeric / nullif(c.runs, 0), 4)
         AS success_rate,
       c.jobs_meeting_rpo,
       round(c.jobs_meeting_rpo::numeric / nullif(c.jobs_protected, 0), 4) AS rpo_compliance,
       c.rpo_hours, c.restore_points_created
FROM (
  SELECT k.day, k.organization_uid, k.jobs_protected, k.runs, k.success_runs, k.warning_runs,
         k.failed_runs, k.jobs_meeting_rpo, k.rpo_hours, k.restore_points_created
  FROM vspc.sla_daily_counts k
  WHERE k.day < (now() AT TIME ZONE coalesce(
    (SELECT r.time_zone FROM vspc.report_settings r LIMIT 1), 'UTC'))::date
  UNION ALL
  SELECT * FROM vspc.sla_daily_today()
) c
LEFT JOIN vspc.organizations o ON o.instance_uid = c.organization_uid;

COMMENT ON VIEW vspc.sla_daily IS
  'SLA per calendar day (report_settings.time_zone) and organization; a day is judged at its '
  'end (today: as of the moment the view is read)';
COMMENT ON COLUMN vspc.sla_daily.day IS 'calendar day in report_settings.time_zone';
COMMENT ON COLUMN vspc.sla_daily.organization_uid IS 'organization';
COMMENT ON COLUMN vspc.sla_daily.organization_name IS 'organization name (null if unknown)';
COMMENT ON COLUMN vspc.sla_daily.jobs_protected IS 'jobs live and enabled at the end of the day';
COMMENT ON COLUMN vspc.sla_daily.runs IS 'sessions started that day';
COMMENT ON COLUMN vspc.sla_daily.success_runs IS 'of which Success';
COMMENT ON COLUMN vspc.sla_daily.warning_runs IS 'of which Warning';
COMMENT ON COLUMN vspc.sla_daily.failed_runs IS 'of which Failed';
COMMENT ON COLUMN vspc.sla_daily.success_rate IS
  '(success_runs + warning_runs) / runs, 0..1; null without runs';
COMMENT ON COLUMN vspc.sla_daily.jobs_meeting_rpo IS
  'protected jobs whose newest evidence at the end of the day (the later of the latest '
  'Success/Warning session''s end and the newest restore point then listed) is within '
  'rpo_hours before it';
COMMENT ON COLUMN vspc.sla_daily.rpo_compliance IS
  'jobs_meeting_rpo / jobs_protected, 0..1; null without jobs';
COMMENT ON COLUMN vspc.sla_daily.rpo_hours IS 'the RPO applied (sla_policy)';
COMMENT ON COLUMN vspc.sla_daily.restore_points_created IS
  'restore points created that day (merged away since or not) by jobs live at its end, or '
  'without a known job by the organization''s computers';
