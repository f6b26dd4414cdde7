"""Every platform: Linux and Mac jobs beside Windows ones, agents and their management agents.

``backup_agent_jobs`` and ``backup_agent_job_snapshots`` gain ``system_type`` (Windows, Linux,
Mac): the platform collection a job is read from. Every row already held came from the Windows
collection, the only one read before: it is backfilled ``Windows`` (a constant default, so
PostgreSQL does not rewrite the tables; the default is dropped after). ``backup_agents`` is read
from ``/infrastructure/backupAgents`` now, the endpoint that has the computer names, and keeps
the agent's platform, its management agent and operation mode; the new ``management_agents``
holds the console's link to each computer (connection, last heartbeat).

``job_sla_at`` returns three more columns (platform, the management agent's connection and
heartbeat): a function's result type cannot be replaced in place, so it and the view that
reads it (``job_sla_current``) are dropped and created again (grants follow the schema's
default privileges, see ``vspc-etl grant``). ``job_runs`` gains ``system_type``. Downgrade
restores the definitions of revision 0007 verbatim and drops what this revision added; the
rows of Linux and Mac jobs stay (a release that reads Windows alone soft-deletes them at its
first complete read, within ``VSPC_MAX_DELETE_RATIO``).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "vspc"
TZ = sa.TIMESTAMP(timezone=True)
SYSTEM_TYPE_COMMENT = (
    "platform of the agent: Windows, Linux or Mac (the collection the job was read from, "
    "spelled as the API's systemType)"
)
TARGET_TYPE = (
    "Local, Cloud, Unknown",
    "Windows: Local, Cloud, Unknown; Linux and Mac: BackupRepository, CloudRepository, "
    "LocalFolder, SharedFolder, Unknown",
)
SCHEDULE_EVENTS = (
    "AtLock, AtLogoff, WhenBackupTargetIsConnected, Unknown",
    "AtLock, AtLogoff, WhenBackupTargetIsConnected, Unknown; null for Linux and Mac jobs "
    "(their API has no such field)",
)
JOBS_TABLE = (
    "Windows backup agent jobs from VSPC: one row per job ever seen, current state",
    "backup agent jobs (Windows, Linux, Mac) from VSPC: one row per job ever seen, current state",
)
AGENTS_TABLE = (
    "Windows backup agents (computer names) from GET /api/v3/infrastructure/backupAgents/windows, "
    "refreshed by each sync",
    "backup agents of every platform (computer names) from GET "
    "/api/v3/infrastructure/backupAgents, refreshed by each sync",
)
AGENT_STATUS = (
    "agent status as reported, e.g. Active, Inaccessible",
    "agent status as reported: Active, NotRunning, Unknown (or a newer value as received)",
)

# The definitions of revision 0007 (written by 0006), restored by downgrade.
JOB_SLA_AT_0007 = r"""
-- The live jobs at as_of with their kept answer (job_sla_state). A job whose answer is not
-- settled by as_of (a past instant; a session that ends after it) is computed from its
-- sessions instead, read backwards from as_of in windows of 1, 2, 4, ... days until each such
-- job has met its latest success then (or the oldest session is passed): most jobs run daily,
-- so a past instant reads days of sessions, not the year before it. Per window and job: the
-- latest success in it and the visible failures after it (all of them, if it has none).
CREATE OR REPLACE FUNCTION vspc.job_sla_at(as_of timestamptz)
RETURNS TABLE (
  instance_uid uuid, source text, organization_uid uuid, organization_name text,
  backup_agent_uid uuid, computer_name text, job_name text, is_enabled boolean,
  last_status text, last_run timestamptz, last_success_at timestamptz,
  hours_since_success numeric, rpo_hours integer, rpo_met boolean,
  consecutive_failures integer)
