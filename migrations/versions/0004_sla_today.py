"""sla_daily: today's row is computed when it is read; syncs keep only completed days.

Until now every sync recomputed today's ``sla_daily_counts`` rows ("as of the last sync"): a
scan of every job's current version on every run, most of what the reporting layer added to
an hourly sync. A completed day no longer changes unless a session of it is recorded late,
so ``refresh_sla_daily`` now stops at yesterday and starts after the last day it computed
(or at the day of ``since``, if earlier); today's rows come from ``sla_daily_today()``, as of
the moment the view is read, through the same computation (``sla_daily_compute``).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = (
    "day date, organization_uid uuid, jobs_protected integer, runs integer, "
    "success_runs integer, warning_runs integer, failed_runs integer, "
    "jobs_meeting_rpo integer, rpo_hours integer"
)

# Days from_day..last_day, each judged at its end (or at as_of, if that comes first). A
# version holds at the end of D for D in [day(vf - 1us), day(vt - 1us) - 1] (local days); one
# ordered pass per job carries the latest successful end forward. (Moved here unchanged from
# 0002's refresh_sla_daily, with last_day for today.)
SLA_DAILY_COMPUTE = f"""
CREATE FUNCTION vspc.sla_daily_compute(from_day date, last_day date, tz text, as_of timestamptz)
RETURNS TABLE ({COLUMNS})
LANGUAGE plpgsql STABLE
-- The planner cannot see how many days generate_series yields per version (it guesses 1000):
-- the inflated cost would make it JIT-compile a query that runs in milliseconds, for seconds.
SET jit = off
AS $$
#variable_conflict use_column
DECLARE
  default_rpo integer := coalesce(
    (SELECT p.rpo_hours FROM vspc.sla_policy p WHERE p.organization_uid IS NULL), 24);
  max_rpo integer := greatest(
    coalesce((SELECT max(p.rpo_hours) FROM vspc.sla_policy p), 24), default_rpo);
  -- The first instant judged: only versions still open then, and successes within the
  -- longest RPO before it, can count (for today, only the current versions).
  first_end timestamptz := least(((from_day + 1)::timestamp AT TIME ZONE tz), as_of);
BEGIN
  RETURN QUERY
    WITH live AS (
      SELECT from_day + k AS day, s.instance_uid, s.organization_uid,
             s.is_enabled IS TRUE AS enabled,
             least(((from_day + k + 1)::timestamp AT TIME ZONE tz), as_of) AS t
      FROM vspc.backup_agent_job_snapshots s
      CROSS JOIN LATERAL generate_series(
        greatest(((s.valid_from AT TIME ZONE tz) - interval '1 microsecond')::date, from_day)
          - from_day,
        CASE WHEN s.valid_to IS NULL THEN last_day
             ELSE least(((s.valid_to AT TIME ZONE tz) - interval '1 microsecond')::date - 1,
                        last_day) END - from_day) AS k
      WHERE NOT s.is_deleted
        AND (s.valid_to IS NULL OR s.valid_to > first_end)
    ), events AS (
      SELECT instance_uid, t, NULL::timestamptz AS ended_at, day, organization_uid, enabled
      FROM live
      UNION ALL
      SELECT instance_uid, ended_at, ended_at, NULL, NULL, NULL FROM vspc.job_run_facts
      WHERE status IN ('Success', 'Warning') AND ended_at <= as_of
        AND ended_at > first_end - make_interval(hours => max_rpo)
    ), carried AS (
      -- A success ending exactly at a day's end counts for that day: it sorts first.
      SELECT day, organization_uid, enabled, t, max(ended_at) OVER (
        PARTITION BY instance_uid ORDER BY t, ended_at IS NULL ROWS UNBOUNDED PRECEDING
      ) AS last_success
      FROM events
    ), jobs AS (
      SELECT c.day, c.organization_uid,
        count(*) FILTER (WHERE c.enabled) AS protected,
        count(*) FILTER (WHERE c.enabled AND c.last_success > c.t - make_interval(
          hours => coalesce(p.rpo_hours, default_rpo))) AS meeting
      FROM carried c LEFT JOIN vspc.sla_policy p ON p.organization_uid = c.organization_uid
      WHERE c.day IS NOT NULL
      GROUP BY c.day, c.organization_uid
    ), sessions AS (
      SELECT (f.started_at AT TIME ZONE tz)::date AS day, f.organization_uid,
        count(*) AS runs,
        count(*) FILTER (WHERE f.status = 'Success') AS success_runs,
        count(*) FILTER (WHERE f.status = 'Warning') AS warning_runs,
        count(*) FILTER (WHERE f.status = 'Failed') AS failed_runs
      FROM vspc.job_run_facts f
      WHERE f.started_at >= (from_day::timestamp AT TIME ZONE tz)
        AND f.started_at < ((last_day + 1)::timestamp AT TIME ZONE tz)
      GROUP BY 1, 2
    ), merged AS (
      SELECT day, organization_uid, protected, meeting, 0 AS runs, 0 AS success_runs,
             0 AS warning_runs, 0 AS failed_runs FROM jobs
      UNION ALL
      SELECT day, organization_uid, 0, 0, runs, success_runs, warning_runs, failed_runs
      FROM sessions
    )
    SELECT m.day, m.organization_uid, sum(m.protected)::integer, sum(m.runs)::integer,
           sum(m.success_runs)::integer, sum(m.warning_runs)::integer,
           sum(m.failed_runs)::integer, sum(m.meeting)::integer,
           coalesce(min(p.rpo_hours), default_rpo)
    FROM merged m LEFT JOIN vspc.sla_policy p ON p.organization_uid = m.organization_uid
    GROUP BY m.day, m.organization_uid;
