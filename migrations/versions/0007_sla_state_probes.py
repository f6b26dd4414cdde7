"""job_sla_state's insert trigger: one index probe per job instead of a scan of the table.

The trigger of revision 0006 joined the batch's jobs with ``job_sla_state`` three times in one
statement. PL/pgSQL plans a statement without variables once per session and keeps the plan;
a first sync's early merge fires the trigger every 5,000 jobs into a table that was empty
when the plan was made, so every batch hashed the whole (growing) table three times: 17 ms
for the first batch, 76 ms for the twentieth at 100,000 jobs, quadratic in the number of jobs.

Now each job of the batch is looked up once, by key (``LIMIT 1`` keeps the planner from
turning the lookups into a join), and the statement adds the jobs that have no row; the jobs
whose sessions come after their row's are folded by a second statement, only when there are
any, from arrays whose size the planner sees (``plan_cache_mode = force_custom_plan``: the
statement has variables, so each call plans it for its own arrays). What the rows hold is
unchanged.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _revision_0006() -> ModuleType:
    path = Path(__file__).with_name("0006_job_sla_state.py")
    spec = importlib.util.spec_from_file_location("vspc_etl_migration_0006", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Per job of the batch (SUMMARY of revision 0006 over the new sessions): its row's latest
# start, if it has a row (one probe each). Jobs without one get their row here; jobs given a
# session at or before their latest are recomputed (late); the others are folded below.
INSERTED = """
CREATE OR REPLACE FUNCTION vspc.job_sla_state_inserted() RETURNS trigger
LANGUAGE plpgsql SET jit = off SET plan_cache_mode = force_custom_plan AS $$
DECLARE
  late uuid[];
  f_uid uuid[];
  f_last timestamptz[];
  f_ok_started timestamptz[];
  f_ok_ended timestamptz[];
  f_failed integer[];
  f_after_ok integer[];
  f_settled timestamptz[];
BEGIN
  WITH sessions AS (
    SELECT instance_uid, started_at, ended_at, status FROM new_sessions
  ), {summary},
  known AS MATERIALIZED (
    SELECT b.*, p.last_started_at AS stored_last
    FROM summary b
    LEFT JOIN LATERAL (
      SELECT p.last_started_at FROM vspc.job_sla_state p
      WHERE p.instance_uid = b.instance_uid LIMIT 1
    ) p ON true
  ), added AS (
    INSERT INTO vspc.job_sla_state ({columns})
    SELECT b.instance_uid, b.last_started, b.ok_started, b.ok_ended, b.failed_after_ok, b.settled
    FROM known b WHERE b.stored_last IS NULL
  )
  SELECT array_agg(b.instance_uid) FILTER (WHERE b.first_started <= b.stored_last),
    array_agg(b.instance_uid) FILTER (WHERE b.first_started > b.stored_last),
    array_agg(b.last_started) FILTER (WHERE b.first_started > b.stored_last),
    array_agg(b.ok_started) FILTER (WHERE b.first_started > b.stored_last),
    array_agg(b.ok_ended) FILTER (WHERE b.first_started > b.stored_last),
    array_agg(b.failed) FILTER (WHERE b.first_started > b.stored_last),
    array_agg(b.failed_after_ok) FILTER (WHERE b.first_started > b.stored_last),
    array_agg(b.settled) FILTER (WHERE b.first_started > b.stored_last)
  INTO late, f_uid, f_last, f_ok_started, f_ok_ended, f_failed, f_after_ok, f_settled
  FROM known b;
  IF f_uid IS NOT NULL THEN
    UPDATE vspc.job_sla_state p SET
      last_started_at = greatest(p.last_started_at, b.last_started),
      ok_started_at = CASE WHEN b.ok_started IS NULL THEN p.ok_started_at ELSE b.ok_started END,
      ok_ended_at = CASE WHEN b.ok_started IS NULL THEN p.ok_ended_at ELSE b.ok_ended END,
      failures = CASE WHEN b.ok_started IS NULL THEN p.failures + b.failed
                      ELSE b.failed_after_ok END,
      settled_at = greatest(p.settled_at, b.settled)
    FROM unnest(f_uid, f_last, f_ok_started, f_ok_ended, f_failed, f_after_ok, f_settled)
      AS b (instance_uid, last_started, ok_started, ok_ended, failed, failed_after_ok, settled)
    WHERE p.instance_uid = b.instance_uid;
  END IF;
  PERFORM vspc.job_sla_state_recompute(late);
  RETURN NULL;
END
$$
"""


def upgrade() -> None:
    r0006 = _revision_0006()
    op.execute(INSERTED.format(summary=r0006.SUMMARY.strip(), columns=r0006.STATE_COLUMNS))


def downgrade() -> None:
    r0006 = _revision_0006()
    # CREATE OR REPLACE sets the function's SET options anew (plan_cache_mode goes).
    op.execute(r0006.INSERTED.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1))
