-- Keeps sla_daily_counts exact whatever writes restore_points (a sync, a repair by hand).
CREATE TRIGGER sla_daily_insert AFTER INSERT ON vspc.restore_points
  REFERENCING NEW TABLE AS new_points
  FOR EACH STATEMENT EXECUTE FUNCTION vspc.restore_points_changed();
