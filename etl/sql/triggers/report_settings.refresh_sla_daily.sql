-- Any change of the RPO policy or the time zone recomputes sla_daily_counts.
CREATE TRIGGER refresh_sla_daily
  AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON vspc.report_settings
  FOR EACH STATEMENT EXECUTE FUNCTION vspc.sla_settings_changed();
