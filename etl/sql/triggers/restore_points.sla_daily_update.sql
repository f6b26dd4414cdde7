-- Keeps sla_daily_counts exact whatever writes restore_points (a sync, a repair by hand).
CREATE TRIGGER sla_daily_update AFTER UPDATE ON vspc.restore_points
  REFERENCING OLD TABLE AS old_points NEW TABLE AS new_points
  FOR EACH STATEMENT EXECUTE FUNCTION vspc.restore_points_changed();
