-- Restore points written for a completed day (a late-indexed point, a point a sync first sees
-- after midnight, a repair by hand) recompute sla_daily_counts from that day. Points of today
-- are counted when sla_daily is read, and a point merged away long after its creation (every
-- full read finds some) changes no day: only the creation, job, agent, or a merge within the
-- longest RPO (see sla_daily_compute) moves a day.
CREATE OR REPLACE FUNCTION vspc.restore_points_changed() RETURNS trigger
LANGUAGE plpgsql SET jit = off AS $$
DECLARE
  tz text := coalesce((SELECT time_zone FROM vspc.report_settings LIMIT 1), 'UTC');
  today_start timestamptz := date_trunc('day', now() AT TIME ZONE tz) AT TIME ZONE tz;
  max_rpo interval := make_interval(hours => greatest(
    coalesce((SELECT max(p.rpo_hours) FROM vspc.sla_policy p), 24), 24));
  since timestamptz;
BEGIN
  IF TG_OP = 'INSERT' THEN
    SELECT min(creation_date) INTO since FROM new_points;
  ELSIF TG_OP = 'DELETE' THEN
    SELECT min(creation_date) INTO since FROM old_points;
  ELSE
    SELECT min(least(o.creation_date, n.creation_date)) INTO since
    FROM old_points o JOIN new_points n ON n.instance_uid = o.instance_uid
    WHERE (o.creation_date, o.job_uid, o.backup_agent_uid)
            IS DISTINCT FROM (n.creation_date, n.job_uid, n.backup_agent_uid)
       OR (o.gone_at IS DISTINCT FROM n.gone_at
           AND (o.gone_at < o.creation_date + max_rpo OR n.gone_at < n.creation_date + max_rpo));
  END IF;
  IF since < today_start THEN
    PERFORM vspc.refresh_sla_daily(since);
  END IF;
  RETURN NULL;
END
$$;

COMMENT ON FUNCTION vspc.restore_points_changed() IS
  'trigger: recompute sla_daily_counts from the first completed day restore points written '
  'by the statement count on';
