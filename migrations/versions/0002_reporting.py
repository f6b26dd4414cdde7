"""Reporting layer: names, job sessions, SLA per day, policy and settings, three views.

Tables written by each sync: ``organizations``, ``backup_agents`` (names), ``job_run_facts``
(one row per observed session) and ``sla_daily_counts`` (the daily numbers). Views read by BI
tools: ``job_runs``, ``job_sla_current`` (over the function ``job_sla_at``) and ``sla_daily``.
``sla_policy`` and ``report_settings`` are edited with plain SQL; a trigger recomputes the
daily numbers when they change. Existing snapshot history is turned into sessions here.

Like 0001, every statement is written out: a migration is a frozen record of what it did.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "vspc"
TZ = pg.TIMESTAMP(timezone=True)
UUID = pg.UUID(as_uuid=True)

# Sessions from snapshot versions: final outcomes only, one row per (job, lastRun), the
# latest version describing a session wins. An end before the start belongs to an earlier
# session (the console keeps the previous lastEndTime while a job runs): unknown, so null.
BACKFILL_JOB_RUNS = """
INSERT INTO vspc.job_run_facts (instance_uid, started_at, source, organization_uid,
  backup_agent_uid, job_name, ended_at, duration_s, status, failure_message, backed_up_size,
  restore_points, run_id)
SELECT DISTINCT ON (s.instance_uid, s.last_run)
  s.instance_uid, s.last_run, s.source, s.organization_uid, s.backup_agent_uid, s.name,
  CASE WHEN s.last_end_time >= s.last_run THEN s.last_end_time END,
  CASE WHEN s.last_end_time >= s.last_run
        AND s.last_end_time - s.last_run < interval '2147483647 seconds'  -- fits duration_s
       THEN round(extract(epoch FROM s.last_end_time - s.last_run))::integer END,
  s.status, s.failure_message, s.backed_up_size, s.restore_points,
  min(s.run_id) OVER (PARTITION BY s.instance_uid, s.last_run)
FROM vspc.backup_agent_job_snapshots s
WHERE NOT s.is_deleted AND s.last_run IS NOT NULL
  AND s.status IN ('Success', 'Warning', 'Failed')
ORDER BY s.instance_uid, s.last_run, s.valid_from DESC
"""

JOB_SLA_AT = """
CREATE FUNCTION vspc.job_sla_at(as_of timestamptz)
RETURNS TABLE (
  instance_uid uuid, source text, organization_uid uuid, organization_name text,
  backup_agent_uid uuid, computer_name text, job_name text, is_enabled boolean,
  last_status text, last_run timestamptz, last_success_at timestamptz,
  hours_since_success numeric, rpo_hours integer, rpo_met boolean,
  consecutive_failures integer)
LANGUAGE plpgsql STABLE
-- Not an inlined SQL function: its per-job lookups are estimated at far more than they cost,
-- which made PostgreSQL spend ~0.6 s JIT-compiling a 0.2 s query. PL/pgSQL plans with the
-- actual as_of (a SQL function would plan for any value and scan every version).
SET jit = off
ROWS 10000
AS $$
#variable_conflict use_column
BEGIN
RETURN QUERY
SELECT s.instance_uid, s.source, s.organization_uid, o.name, s.backup_agent_uid,
       a.computer_name, s.name, s.is_enabled, s.status, s.last_run, ok.ended_at,
       round((extract(epoch FROM as_of - ok.ended_at) / 3600)::numeric, 2),
       rpo.hours,
       coalesce(ok.ended_at > as_of - make_interval(hours => rpo.hours), false),
       failed.n::integer
