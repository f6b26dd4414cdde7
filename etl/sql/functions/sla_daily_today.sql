-- Today's rows of sla_daily, as of the moment the view is read.
CREATE OR REPLACE FUNCTION vspc.sla_daily_today()
RETURNS TABLE (
  day date, organization_uid uuid, jobs_protected integer, runs integer,
  success_runs integer, warning_runs integer, failed_runs integer,
  jobs_meeting_rpo integer, rpo_hours integer, restore_points_created integer)
LANGUAGE plpgsql STABLE
SET jit = off
AS $$
DECLARE
  tz text := coalesce((SELECT time_zone FROM vspc.report_settings LIMIT 1), 'UTC');
  today date := (now() AT TIME ZONE tz)::date;
BEGIN
  RETURN QUERY SELECT * FROM vspc.sla_daily_compute(today, today, tz, now());
END
$$;

COMMENT ON FUNCTION vspc.sla_daily_today() IS
  'today''s rows of sla_daily, as of now (sla_daily_counts keeps completed days only)';
