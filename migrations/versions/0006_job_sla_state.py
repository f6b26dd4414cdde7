"""job_run_facts keyed by time; each job's SLA answer kept in job_sla_state by triggers.

The primary key ``(instance_uid, started_at)`` put each day's sessions at one leaf page per job:
a daily sync of 10,000 jobs wrote ~7,000 random leaf pages, each a full-page image in the WAL
after a checkpoint (~55 MB, ~0.2 s). Keyed ``(started_at, instance_uid)`` the sessions append
(the separate ``started_at`` index goes: the key serves its range scans).

``job_sla_at`` found each job's latest success and its failures since through that per-job
key. It now reads them from ``job_sla_state``, one row per job with sessions, which statement
triggers on ``job_run_facts`` keep exact whatever writes the sessions (a sync, ``rebuild``, a
repair by hand): sessions appended after a job's latest are folded in; anything else (a late
session, an outcome or end changed, a delete) recomputes the jobs concerned from their
sessions. A row's answer holds at every instant from ``settled_at`` (when its last counted
session became visible) on; for an earlier instant ``job_sla_at`` computes those jobs from
``job_run_facts``, read backwards from that instant in windows of 1, 2, 4, ... days until
each job has met its latest success.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "vspc"
TZ = sa.TIMESTAMP(timezone=True)
STATE_COLUMNS = "instance_uid, last_started_at, ok_started_at, ok_ended_at, failures, settled_at"

# Per job, over the rows of the relation ``sessions`` (instance_uid, started_at, ended_at,
# status): the latest success (Success or Warning with an end: job_sla_at's "ok"), the Failed
# sessions after it and in all, and when the last counted session became visible to
# job_sla_at (a success at its end, a failure at its end or, without one, its start). One
# aggregate pass; the success's end is read back by its key.
SUMMARY = """
summary AS (
  SELECT a.instance_uid, a.first_started, a.last_started, a.ok_started, e.ended_at AS ok_ended,
    (SELECT count(*) FROM unnest(a.failed_starts) AS x (started)
     WHERE x.started > coalesce(a.ok_started, '-infinity'))::integer AS failed_after_ok,
    coalesce(cardinality(a.failed_starts), 0) AS failed, a.settled
  FROM (
    SELECT f.instance_uid, min(f.started_at) AS first_started, max(f.started_at) AS last_started,
      max(f.started_at) FILTER (WHERE f.status IN ('Success', 'Warning')
                                  AND f.ended_at IS NOT NULL) AS ok_started,
      array_agg(f.started_at) FILTER (WHERE f.status = 'Failed') AS failed_starts,
      max(CASE WHEN f.status = 'Failed' THEN coalesce(f.ended_at, f.started_at)
               ELSE f.ended_at END) AS settled
    FROM sessions f GROUP BY f.instance_uid
  ) a
  LEFT JOIN sessions e ON e.instance_uid = a.instance_uid AND e.started_at = a.ok_started
)"""

RECOMPUTE = f"""
CREATE FUNCTION vspc.job_sla_state_recompute(jobs uuid[]) RETURNS void
LANGUAGE plpgsql SET jit = off AS $$
BEGIN
  IF coalesce(cardinality(jobs), 0) = 0 THEN
    RETURN;
  END IF;
  DELETE FROM vspc.job_sla_state WHERE instance_uid IN (SELECT unnest(jobs));
  INSERT INTO vspc.job_sla_state ({STATE_COLUMNS})
  WITH sessions AS (
    SELECT instance_uid, started_at, ended_at, status FROM vspc.job_run_facts
    WHERE instance_uid IN (SELECT unnest(jobs))
  ), {SUMMARY}
  SELECT instance_uid, last_started, ok_started, ok_ended, failed_after_ok, settled
  FROM summary;
END
$$
"""

# Sessions appended after every stored session of their job (what a sync writes) are folded
# into its row (an UPDATE: the table's free space makes it in-page); a job's first sessions
# add its row; a job given an earlier session is recomputed. One statement: every part sees
# the rows as they were before it.
INSERTED = f"""
CREATE FUNCTION vspc.job_sla_state_inserted() RETURNS trigger
LANGUAGE plpgsql SET jit = off AS $$
DECLARE
  late uuid[];