FROM vspc.backup_agent_job_snapshots s
LEFT JOIN vspc.organizations o ON o.instance_uid = s.organization_uid
LEFT JOIN vspc.backup_agents a ON a.instance_uid = s.backup_agent_uid
CROSS JOIN LATERAL (
  SELECT coalesce(
    (SELECT p.rpo_hours FROM vspc.sla_policy p WHERE p.organization_uid = s.organization_uid),
    (SELECT p.rpo_hours FROM vspc.sla_policy p WHERE p.organization_uid IS NULL),
    24) AS hours
) rpo
LEFT JOIN LATERAL (
  SELECT f.started_at, f.ended_at FROM vspc.job_run_facts f
  WHERE f.instance_uid = s.instance_uid AND f.status IN ('Success', 'Warning')
    AND f.ended_at <= as_of
  ORDER BY f.started_at DESC LIMIT 1
) ok ON true
CROSS JOIN LATERAL (
  SELECT count(*) AS n FROM vspc.job_run_facts f
  WHERE f.instance_uid = s.instance_uid AND f.status = 'Failed'
    AND f.started_at > coalesce(ok.started_at, '-infinity')
    AND coalesce(f.ended_at, f.started_at) <= as_of
) failed
WHERE s.valid_from <= as_of AND (s.valid_to IS NULL OR s.valid_to > as_of) AND NOT s.is_deleted;
END
$$
"""

# Recomputes sla_daily_counts from the local day of ``since`` (or the last day already
# computed, if earlier) through today; NULL recomputes everything. Day D is judged at its end
# (today: now). A version holds at the end of D for D in [day(vf - 1us), day(vt - 1us) - 1]
# (local days); one ordered pass per job carries the latest successful end forward.
REFRESH_SLA_DAILY = """
CREATE FUNCTION vspc.refresh_sla_daily(since timestamptz DEFAULT NULL) RETURNS integer
LANGUAGE plpgsql
-- The planner cannot see how many days generate_series yields per version (it guesses 1000):
-- the inflated cost would make it JIT-compile a query that runs in milliseconds, for seconds.
SET jit = off
AS $$
DECLARE
  tz text := coalesce((SELECT time_zone FROM vspc.report_settings LIMIT 1), 'UTC');
  as_of timestamptz := now();
  today date := (now() AT TIME ZONE tz)::date;
  default_rpo integer := coalesce(
    (SELECT rpo_hours FROM vspc.sla_policy WHERE organization_uid IS NULL), 24);
  max_rpo integer := greatest(
    coalesce((SELECT max(rpo_hours) FROM vspc.sla_policy), 24), default_rpo);
  first_day date;
  from_day date;
  first_end timestamptz;
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
    coalesce((SELECT max(day) FROM vspc.sla_daily_counts), first_day),
    today) END;
  from_day := greatest(from_day, first_day);
  -- The first instant judged: only versions still open then, and successes within the
  -- longest RPO before it, can count (for today, only the current versions).
  first_end := least(((from_day + 1)::timestamp AT TIME ZONE tz), as_of);
  DELETE FROM vspc.sla_daily_counts WHERE day >= from_day OR day < first_day;

  INSERT INTO vspc.sla_daily_counts (day, organization_uid, jobs_protected, runs,
    success_runs, warning_runs, failed_runs, jobs_meeting_rpo, rpo_hours)
  WITH live AS (
    SELECT from_day + k AS day, s.instance_uid, s.organization_uid,
           s.is_enabled IS TRUE AS enabled,
           least(((from_day + k + 1)::timestamp AT TIME ZONE tz), as_of) AS t
    FROM vspc.backup_agent_job_snapshots s
    CROSS JOIN LATERAL generate_series(
      greatest(((s.valid_from AT TIME ZONE tz) - interval '1 microsecond')::date, from_day)
        - from_day,
      CASE WHEN s.valid_to IS NULL THEN today
           ELSE least(((s.valid_to AT TIME ZONE tz) - interval '1 microsecond')::date - 1,
                      today) END - from_day) AS k
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
      AND f.started_at < ((today + 1)::timestamp AT TIME ZONE tz)
    GROUP BY 1, 2
  ), merged AS (
    SELECT day, organization_uid, protected, meeting, 0 AS runs, 0 AS success_runs,
           0 AS warning_runs, 0 AS failed_runs FROM jobs
    UNION ALL
    SELECT day, organization_uid, 0, 0, runs, success_runs, warning_runs, failed_runs
    FROM sessions
  )
  SELECT m.day, m.organization_uid, sum(m.protected), sum(m.runs), sum(m.success_runs),
         sum(m.warning_runs), sum(m.failed_runs), sum(m.meeting),
         coalesce(min(p.rpo_hours), default_rpo)
  FROM merged m LEFT JOIN vspc.sla_policy p ON p.organization_uid = m.organization_uid
  GROUP BY m.day, m.organization_uid;
  GET DIAGNOSTICS written = ROW_COUNT;
  RETURN written;