LANGUAGE plpgsql STABLE
SET jit = off
-- Each call plans its statements for its own as_of and windows: a cached generic plan, which
-- PL/pgSQL may switch to after five calls, read every version (1 s instead of 50 ms).
SET plan_cache_mode = force_custom_plan
ROWS 10000
AS $$
#variable_conflict use_column
DECLARE
  pending uuid[];
  oldest timestamptz;
  lo timestamptz;
  hi timestamptz := as_of + interval '1 microsecond';  -- windows are [lo, hi)
  span interval := interval '1 day';
  w_uid uuid[] := '{}';
  w_ok timestamptz[] := '{}';
  w_after bigint[] := '{}';
BEGIN
  SELECT array_agg(s.instance_uid) INTO pending
  FROM vspc.backup_agent_job_snapshots s
  JOIN vspc.job_sla_state st ON st.instance_uid = s.instance_uid
  WHERE s.valid_from <= as_of AND (s.valid_to IS NULL OR s.valid_to > as_of)
    AND NOT s.is_deleted AND st.settled_at > as_of;
  IF pending IS NOT NULL THEN
    SELECT min(f.started_at) INTO oldest FROM vspc.job_run_facts f;
  END IF;
  WHILE pending IS NOT NULL AND hi > oldest AND isfinite(hi) LOOP
    lo := hi - span;
    WITH counted AS (
      SELECT f.instance_uid,
        max(f.started_at) FILTER (WHERE f.status IN ('Success', 'Warning')
                                    AND f.ended_at <= as_of) AS ok_started,
        array_agg(f.started_at) FILTER (WHERE f.status = 'Failed'
                                          AND coalesce(f.ended_at, f.started_at) <= as_of)
          AS failed_starts
      FROM vspc.job_run_facts f
      WHERE f.started_at >= lo AND f.started_at < hi
        AND f.instance_uid IN (SELECT unnest(pending))
      GROUP BY f.instance_uid
    ), window_rows AS (
      SELECT c.instance_uid, c.ok_started,
        (SELECT count(*) FROM unnest(c.failed_starts) AS x (started)
         WHERE x.started > coalesce(c.ok_started, '-infinity')) AS after_ok
      FROM counted c
    )
    SELECT w_uid || coalesce(array_agg(r.instance_uid), '{}'),
           w_ok || coalesce(array_agg(r.ok_started), '{}'),
           w_after || coalesce(array_agg(r.after_ok), '{}'),
           (SELECT array_agg(p.uid) FROM unnest(pending) AS p (uid)
            WHERE NOT EXISTS (SELECT 1 FROM window_rows k
                              WHERE k.instance_uid = p.uid AND k.ok_started IS NOT NULL))
      INTO w_uid, w_ok, w_after, pending
    FROM window_rows r;
    hi := lo;
    span := span * 2;
  END LOOP;
  RETURN QUERY
  WITH jobs AS MATERIALIZED (
    SELECT s.instance_uid, s.source, s.organization_uid, s.backup_agent_uid, s.name,
           s.is_enabled, s.status, s.last_run, st.ok_ended_at, st.failures,
           coalesce(st.settled_at > as_of, false) AS unsettled
    FROM vspc.backup_agent_job_snapshots s
    LEFT JOIN vspc.job_sla_state st ON st.instance_uid = s.instance_uid
    WHERE s.valid_from <= as_of AND (s.valid_to IS NULL OR s.valid_to > as_of)
      AND NOT s.is_deleted
  ), windows AS (
    -- the windows before the one with the job's success count all their failures
    SELECT w.uid, max(w.ok) AS ok_started, sum(w.n_after) AS n
    FROM unnest(w_uid, w_ok, w_after) AS w (uid, ok, n_after)
    GROUP BY w.uid
  ), computed AS (
    SELECT w.uid, e.ended_at, w.n
    FROM windows w
    LEFT JOIN vspc.job_run_facts e ON e.started_at = w.ok_started AND e.instance_uid = w.uid
  ), answer AS (
    SELECT j.*,
      CASE WHEN j.unsettled THEN c.ended_at ELSE j.ok_ended_at END AS ok_end,
      CASE WHEN j.unsettled THEN coalesce(c.n, 0) ELSE coalesce(j.failures, 0) END AS n
    FROM jobs j
    LEFT JOIN computed c ON j.unsettled AND c.uid = j.instance_uid
  )
  SELECT j.instance_uid, j.source, j.organization_uid, o.name, j.backup_agent_uid,
         a.computer_name, j.name, j.is_enabled, j.status, j.last_run, j.ok_end,
         round((extract(epoch FROM as_of - j.ok_end) / 3600)::numeric, 2),
         rpo.hours,
         coalesce(j.ok_end > as_of - make_interval(hours => rpo.hours), false),
         j.n::integer
  FROM answer j
  LEFT JOIN vspc.organizations o ON o.instance_uid = j.organization_uid
  LEFT JOIN vspc.backup_agents a ON a.instance_uid = j.backup_agent_uid
  CROSS JOIN LATERAL (
    SELECT coalesce(
      (SELECT p.rpo_hours FROM vspc.sla_policy p WHERE p.organization_uid = j.organization_uid),
      (SELECT p.rpo_hours FROM vspc.sla_policy p WHERE p.organization_uid IS NULL),
      24) AS hours
  ) rpo;
