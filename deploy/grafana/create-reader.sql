-- Profile bi, run once by the bi-reader service: the login role Grafana connects with.
-- Idempotent; the password comes from psql's variable :pw. Privileges are granted by
-- `vspc-etl grant grafana_reader` (the bi-grant service) afterwards.
SELECT NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'grafana_reader') AS missing \gset
\if :missing
CREATE ROLE grafana_reader LOGIN;
\endif
ALTER ROLE grafana_reader WITH LOGIN PASSWORD :'pw';