END
$$
"""

SETTINGS_CHANGED = """
CREATE FUNCTION vspc.sla_settings_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM vspc.refresh_sla_daily(NULL);
  RETURN NULL;
END
$$
"""

JOB_RUNS_VIEW = """
CREATE VIEW vspc.job_runs AS
SELECT f.instance_uid, f.source, f.organization_uid, o.name AS organization_name,
       f.backup_agent_uid, a.computer_name, f.job_name, f.started_at, f.ended_at,
       f.duration_s, f.status, f.failure_message, f.backed_up_size, f.restore_points,
       (f.started_at AT TIME ZONE coalesce(
          (SELECT r.time_zone FROM vspc.report_settings r LIMIT 1), 'UTC'))::date AS day
FROM vspc.job_run_facts f
LEFT JOIN vspc.organizations o ON o.instance_uid = f.organization_uid
LEFT JOIN vspc.backup_agents a ON a.instance_uid = f.backup_agent_uid
"""

JOB_SLA_CURRENT_VIEW = """
CREATE VIEW vspc.job_sla_current AS
SELECT instance_uid, source, organization_uid, organization_name, backup_agent_uid,
       computer_name, job_name, is_enabled, last_status, last_run, last_success_at,
       hours_since_success, rpo_hours, rpo_met, consecutive_failures
FROM vspc.job_sla_at(now())
"""

SLA_DAILY_VIEW = """
CREATE VIEW vspc.sla_daily AS
SELECT c.day, c.organization_uid, o.name AS organization_name, c.jobs_protected, c.runs,
       c.success_runs, c.warning_runs, c.failed_runs,
       round((c.success_runs + c.warning_runs)::numeric / nullif(c.runs, 0), 4)
         AS success_rate,
       c.jobs_meeting_rpo,
       round(c.jobs_meeting_rpo::numeric / nullif(c.jobs_protected, 0), 4) AS rpo_compliance,
       c.rpo_hours