END
$$;

COMMENT ON FUNCTION vspc.job_sla_at(timestamptz) IS
  'job_sla_current as it was at as_of: jobs live then, sessions ended by then';
"""

JOB_SLA_CURRENT_0007 = r"""
-- The SLA answer now, per live job (job_sla_at at now()).
CREATE OR REPLACE VIEW vspc.job_sla_current AS
SELECT instance_uid, source, organization_uid, organization_name, backup_agent_uid,
       computer_name, job_name, is_enabled, last_status, last_run, last_success_at,
       hours_since_success, rpo_hours, rpo_met, consecutive_failures
FROM vspc.job_sla_at(now());

COMMENT ON VIEW vspc.job_sla_current IS
  'one row per live job: its latest outcome and whether it meets its RPO now';
COMMENT ON COLUMN vspc.job_sla_current.instance_uid IS 'job instanceUid';
COMMENT ON COLUMN vspc.job_sla_current.source IS 'console the job was read from';
COMMENT ON COLUMN vspc.job_sla_current.organization_uid IS 'organization of the job';
COMMENT ON COLUMN vspc.job_sla_current.organization_name IS 'organization name (null if unknown)';
COMMENT ON COLUMN vspc.job_sla_current.backup_agent_uid IS 'agent (computer) of the job';
COMMENT ON COLUMN vspc.job_sla_current.computer_name IS 'computer name (null if unknown)';
COMMENT ON COLUMN vspc.job_sla_current.job_name IS 'job name';
COMMENT ON COLUMN vspc.job_sla_current.is_enabled IS
  'job enabled; a disabled job is not counted as protected';
COMMENT ON COLUMN vspc.job_sla_current.last_status IS
  'status of the latest session as last read (Running included)';
COMMENT ON COLUMN vspc.job_sla_current.last_run IS 'start of the latest session as last read';
COMMENT ON COLUMN vspc.job_sla_current.last_success_at IS
  'end of the latest Success or Warning session';
COMMENT ON COLUMN vspc.job_sla_current.hours_since_success IS 'hours from last_success_at to now';
COMMENT ON COLUMN vspc.job_sla_current.rpo_hours IS
  'RPO from sla_policy (the organization''s row, else the default)';
COMMENT ON COLUMN vspc.job_sla_current.rpo_met IS
  'a Success/Warning session ended within rpo_hours before now';
COMMENT ON COLUMN vspc.job_sla_current.consecutive_failures IS
  'Failed sessions since the latest Success/Warning';
"""

JOB_RUNS_0007 = r"""
-- What BI tools read for sessions: job_run_facts with the names of organization and computer.
CREATE OR REPLACE VIEW vspc.job_runs AS
SELECT f.instance_uid, f.source, f.organization_uid, o.name AS organization_name,
       f.backup_agent_uid, a.computer_name, f.job_name, f.started_at, f.ended_at,
       f.duration_s, f.status, f.failure_message, f.backed_up_size, f.restore_points,
       (f.started_at AT TIME ZONE coalesce(
          (SELECT r.time_zone FROM vspc.report_settings r LIMIT 1), 'UTC'))::date AS day
