-- Restore points written for a completed day (a late-indexed point, a point a sync first sees
-- after midnight, a repair by hand) change the stored days they count on. Points of today are
-- counted when sla_daily is read, and a point merged away long after its creation (every full
-- read finds some) changes no day: only the creation, job, agent, or a merge within the
-- longest RPO (see sla_daily_compute) moves a day. A few points inserted are added to the
-- stored days (sla_daily_add_points: a sync's late points cost milliseconds, not a
-- recomputation of every organization's day); anything else, or completed days not stored
-- yet, recomputes from the first day the points count on.
CREATE OR REPLACE FUNCTION vspc.restore_points_changed() RETURNS trigger
LANGUAGE plpgsql SET jit = off AS $$
DECLARE
  tz text := coalesce((SELECT time_zone FROM vspc.report_settings LIMIT 1), 'UTC');
  today_start timestamptz := date_trunc('day', now() AT TIME ZONE tz) AT TIME ZONE tz;
  max_rpo interval := make_interval(hours => greatest(
    coalesce((SELECT max(p.rpo_hours) FROM vspc.sla_policy p), 24), 24));
  since timestamptz;
  added uuid[];
BEGIN
  IF TG_OP = 'INSERT' THEN
    SELECT min(creation_date), array_agg(instance_uid) FILTER (WHERE creation_date < today_start)
    INTO since, added FROM new_points;
    IF since < today_start AND cardinality(added) <= 1000 AND (
        SELECT max(day) FROM vspc.sla_daily_counts) >= (today_start AT TIME ZONE tz)::date - 1
    THEN
      PERFORM vspc.sla_daily_add_points(added);
      RETURN NULL;
    END IF;
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
  'trigger: count the restore points a statement wrote into sla_daily_counts (a few inserted: '
  'added to the stored days; else recomputed from the first completed day they count on)';