FROM vspc.sla_daily_counts c
LEFT JOIN vspc.organizations o ON o.instance_uid = c.organization_uid
"""

VIEW_COMMENTS: dict[str, tuple[str, dict[str, str]]] = {
    "job_runs": (
        "one row per observed job session with a final outcome (Success, Warning, Failed); "
        "a session seen Running and later finished is one row with its final status",
        {
            "instance_uid": "job instanceUid",
            "source": "console the session was read from",
            "organization_uid": "organization of the job",
            "organization_name": "organization name (null until /organizations was read)",
            "backup_agent_uid": "agent (computer) of the job",
            "computer_name": "computer name (null until /backupAgents/windows was read)",
            "job_name": "job name when the session was observed",
            "started_at": "session start (the job's lastRun); with instance_uid the key",
            "ended_at": "session end (lastEndTime); null when the console did not tell it",
            "duration_s": "seconds from started_at to ended_at",
            "status": "final outcome: Success, Warning or Failed",
            "failure_message": "failure or warning message of the session",
            "backed_up_size": "bytes in all restore points after the session",
            "restore_points": "restore points after the session",
            "day": "calendar day of started_at in report_settings.time_zone",
        },
    ),
    "job_sla_current": (
        "one row per live job: its latest outcome and whether it meets its RPO now",
        {
            "instance_uid": "job instanceUid",
            "source": "console the job was read from",
            "organization_uid": "organization of the job",
            "organization_name": "organization name (null if unknown)",
            "backup_agent_uid": "agent (computer) of the job",
            "computer_name": "computer name (null if unknown)",
            "job_name": "job name",
            "is_enabled": "job enabled; a disabled job is not counted as protected",
            "last_status": "status of the latest session as last read (Running included)",
            "last_run": "start of the latest session as last read",
            "last_success_at": "end of the latest Success or Warning session",
            "hours_since_success": "hours from last_success_at to now",
            "rpo_hours": "RPO from sla_policy (the organization's row, else the default)",
            "rpo_met": "a Success/Warning session ended within rpo_hours before now",
            "consecutive_failures": "Failed sessions since the latest Success/Warning",
        },
    ),
    "sla_daily": (
        "SLA per calendar day (report_settings.time_zone) and organization; "
        "a day is judged at its end (today: at the last sync)",
        {
            "day": "calendar day in report_settings.time_zone",
            "organization_uid": "organization",
            "organization_name": "organization name (null if unknown)",
            "jobs_protected": "jobs live and enabled at the end of the day",
            "runs": "sessions started that day",
            "success_runs": "of which Success",
            "warning_runs": "of which Warning",
            "failed_runs": "of which Failed",
            "success_rate": "(success_runs + warning_runs) / runs, 0..1; null without runs",
            "jobs_meeting_rpo": "protected jobs whose latest Success/Warning session ended "
            "within rpo_hours before the end of the day",
            "rpo_compliance": "jobs_meeting_rpo / jobs_protected, 0..1; null without jobs",
            "rpo_hours": "the RPO applied (sla_policy)",
        },
    ),
}


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def upgrade() -> None:
    op.create_index(
        "ix_backup_agent_job_snapshots_valid_to",
        "backup_agent_job_snapshots",
        ["valid_to"],
        schema=S,
    )
    op.create_table(
        "organizations",
        sa.Column("instance_uid", UUID, nullable=False, comment="VSPC organization uid"),
        sa.Column(
            "source", sa.Text, nullable=False, comment="console the row came from (VSPC_SOURCE)"
        ),
        sa.Column("name", sa.Text, comment="organization name"),
        sa.Column("alias", sa.Text, comment="organization alias"),
        sa.Column(
            "type", sa.Text, comment="Company, Provider, Reseller, Unknown (or a newer value)"
        ),
        sa.Column(
            "first_seen_at", TZ, nullable=False, comment="start of the run that first listed it"
        ),
        sa.Column(
            "updated_at", TZ, nullable=False, comment="start of the run that last changed it"
        ),
        sa.PrimaryKeyConstraint("instance_uid", name="pk_organizations"),
        schema=S,
        comment="organization names from GET /api/v3/organizations, refreshed by each sync",
    )
    op.create_table(
        "backup_agents",
        sa.Column("instance_uid", UUID, nullable=False, comment="VSPC backup agent uid"),
        sa.Column(
            "source", sa.Text, nullable=False, comment="console the row came from (VSPC_SOURCE)"
        ),
        sa.Column("computer_name", sa.Text, comment="name of the computer the agent runs on"),
        sa.Column("organization_uid", UUID, comment="organization the agent belongs to"),
        sa.Column("version", sa.Text, comment="agent version"),
        sa.Column("status", sa.Text, comment="agent status as reported, e.g. Active, Inaccessible"),
        sa.Column(
            "first_seen_at", TZ, nullable=False, comment="start of the run that first listed it"
        ),
        sa.Column(
            "updated_at", TZ, nullable=False, comment="start of the run that last changed it"
        ),
        sa.PrimaryKeyConstraint("instance_uid", name="pk_backup_agents"),
        schema=S,
        comment="Windows backup agents (computer names) from GET "
        "/api/v3/infrastructure/backupAgents/windows, refreshed by each sync",
    )
    op.create_table(
        "job_run_facts",
        sa.Column("instance_uid", UUID, nullable=False, comment="job instanceUid"),
        sa.Column("started_at", TZ, nullable=False, comment="session start (the job's lastRun)"),
        sa.Column("source", sa.Text, nullable=False, comment="console the session was read from"),
        sa.Column("organization_uid", UUID, comment="organization of the job"),
        sa.Column("backup_agent_uid", UUID, comment="agent (computer) of the job"),
        sa.Column("job_name", sa.Text, comment="job name when the session was observed"),
        sa.Column(
            "ended_at", TZ, comment="session end (lastEndTime); null if not at/after the start"
        ),
        sa.Column("duration_s", sa.Integer, comment="seconds from started_at to ended_at"),
        sa.Column(
            "status",
            sa.Text,
            nullable=False,
            comment="final outcome: Success, Warning or Failed",
        ),
        sa.Column("failure_message", sa.Text, comment="failure or warning message of the session"),
        sa.Column("backed_up_size", sa.BigInteger, comment="bytes in all restore points after it"),
        sa.Column("restore_points", sa.Integer, comment="restore points after it"),
        sa.Column(
            "run_id",
            sa.BigInteger,
            nullable=False,
            comment="etl_runs.run_id that first recorded it",
        ),
        sa.PrimaryKeyConstraint("instance_uid", "started_at", name="pk_job_run_facts"),
        sa.CheckConstraint(
            "status IN ('Success', 'Warning', 'Failed')", name="ck_job_run_facts_status"
        ),
        schema=S,
        comment="one row per observed job session with a final outcome, kept by each sync from "
        "the snapshot versions it writes; read it through the view job_runs",
    )
    op.create_index(
        "ix_job_run_facts_organization_uid_started_at",
        "job_run_facts",
        ["organization_uid", "started_at"],
        schema=S,
    )
    op.create_index("ix_job_run_facts_started_at", "job_run_facts", ["started_at"], schema=S)
    op.create_index("ix_job_run_facts_ended_at", "job_run_facts", ["ended_at"], schema=S)
    op.create_table(
        "sla_daily_counts",
        sa.Column(
            "day", sa.Date, nullable=False, comment="calendar day in report_settings.time_zone"
        ),
        sa.Column("organization_uid", UUID, comment="organization"),
        sa.Column(
            "jobs_protected", sa.Integer, nullable=False, comment="live, enabled jobs at day end"
        ),
        sa.Column("runs", sa.Integer, nullable=False, comment="sessions started that day"),
        sa.Column("success_runs", sa.Integer, nullable=False, comment="of which Success"),
        sa.Column("warning_runs", sa.Integer, nullable=False, comment="of which Warning"),
        sa.Column("failed_runs", sa.Integer, nullable=False, comment="of which Failed"),
        sa.Column(
            "jobs_meeting_rpo",
            sa.Integer,
            nullable=False,
            comment="protected jobs whose latest successful session ended within rpo_hours",
        ),
        sa.Column("rpo_hours", sa.Integer, nullable=False, comment="the RPO applied (sla_policy)"),
        sa.UniqueConstraint(
            "day",
            "organization_uid",
            name="uq_sla_daily_counts_day_organization_uid",
            postgresql_nulls_not_distinct=True,
        ),
        schema=S,
        comment="sla_daily's numbers, kept by each sync and recomputed whole when sla_policy or "
        "report_settings change; read it through the view sla_daily",
    )
    op.create_table(
        "sla_policy",
        sa.Column(
            "organization_uid",
            UUID,
            comment="organization this row applies to; null = the default for all others",
        ),
        sa.Column(
            "rpo_hours",
            sa.Integer,
            nullable=False,
            comment="recovery point objective: a successful session must have ended within "
            "this many hours",
        ),
        sa.UniqueConstraint(
            "organization_uid",
            name="uq_sla_policy_organization_uid",
            postgresql_nulls_not_distinct=True,
        ),
        sa.CheckConstraint("rpo_hours > 0", name="ck_sla_policy_rpo_hours"),
        schema=S,
        comment="RPO per organization (edit with plain SQL; the row with a null "
        "organization_uid is the default, seeded with 24 hours)",
    )
    op.create_table(
        "report_settings",
        sa.Column(
            "id",
            sa.Boolean,
            nullable=False,
            server_default=sa.text("true"),
            comment="always true: the table has one row",
        ),
        sa.Column(
            "time_zone",
            sa.Text,
            nullable=False,
            server_default=sa.text("'UTC'"),
            comment="IANA time zone whose calendar days sla_daily and job_runs.day use",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_report_settings"),
        sa.CheckConstraint("id", name="ck_report_settings_one_row"),
        schema=S,
        comment="reporting settings, one row (edit with plain SQL: UPDATE vspc.report_settings "
        "SET time_zone = 'Europe/Berlin')",
    )
    op.execute("INSERT INTO vspc.sla_policy (organization_uid, rpo_hours) VALUES (NULL, 24)")
    op.execute("INSERT INTO vspc.report_settings DEFAULT VALUES")
    op.execute(BACKFILL_JOB_RUNS)

    op.execute(JOB_SLA_AT)
    op.execute(REFRESH_SLA_DAILY)
    op.execute(SETTINGS_CHANGED)
    for table in ("report_settings", "sla_policy"):
        op.execute(
            f"CREATE TRIGGER refresh_sla_daily AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE "
            f"ON vspc.{table} FOR EACH STATEMENT EXECUTE FUNCTION vspc.sla_settings_changed()"
        )
    op.execute(JOB_RUNS_VIEW)
    op.execute(JOB_SLA_CURRENT_VIEW)
    op.execute(SLA_DAILY_VIEW)
    for view, (comment, columns) in VIEW_COMMENTS.items():
        op.execute(f"COMMENT ON VIEW vspc.{view} IS {_quote(comment)}")
        for column, text in columns.items():
            op.execute(f"COMMENT ON COLUMN vspc.{view}.{column} IS {_quote(text)}")
    op.execute(
        "COMMENT ON FUNCTION vspc.job_sla_at(timestamptz) IS "
        "'job_sla_current as it was at as_of: jobs live then, sessions ended by then'"
    )
    op.execute(
        "COMMENT ON FUNCTION vspc.refresh_sla_daily(timestamptz) IS "
        "'recompute sla_daily_counts from the day of since (NULL: everything) through today'"
    )
    op.execute("SELECT vspc.refresh_sla_daily(NULL)")


def downgrade() -> None:
    op.execute("DROP VIEW vspc.sla_daily")
    op.execute("DROP VIEW vspc.job_sla_current")
    op.execute("DROP VIEW vspc.job_runs")
    for table in ("sla_policy", "report_settings"):
        op.execute(f"DROP TRIGGER refresh_sla_daily ON vspc.{table}")
    op.execute("DROP FUNCTION vspc.sla_settings_changed()")
    op.execute("DROP FUNCTION vspc.refresh_sla_daily(timestamptz)")
    op.execute("DROP FUNCTION vspc.job_sla_at(timestamptz)")
    op.drop_table("report_settings", schema=S)
    op.drop_table("sla_policy", schema=S)
    op.drop_table("sla_daily_counts", schema=S)
    op.drop_table("job_run_facts", schema=S)
    op.drop_table("backup_agents", schema=S)
    op.drop_table("organizations", schema=S)
    op.drop_index("ix_backup_agent_job_snapshots_valid_to", schema=S)