FROM vspc.job_run_facts f
LEFT JOIN vspc.organizations o ON o.instance_uid = f.organization_uid
LEFT JOIN vspc.backup_agents a ON a.instance_uid = f.backup_agent_uid;

COMMENT ON VIEW vspc.job_runs IS
  'one row per observed job session with a final outcome (Success, Warning, Failed); a '
  'session seen Running and later finished is one row with its final status';
COMMENT ON COLUMN vspc.job_runs.instance_uid IS 'job instanceUid';
COMMENT ON COLUMN vspc.job_runs.source IS 'console the session was read from';
COMMENT ON COLUMN vspc.job_runs.organization_uid IS 'organization of the job';
COMMENT ON COLUMN vspc.job_runs.organization_name IS
  'organization name (null until /organizations was read)';
COMMENT ON COLUMN vspc.job_runs.backup_agent_uid IS 'agent (computer) of the job';
COMMENT ON COLUMN vspc.job_runs.computer_name IS
  'computer name (null until /backupAgents/windows was read)';
COMMENT ON COLUMN vspc.job_runs.job_name IS 'job name when the session was observed';
COMMENT ON COLUMN vspc.job_runs.started_at IS
  'session start (the job''s lastRun); with instance_uid the key';
COMMENT ON COLUMN vspc.job_runs.ended_at IS
  'session end (lastEndTime); null when the console did not tell it';
COMMENT ON COLUMN vspc.job_runs.duration_s IS 'seconds from started_at to ended_at';
COMMENT ON COLUMN vspc.job_runs.status IS 'final outcome: Success, Warning or Failed';
COMMENT ON COLUMN vspc.job_runs.failure_message IS 'failure or warning message of the session';
COMMENT ON COLUMN vspc.job_runs.backed_up_size IS 'bytes in all restore points after the session';
COMMENT ON COLUMN vspc.job_runs.restore_points IS 'restore points after the session';
COMMENT ON COLUMN vspc.job_runs.day IS 'calendar day of started_at in report_settings.time_zone';
"""

JOB_SLA_AT = r"""
-- The live jobs at as_of with their kept answer (job_sla_state). A job whose answer is not
-- settled by as_of (a past instant; a session that ends after it) is computed from its
-- sessions instead, read backwards from as_of in windows of 1, 2, 4, ... days until each such
-- job has met its latest success then (or the oldest session is passed): most jobs run daily,
-- so a past instant reads days of sessions, not the year before it. Per window and job: the
-- latest success in it and the visible failures after it (all of them, if it has none).
CREATE OR REPLACE FUNCTION vspc.job_sla_at(as_of timestamptz)
RETURNS TABLE (
  instance_uid uuid, source text, organization_uid uuid, organization_name text,
  backup_agent_uid uuid, computer_name text, job_name text, is_enabled boolean,
  last_status text, last_run timestamptz, last_success_at timestamptz,
  hours_since_success numeric, rpo_hours integer, rpo_met boolean,
  consecutive_failures integer, system_type text, agent_connection_status text,
  agent_last_heartbeat_at timestamptz)
LANGUAGE plpgsql STABLE
SET jit = off
-- Each call plans its statements for its own as_of and windows: a cached generic plan, which
-- PL/pgSQL may switch to after five calls, read every version (1 s instead of 50 ms).
SET plan_cache_mode = force_custom_plan
ROWS 10000
AS $$
#variable_conflict use_column
DECLARE
  pending uuid[];
  oldest timestamptz;
  lo timestamptz;
  hi timestamptz := as_of + interval '1 microsecond';  -- windows are [lo, hi)
  span interval := interval '1 day';
  w_uid uuid[] := '{}';
  w_ok timestamptz[] := '{}';
  w_after bigint[] := '{}';