BEGIN
  WITH sessions AS (
    SELECT instance_uid, started_at, ended_at, status FROM new_sessions
  ), {SUMMARY},
  folded AS (
    UPDATE vspc.job_sla_state p SET
      last_started_at = greatest(p.last_started_at, b.last_started),
      ok_started_at = CASE WHEN b.ok_started IS NULL THEN p.ok_started_at ELSE b.ok_started END,
      ok_ended_at = CASE WHEN b.ok_started IS NULL THEN p.ok_ended_at ELSE b.ok_ended END,
      failures = CASE WHEN b.ok_started IS NULL THEN p.failures + b.failed
                      ELSE b.failed_after_ok END,
      settled_at = greatest(p.settled_at, b.settled)
    FROM summary b
    WHERE p.instance_uid = b.instance_uid AND b.first_started > p.last_started_at
  ), added AS (
    INSERT INTO vspc.job_sla_state ({STATE_COLUMNS})
    SELECT b.instance_uid, b.last_started, b.ok_started, b.ok_ended, b.failed_after_ok, b.settled
    FROM summary b
    WHERE NOT EXISTS (SELECT 1 FROM vspc.job_sla_state p WHERE p.instance_uid = b.instance_uid)
  )
  SELECT array_agg(b.instance_uid) INTO late
  FROM summary b JOIN vspc.job_sla_state p ON p.instance_uid = b.instance_uid
  WHERE b.first_started <= p.last_started_at;
  PERFORM vspc.job_sla_state_recompute(late);
  RETURN NULL;
END
$$
"""

# Only a change of what the answer reads (key, outcome, end) recomputes: a renamed job or a
# new restore point rewrites sessions without touching job_sla_state.
UPDATED = """
CREATE FUNCTION vspc.job_sla_state_updated() RETURNS trigger
LANGUAGE plpgsql SET jit = off AS $$
BEGIN
  PERFORM vspc.job_sla_state_recompute(ARRAY(
    SELECT DISTINCT instance_uid FROM (
      (SELECT instance_uid, started_at, ended_at, status FROM old_sessions
       EXCEPT SELECT instance_uid, started_at, ended_at, status FROM new_sessions)
      UNION ALL
      (SELECT instance_uid, started_at, ended_at, status FROM new_sessions
       EXCEPT SELECT instance_uid, started_at, ended_at, status FROM old_sessions)
    ) d));
  RETURN NULL;
END
$$
"""

DELETED = """
CREATE FUNCTION vspc.job_sla_state_deleted() RETURNS trigger
LANGUAGE plpgsql SET jit = off AS $$
BEGIN
  PERFORM vspc.job_sla_state_recompute(ARRAY(SELECT DISTINCT instance_uid FROM old_sessions));
  RETURN NULL;
END
$$
"""

TRUNCATED = """
CREATE FUNCTION vspc.job_sla_state_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM vspc.job_sla_state;
  RETURN NULL;
END
$$
"""

TRIGGERS = """
CREATE TRIGGER job_sla_state_insert AFTER INSERT ON vspc.job_run_facts
  REFERENCING NEW TABLE AS new_sessions
  FOR EACH STATEMENT EXECUTE FUNCTION vspc.job_sla_state_inserted();
CREATE TRIGGER job_sla_state_update AFTER UPDATE ON vspc.job_run_facts
  REFERENCING OLD TABLE AS old_sessions NEW TABLE AS new_sessions
  FOR EACH STATEMENT EXECUTE FUNCTION vspc.job_sla_state_updated();
CREATE TRIGGER job_sla_state_delete AFTER DELETE ON vspc.job_run_facts
  REFERENCING OLD TABLE AS old_sessions
  FOR EACH STATEMENT EXECUTE FUNCTION vspc.job_sla_state_deleted();
CREATE TRIGGER job_sla_state_truncate AFTER TRUNCATE ON vspc.job_run_facts
  FOR EACH STATEMENT EXECUTE FUNCTION vspc.job_sla_state_truncated();
