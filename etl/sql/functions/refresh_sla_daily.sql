-- Completed days only: from the local day of `since` or the day after the last one computed,
-- whichever is earlier (NULL: from the first day of history), through yesterday. Today's rows
-- come from sla_daily_today() when the view is read.
CREATE OR REPLACE FUNCTION vspc.refresh_sla_daily(since timestamptz DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql
SET jit = off
AS $$
DECLARE
  tz text := coalesce((SELECT time_zone FROM vspc.report_settings LIMIT 1), 'UTC');
  yesterday date := (now() AT TIME ZONE tz)::date - 1;
  first_day date;
  from_day date;
  written integer;
BEGIN
  -- One writer at a time (a sync and a settings change); readers are never blocked.
  LOCK TABLE vspc.sla_daily_counts IN EXCLUSIVE MODE;
  first_day := least(
    (SELECT (min(valid_from) AT TIME ZONE tz)::date FROM vspc.backup_agent_job_snapshots),
    (SELECT (min(started_at) AT TIME ZONE tz)::date FROM vspc.job_run_facts));
  IF first_day IS NULL THEN
    DELETE FROM vspc.sla_daily_counts;
    RETURN 0;
  END IF;
  from_day := CASE WHEN since IS NULL THEN first_day ELSE least(
    (since AT TIME ZONE tz)::date,
    coalesce((SELECT max(day) + 1 FROM vspc.sla_daily_counts), first_day)) END;
  from_day := greatest(from_day, first_day);
  DELETE FROM vspc.sla_daily_counts WHERE day >= from_day OR day < first_day;
  IF from_day > yesterday THEN
    RETURN 0;
  END IF;
  INSERT INTO vspc.sla_daily_counts (day, organization_uid, jobs_protected, runs,
    success_runs, warning_runs, failed_runs, jobs_meeting_rpo, rpo_hours,
    restore_points_created)
  SELECT * FROM vspc.sla_daily_compute(from_day, yesterday, tz, now());
  GET DIAGNOSTICS written = ROW_COUNT;
  RETURN written;
END
$$;

COMMENT ON FUNCTION vspc.refresh_sla_daily(timestamptz) IS
  'recompute sla_daily_counts from the day of since, or the day after the last one computed '
  'if earlier (NULL: everything), through yesterday';