BEGIN
  SELECT array_agg(s.instance_uid) INTO pending
  FROM vspc.backup_agent_job_snapshots s
  JOIN vspc.job_sla_state st ON st.instance_uid = s.instance_uid
  WHERE s.valid_from <= as_of AND (s.valid_to IS NULL OR s.valid_to > as_of)
    AND NOT s.is_deleted AND st.settled_at > as_of;
  IF pending IS NOT NULL THEN
    SELECT min(f.started_at) INTO oldest FROM vspc.job_run_facts f;
  END IF;
  WHILE pending IS NOT NULL AND hi > oldest AND isfinite(hi) LOOP
    lo := hi - span;
    WITH counted AS (
      SELECT f.instance_uid,
        max(f.started_at) FILTER (WHERE f.status IN ('Success', 'Warning')
                                    AND f.ended_at <= as_of) AS ok_started,
        array_agg(f.started_at) FILTER (WHERE f.status = 'Failed'
                                          AND coalesce(f.ended_at, f.started_at) <= as_of)
          AS failed_starts
      FROM vspc.job_run_facts f
      WHERE f.started_at >= lo AND f.started_at < hi
        AND f.instance_uid IN (SELECT unnest(pending))
      GROUP BY f.instance_uid
    ), window_rows AS (
      SELECT c.instance_uid, c.ok_started,
        (SELECT count(*) FROM unnest(c.failed_starts) AS x (started)
         WHERE x.started > coalesce(c.ok_started, '-infinity')) AS after_ok
      FROM counted c
    )
    SELECT w_uid || coalesce(array_agg(r.instance_uid), '{}'),
           w_ok || coalesce(array_agg(r.ok_started), '{}'),
           w_after || coalesce(array_agg(r.after_ok), '{}'),
           (SELECT array_agg(p.uid) FROM unnest(pending) AS p (uid)
            WHERE NOT EXISTS (SELECT 1 FROM window_rows k
                              WHERE k.instance_uid = p.uid AND k.ok_started IS NOT NULL))
      INTO w_uid, w_ok, w_after, pending
    FROM window_rows r;
    hi := lo;
    span := span * 2;
  END LOOP;
  RETURN QUERY
  WITH jobs AS MATERIALIZED (
    SELECT s.instance_uid, s.source, s.organization_uid, s.backup_agent_uid, s.name,
           s.is_enabled, s.status, s.last_run, s.system_type, st.ok_ended_at, st.failures,
           coalesce(st.settled_at > as_of, false) AS unsettled
    FROM vspc.backup_agent_job_snapshots s
    LEFT JOIN vspc.job_sla_state st ON st.instance_uid = s.instance_uid
    WHERE s.valid_from <= as_of AND (s.valid_to IS NULL OR s.valid_to > as_of)
      AND NOT s.is_deleted
  ), windows AS (
    -- the windows before the one with the job's success count all their failures
    SELECT w.uid, max(w.ok) AS ok_started, sum(w.n_after) AS n
    FROM unnest(w_uid, w_ok, w_after) AS w (uid, ok, n_after)
    GROUP BY w.uid
  ), computed AS (
    SELECT w.uid, e.ended_at, w.n
    FROM windows w
    LEFT JOIN vspc.job_run_facts e ON e.started_at = w.ok_started AND e.instance_uid = w.uid
  ), answer AS (
    SELECT j.*,
      CASE WHEN j.unsettled THEN c.ended_at ELSE j.ok_ended_at END AS ok_end,
      CASE WHEN j.unsettled THEN coalesce(c.n, 0) ELSE coalesce(j.failures, 0) END AS n
    FROM jobs j
    LEFT JOIN computed c ON j.unsettled AND c.uid = j.instance_uid
  )
  SELECT j.instance_uid, j.source, j.organization_uid, o.name, j.backup_agent_uid,
         a.computer_name, j.name, j.is_enabled, j.status, j.last_run, j.ok_end,
         round((extract(epoch FROM as_of - j.ok_end) / 3600)::numeric, 2),
         rpo.hours,
         coalesce(j.ok_end > as_of - make_interval(hours => rpo.hours), false),
         j.n::integer, j.system_type, m.connection_status, m.last_heartbeat_at
  FROM answer j
  LEFT JOIN vspc.organizations o ON o.instance_uid = j.organization_uid
  LEFT JOIN vspc.backup_agents a ON a.instance_uid = j.backup_agent_uid
  LEFT JOIN vspc.management_agents m ON m.instance_uid = a.management_agent_uid
  CROSS JOIN LATERAL (
    SELECT coalesce(
      (SELECT p.rpo_hours FROM vspc.sla_policy p WHERE p.organization_uid = j.organization_uid),
      (SELECT p.rpo_hours FROM vspc.sla_policy p WHERE p.organization_uid IS NULL),
      24) AS hours
  ) rpo;