"""

# The live jobs at as_of with their kept answer. A job whose answer is not settled by as_of
# (a past instant; a session that ends after it) is computed from its sessions instead, read
# backwards from as_of in windows of 1, 2, 4, ... days until each such job has met its
# latest success then (or the oldest session is passed): most jobs run daily, so a past
# instant reads days of sessions, not the year before it. Per window and job: the latest
# success in it and the visible failures after it (all of them, if it has none).
JOB_SLA_AT = """
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
$$
"""

FUNCTIONS = {
    "job_sla_state_recompute(uuid[])": (
        RECOMPUTE,
        "recompute the job_sla_state rows of these jobs from job_run_facts",
    ),
    "job_sla_state_inserted()": (
        INSERTED,
        "trigger: fold sessions appended to a job into job_sla_state; recompute late ones",
    ),
    "job_sla_state_updated()": (
        UPDATED,
        "trigger: recompute job_sla_state for sessions whose key, status or end changed",
    ),
    "job_sla_state_deleted()": (
        DELETED,
        "trigger: recompute job_sla_state for the jobs whose sessions were deleted",
    ),
    "job_sla_state_truncated()": (TRUNCATED, "trigger: empty job_sla_state with job_run_facts"),
}


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
    op.create_table(
        "job_sla_state",
        sa.Column("instance_uid", UUID, nullable=False, comment="job instanceUid"),
        sa.Column(
            "last_started_at", TZ, nullable=False, comment="start of the job's latest session"
        ),
        sa.Column(
            "ok_started_at",
            TZ,
            comment="start of its latest Success or Warning session with an end",
        ),
        sa.Column("ok_ended_at", TZ, comment="end of that session (job_sla_at.last_success_at)"),
        sa.Column(
            "failures",
            sa.Integer,
            nullable=False,
            comment="Failed sessions started after it (job_sla_at.consecutive_failures)",
        ),
        sa.Column(
            "settled_at",
            TZ,
            comment="the answer holds from this instant on: the latest end (a failure "
            "without one: its start) of the sessions counted",
        ),
        sa.PrimaryKeyConstraint("instance_uid", name="pk_job_sla_state"),
        schema=S,
        comment="each job's latest success and failures since, from job_run_facts, kept by "
        "triggers on it (job_sla_current reads it); derived: SELECT "
        "vspc.job_sla_state_recompute(array_agg(DISTINCT instance_uid)) FROM "
        "vspc.job_run_facts rebuilds it",
    )
    # Room on each page for a new version of its rows: a sync's update stays in the page.
    op.execute("ALTER TABLE vspc.job_sla_state SET (fillfactor = 50)")
    for signature, (definition, comment) in FUNCTIONS.items():
        op.execute(definition)
        op.execute(f"COMMENT ON FUNCTION vspc.{signature} IS {_quote(comment)}")
    # Every job with sessions, as the table's comment tells a user to rebuild it.
    op.execute(
        "SELECT vspc.job_sla_state_recompute(array_agg(DISTINCT instance_uid)) "
        "FROM vspc.job_run_facts"
    )
    op.execute(TRIGGERS)
    op.execute(JOB_SLA_AT)
    # Sessions append at the end of the key; its range scans replace the started_at index.
    op.execute("ALTER TABLE vspc.job_run_facts DROP CONSTRAINT pk_job_run_facts")
    op.execute(
        "ALTER TABLE vspc.job_run_facts "
        "ADD CONSTRAINT pk_job_run_facts PRIMARY KEY (started_at, instance_uid)"
    )
    op.drop_index("ix_job_run_facts_started_at", table_name="job_run_facts", schema=S)


def downgrade() -> None:
    op.create_index("ix_job_run_facts_started_at", "job_run_facts", ["started_at"], schema=S)
    op.execute("ALTER TABLE vspc.job_run_facts DROP CONSTRAINT pk_job_run_facts")
    op.execute(
        "ALTER TABLE vspc.job_run_facts "
        "ADD CONSTRAINT pk_job_run_facts PRIMARY KEY (instance_uid, started_at)"
    )
    r0002 = _revision_0002()  # job_sla_at as it was
    op.execute(r0002.JOB_SLA_AT.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1))
    for name in ("insert", "update", "delete", "truncate"):
        op.execute(f"DROP TRIGGER job_sla_state_{name} ON vspc.job_run_facts")
    for signature in FUNCTIONS:
        op.execute(f"DROP FUNCTION vspc.{signature}")
    op.drop_table("job_sla_state", schema=S)
