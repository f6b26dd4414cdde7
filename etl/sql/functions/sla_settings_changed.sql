-- Trigger function: sla_policy or report_settings changed, so every day is judged anew.
CREATE OR REPLACE FUNCTION vspc.sla_settings_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM vspc.refresh_sla_daily(NULL);
  RETURN NULL;
END
$$;