END
$$;

COMMENT ON FUNCTION vspc.job_sla_at(timestamptz) IS
  'job_sla_current as it was at as_of: jobs live then, sessions ended by then';
"""

JOB_SLA_CURRENT = r"""
-- The SLA answer now, per live job (job_sla_at at now()).
CREATE OR REPLACE VIEW vspc.job_sla_current AS
SELECT instance_uid, source, organization_uid, organization_name, backup_agent_uid,
       computer_name, job_name, is_enabled, last_status, last_run, last_success_at,
       hours_since_success, rpo_hours, rpo_met, consecutive_failures, system_type,
       agent_connection_status, agent_last_heartbeat_at
FROM vspc.job_sla_at(now());

COMMENT ON VIEW vspc.job_sla_current IS
  'one row per live job: its latest outcome and whether it meets its RPO now';
COMMENT ON COLUMN vspc.job_sla_current.instance_uid IS 'job instanceUid';
COMMENT ON COLUMN vspc.job_sla_current.source IS 'console the job was read from';
COMMENT ON COLUMN vspc.job_sla_current.organization_uid IS 'organization of the job';
COMMENT ON COLUMN vspc.job_sla_current.organization_name IS 'organization name (null if unknown)';
COMMENT ON COLUMN vspc.job_sla_current.backup_agent_uid IS 'agent (computer) of the job';
COMMENT ON COLUMN vspc.job_sla_current.computer_name IS
  'computer name from /infrastructure/backupAgents (null if unknown)';
COMMENT ON COLUMN vspc.job_sla_current.job_name IS 'job name';
COMMENT ON COLUMN vspc.job_sla_current.is_enabled IS
  'job enabled; a disabled job is not counted as protected';
COMMENT ON COLUMN vspc.job_sla_current.last_status IS
  'status of the latest session as last read (Running included)';
COMMENT ON COLUMN vspc.job_sla_current.last_run IS 'start of the latest session as last read';
COMMENT ON COLUMN vspc.job_sla_current.last_success_at IS
  'end of the latest Success or Warning session';
COMMENT ON COLUMN vspc.job_sla_current.hours_since_success IS 'hours from last_success_at to now';
COMMENT ON COLUMN vspc.job_sla_current.rpo_hours IS
  'RPO from sla_policy (the organization''s row, else the default)';
COMMENT ON COLUMN vspc.job_sla_current.rpo_met IS
  'a Success/Warning session ended within rpo_hours before now';
COMMENT ON COLUMN vspc.job_sla_current.consecutive_failures IS
  'Failed sessions since the latest Success/Warning';
COMMENT ON COLUMN vspc.job_sla_current.system_type IS
  'platform of the job''s agent: Windows, Linux or Mac';
COMMENT ON COLUMN vspc.job_sla_current.agent_connection_status IS
  'connection of the computer''s management agent: Online, Inaccessible, Rejected, Unknown '
  '(null if unknown)';
COMMENT ON COLUMN vspc.job_sla_current.agent_last_heartbeat_at IS
  'when the console last heard from the computer''s management agent (null if unknown)';