END
$$
"""

# Completed days only: from the local day of ``since`` or the day after the last one computed,
# whichever is earlier (NULL: from the first day of history), through yesterday.
REFRESH_SLA_DAILY = """
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
    success_runs, warning_runs, failed_runs, jobs_meeting_rpo, rpo_hours)
  SELECT * FROM vspc.sla_daily_compute(from_day, yesterday, tz, now());
  GET DIAGNOSTICS written = ROW_COUNT;
  RETURN written;
END
$$
"""

SLA_DAILY_TODAY = f"""
CREATE FUNCTION vspc.sla_daily_today() RETURNS TABLE ({COLUMNS})
LANGUAGE plpgsql STABLE
SET jit = off
AS $$
DECLARE
  tz text := coalesce((SELECT time_zone FROM vspc.report_settings LIMIT 1), 'UTC');
  today date := (now() AT TIME ZONE tz)::date;
BEGIN
  RETURN QUERY SELECT * FROM vspc.sla_daily_compute(today, today, tz, now());
END
$$
"""

SLA_DAILY_VIEW = """
CREATE OR REPLACE VIEW vspc.sla_daily AS
SELECT c.day, c.organization_uid, o.name AS organization_name, c.jobs_protected, c.runs,
       c.success_runs, c.warning_runs, c.failed_runs,
       round((c.success_runs + c.warning_runs)::numeric / nullif(c.runs, 0), 4)
         AS success_rate,
       c.jobs_meeting_rpo,
       round(c.jobs_meeting_rpo::numeric / nullif(c.jobs_protected, 0), 4) AS rpo_compliance,
       c.rpo_hours
FROM (
  SELECT k.day, k.organization_uid, k.jobs_protected, k.runs, k.success_runs, k.warning_runs,
         k.failed_runs, k.jobs_meeting_rpo, k.rpo_hours
  FROM vspc.sla_daily_counts k
  WHERE k.day < (now() AT TIME ZONE coalesce(
    (SELECT r.time_zone FROM vspc.report_settings r LIMIT 1), 'UTC'))::date
  UNION ALL
  SELECT * FROM vspc.sla_daily_today()
) c
LEFT JOIN vspc.organizations o ON o.instance_uid = c.organization_uid
"""

VIEW_COMMENT = (
    "SLA per calendar day (report_settings.time_zone) and organization; a day is judged at "
    "its end (today: as of the moment the view is read)"
)
OLD_VIEW_COMMENT = (
    "SLA per calendar day (report_settings.time_zone) and organization; "
    "a day is judged at its end (today: at the last sync)"
)


def _revision_0002() -> ModuleType:
    path = Path(__file__).with_name("0002_reporting.py")
    spec = importlib.util.spec_from_file_location("vspc_etl_migration_0002", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def upgrade() -> None:
    op.execute(SLA_DAILY_COMPUTE)
    op.execute(SLA_DAILY_TODAY)
    op.execute(REFRESH_SLA_DAILY)
    op.execute(SLA_DAILY_VIEW)
    op.execute(f"COMMENT ON VIEW vspc.sla_daily IS {_quote(VIEW_COMMENT)}")
    op.execute(
        "COMMENT ON FUNCTION vspc.sla_daily_compute(date, date, text, timestamptz) IS "
        "'the daily numbers of days from_day..last_day, each judged at its end or at as_of'"
    )
    op.execute(
        "COMMENT ON FUNCTION vspc.sla_daily_today() IS "
        "'today''s rows of sla_daily, as of now (sla_daily_counts keeps completed days only)'"
    )
    op.execute(
        "COMMENT ON FUNCTION vspc.refresh_sla_daily(timestamptz) IS "
        "'recompute sla_daily_counts from the day of since, or the day after the last one "
        "computed if earlier (NULL: everything), through yesterday'"
    )
    op.execute("DELETE FROM vspc.sla_daily_counts")
    op.execute("SELECT vspc.refresh_sla_daily(NULL)")


def downgrade() -> None:
    r0002 = _revision_0002()  # its definitions, as they were
    op.execute(r0002.SLA_DAILY_VIEW.replace("CREATE VIEW", "CREATE OR REPLACE VIEW", 1))
    op.execute(f"COMMENT ON VIEW vspc.sla_daily IS {_quote(OLD_VIEW_COMMENT)}")
    op.execute(r0002.REFRESH_SLA_DAILY.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1))
    op.execute(
        "COMMENT ON FUNCTION vspc.refresh_sla_daily(timestamptz) IS "
        "'recompute sla_daily_counts from the day of since (NULL: everything) through today'"
    )
    op.execute("DROP FUNCTION vspc.sla_daily_today()")
    op.execute("DROP FUNCTION vspc.sla_daily_compute(date, date, text, timestamptz)")
    op.execute("SELECT vspc.refresh_sla_daily(NULL)")