"""

JOB_RUNS = r"""
-- What BI tools read for sessions: job_run_facts with the names of organization and computer.
CREATE OR REPLACE VIEW vspc.job_runs AS
SELECT f.instance_uid, f.source, f.organization_uid, o.name AS organization_name,
       f.backup_agent_uid, a.computer_name, f.job_name, f.started_at, f.ended_at,
       f.duration_s, f.status, f.failure_message, f.backed_up_size, f.restore_points,
       (f.started_at AT TIME ZONE coalesce(
          (SELECT r.time_zone FROM vspc.report_settings r LIMIT 1), 'UTC'))::date AS day,
       j.system_type
FROM vspc.job_run_facts f
LEFT JOIN vspc.organizations o ON o.instance_uid = f.organization_uid
LEFT JOIN vspc.backup_agents a ON a.instance_uid = f.backup_agent_uid
LEFT JOIN vspc.backup_agent_jobs j ON j.instance_uid = f.instance_uid;

COMMENT ON VIEW vspc.job_runs IS
  'one row per observed job session with a final outcome (Success, Warning, Failed); a '
  'session seen Running and later finished is one row with its final status';
COMMENT ON COLUMN vspc.job_runs.instance_uid IS 'job instanceUid';
COMMENT ON COLUMN vspc.job_runs.source IS 'console the session was read from';
COMMENT ON COLUMN vspc.job_runs.organization_uid IS 'organization of the job';
COMMENT ON COLUMN vspc.job_runs.organization_name IS
  'organization name (null until /organizations was read)';
COMMENT ON COLUMN vspc.job_runs.backup_agent_uid IS 'agent (computer) of the job';
COMMENT ON COLUMN vspc.job_runs.computer_name IS
  'computer name (null until /infrastructure/backupAgents was read)';
COMMENT ON COLUMN vspc.job_runs.job_name IS 'job name when the session was observed';
COMMENT ON COLUMN vspc.job_runs.started_at IS
  'session start (the job''s lastRun); with instance_uid the key';
COMMENT ON COLUMN vspc.job_runs.ended_at IS
  'session end (lastEndTime); null when the console did not tell it';
COMMENT ON COLUMN vspc.job_runs.duration_s IS 'seconds from started_at to ended_at';
COMMENT ON COLUMN vspc.job_runs.status IS 'final outcome: Success, Warning or Failed';
COMMENT ON COLUMN vspc.job_runs.failure_message IS 'failure or warning message of the session';
COMMENT ON COLUMN vspc.job_runs.backed_up_size IS 'bytes in all restore points after the session';
COMMENT ON COLUMN vspc.job_runs.restore_points IS 'restore points after the session';
COMMENT ON COLUMN vspc.job_runs.day IS 'calendar day of started_at in report_settings.time_zone';
COMMENT ON COLUMN vspc.job_runs.system_type IS
  'platform of the job''s agent: Windows, Linux or Mac';
"""


def upgrade() -> None:
    for table in ("backup_agent_jobs", "backup_agent_job_snapshots"):
        op.add_column(
            table,
            sa.Column(
                "system_type",
                sa.Text(),
                nullable=False,
                server_default=sa.text("'Windows'"),
                comment=SYSTEM_TYPE_COMMENT,
            ),
            schema=S,
        )
        op.alter_column(table, "system_type", server_default=None, schema=S)
        op.alter_column(
            table, "target_type", comment=TARGET_TYPE[1], existing_comment=TARGET_TYPE[0], schema=S
        )
        op.alter_column(
            table,
            "schedule_events",
            comment=SCHEDULE_EVENTS[1],
            existing_comment=SCHEDULE_EVENTS[0],
            schema=S,
        )
    op.create_table_comment(
        "backup_agent_jobs", JOBS_TABLE[1], existing_comment=JOBS_TABLE[0], schema=S
    )
    op.add_column(
        "backup_agents",
        sa.Column(
            "agent_platform", sa.Text(), comment="Windows, Linux or Mac (the API's agentPlatform)"
        ),
        schema=S,
    )
    op.add_column(
        "backup_agents",
        sa.Column(
            "management_agent_uid",
            UUID(as_uuid=True),
            comment="management agent of the computer (management_agents.instance_uid)",
        ),
        schema=S,
    )
    op.add_column(
        "backup_agents",
        sa.Column("operation_mode", sa.Text(), comment="Server, Workstation, UnLicensed, Unknown"),
        schema=S,
    )
    op.alter_column(
        "backup_agents",
        "status",
        comment=AGENT_STATUS[1],
        existing_comment=AGENT_STATUS[0],
        schema=S,
    )
    op.create_table_comment(
        "backup_agents", AGENTS_TABLE[1], existing_comment=AGENTS_TABLE[0], schema=S
    )
    op.create_table(
        "management_agents",
        sa.Column(
            "instance_uid", UUID(as_uuid=True), nullable=False, comment="VSPC management agent uid"
        ),
        sa.Column(
            "source", sa.Text(), nullable=False, comment="console the row came from (VSPC_SOURCE)"
        ),
        sa.Column("host_name", sa.Text(), comment="name of the computer the agent runs on"),
        sa.Column("friendly_name", sa.Text(), comment="name the console shows for it"),
        sa.Column(
            "organization_uid", UUID(as_uuid=True), comment="organization the agent belongs to"
        ),
        sa.Column("location_uid", UUID(as_uuid=True), comment="location of the agent"),
        sa.Column("version", sa.Text(), comment="management agent version"),
        sa.Column(
            "status",
            sa.Text(),
            comment="health as reported: Healthy, Warning, Error, Inaccessible, Unknown "
            "(or a newer value as received)",
        ),
        sa.Column(
            "connection_status",
            sa.Text(),
            comment="Online, Inaccessible, Rejected, Unknown (or a newer value as received)",
        ),
        sa.Column(
            "last_heartbeat_at",
            TZ,
            comment="when the console last heard from the agent (lastHeartbeatTime)",
        ),
        sa.Column(
            "first_seen_at", TZ, nullable=False, comment="start of the run that first listed it"
        ),
        sa.Column(
            "updated_at", TZ, nullable=False, comment="start of the run that last changed it"
        ),
        sa.PrimaryKeyConstraint("instance_uid", name="pk_management_agents"),
        schema=S,
        comment="management agents (the console's link to each computer: connection, "
        "heartbeat) from GET /api/v3/infrastructure/managementAgents, refreshed by each sync",
    )
    op.execute("DROP VIEW vspc.job_sla_current")
    op.execute("DROP FUNCTION vspc.job_sla_at(timestamptz)")
    for sql in (JOB_SLA_AT, JOB_SLA_CURRENT, JOB_RUNS):
        op.execute(sql)


def downgrade() -> None:
    op.execute("DROP VIEW vspc.job_sla_current")
    op.execute("DROP VIEW vspc.job_runs")
    op.execute("DROP FUNCTION vspc.job_sla_at(timestamptz)")
    for sql in (JOB_SLA_AT_0007, JOB_SLA_CURRENT_0007, JOB_RUNS_0007):
        op.execute(sql)
    op.drop_table("management_agents", schema=S)
    op.create_table_comment(
        "backup_agents", AGENTS_TABLE[0], existing_comment=AGENTS_TABLE[1], schema=S
    )
    op.alter_column(
        "backup_agents",
        "status",
        comment=AGENT_STATUS[0],
        existing_comment=AGENT_STATUS[1],
        schema=S,
    )
    for column in ("operation_mode", "management_agent_uid", "agent_platform"):
        op.drop_column("backup_agents", column, schema=S)
    op.create_table_comment(
        "backup_agent_jobs", JOBS_TABLE[0], existing_comment=JOBS_TABLE[1], schema=S
    )
    for table in ("backup_agent_jobs", "backup_agent_job_snapshots"):
        op.alter_column(
            table,
            "schedule_events",
            comment=SCHEDULE_EVENTS[0],
            existing_comment=SCHEDULE_EVENTS[1],
            schema=S,
        )
        op.alter_column(
            table, "target_type", comment=TARGET_TYPE[0], existing_comment=TARGET_TYPE[1], schema=S
        )
        op.drop_column(table, "system_type", schema=S)
