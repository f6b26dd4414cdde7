"""Keep the reporting tables in step with the snapshots, inside the sync's merge transaction.

VSPC keeps no session history for agent jobs: each snapshot version whose status is final
(``Success``, ``Warning``, ``Failed``) describes the session that started at its ``last_run``.
``record_job_runs`` turns the versions this run opened (the staged rows of the jobs in
``stage_changed``) into ``job_run_facts`` rows, one per (job, ``last_run``), the latest version
winning; then ``vspc.refresh_sla_daily`` (migration 0004) recomputes the completed days those
sessions touch, and any completed day not yet computed. Today's rows are computed when
``sla_daily`` is read. ``rebuild`` does the same from the whole history (repairs, hand-built
tests). Restore points need no step here: whatever writes ``restore_points`` for a completed
day (a late-indexed point, one first read after midnight) recomputes that day through the
table's triggers (``etl/sql/functions/restore_points_changed.sql``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, text

log = logging.getLogger(__name__)

_COLUMNS = (
    "instance_uid, started_at, source, organization_uid, backup_agent_uid, job_name, ended_at, "
    "duration_s, status, failure_message, backed_up_size, restore_points, run_id"
)
_ALL = [c.strip() for c in _COLUMNS.split(",")]
# run_id keeps the run that first recorded the session; the rest follows the latest look.
_UPDATABLE = _ALL[2:-1]

# An end before the start belongs to an earlier session (the console keeps the previous
# lastEndTime while a job runs): unknown, so null.
_SESSION = """
  s.instance_uid, s.last_run, s.source, s.organization_uid, s.backup_agent_uid, s.name,
  CASE WHEN s.last_end_time >= s.last_run THEN s.last_end_time END,
  CASE WHEN s.last_end_time >= s.last_run
        AND s.last_end_time - s.last_run < interval '2147483647 seconds'  -- fits duration_s
       THEN round(extract(epoch FROM s.last_end_time - s.last_run))::integer END,
  s.status, s.failure_message, s.backed_up_size, s.restore_points"""
_FINAL = (
    "NOT s.is_deleted AND s.last_run IS NOT NULL AND s.status IN ('Success', 'Warning', 'Failed')"
)

# The whole history: the latest version describing a session wins, run_id is the first's.
_ALL_SESSIONS = f"""
SELECT DISTINCT ON (s.instance_uid, s.last_run) {_SESSION},
  min(s.run_id) OVER (PARTITION BY s.instance_uid, s.last_run)
FROM vspc.backup_agent_job_snapshots s
WHERE {_FINAL}
ORDER BY s.instance_uid, s.last_run, s.valid_from DESC
"""

_SET = ", ".join(f"{c} = excluded.{c}" for c in _UPDATABLE)
_DIFFERS = (
    f"({', '.join(f'f.{c}' for c in _UPDATABLE)}) "
    f"IS DISTINCT FROM ({', '.join(f'excluded.{c}' for c in _UPDATABLE)})"
)

# The versions this run opened are the staged rows of the jobs it changed (``stage_changed``;
# those of the jobs the early merge wrote have their sessions already, see SESSIONS_OF_NEW,
# which also keeps the lastRun of each job's previous version): read there, not from the
# large snapshot table. A session is new unless the previous version had the same lastRun:
# only those few are looked up among the stored sessions (a large, mostly cold index), each
# with its own index probe (LIMIT 1 keeps the planner from turning the lookups into a join
# over the whole table). A renamed job or a new restore point rewrites its session but does
# not move sla_daily.
_THIS_RUN = f"""
WITH sessions AS (
  SELECT {_SESSION}, CAST(:run_id AS bigint) AS run_id,
    s.last_run IS NOT DISTINCT FROM s.prev_last_run AS seen
  FROM (
    SELECT l.*, CAST(:source AS text) AS source, false AS is_deleted, c.prev_last_run
    FROM stage_jobs l JOIN stage_changed c ON c.instance_uid = l.instance_uid AND NOT c.merged
  ) s
  WHERE {_FINAL}
),
changed AS (
  SELECT {_COLUMNS}, true AS counted_differently
  FROM sessions AS p ({_COLUMNS}, seen) WHERE NOT seen
  UNION ALL
  SELECT {", ".join(f"p.{c}" for c in _ALL)},
    (f.status, f.ended_at, f.organization_uid)
      IS DISTINCT FROM (p.status, p.ended_at, p.organization_uid)
  FROM sessions AS p ({_COLUMNS}, seen)
  LEFT JOIN LATERAL (
    SELECT * FROM vspc.job_run_facts f
    WHERE f.instance_uid = p.instance_uid AND f.started_at = p.started_at LIMIT 1
  ) f ON true
  WHERE p.seen AND (f.instance_uid IS NULL
    OR ({", ".join(f"f.{c}" for c in _UPDATABLE)})
       IS DISTINCT FROM ({", ".join(f"p.{c}" for c in _UPDATABLE)}))
),
-- In key order: each leaf page of the key, and of the indexes that follow time, is visited
-- once in a row instead of at random (~10 ms less for a daily sync's ~7,000 sessions).
written AS (
  INSERT INTO vspc.job_run_facts AS f ({_COLUMNS})
  SELECT {_COLUMNS} FROM changed ORDER BY started_at, instance_uid
  ON CONFLICT (instance_uid, started_at) DO UPDATE SET {_SET} WHERE {_DIFFERS}
  RETURNING 1
)
SELECT (SELECT count(*) FROM written),
       (SELECT min(started_at) FROM changed WHERE counted_differently)
"""

# For the early merge (etl.load.merge._EARLY): the sessions of jobs new to the warehouse,
# from the rows it writes (``b``): with no previous version, every one is new, as _THIS_RUN
# would find. Two CTEs to add to its WITH; the earliest session is then
# ``SELECT min(started_at) FROM new_sessions``.
SESSIONS_OF_NEW = f"""new_sessions ({_COLUMNS}) AS (
  SELECT {_SESSION}, CAST(%(run_id)s AS bigint) AS run_id
  FROM (
    SELECT b.*, CAST(%(source)s AS text) AS source, false AS is_deleted FROM b
  ) s
  WHERE {_FINAL}
), sessions_written AS (
  INSERT INTO vspc.job_run_facts AS f ({_COLUMNS})
  SELECT * FROM new_sessions ORDER BY started_at, instance_uid
  ON CONFLICT (instance_uid, started_at) DO UPDATE SET {_SET} WHERE {_DIFFERS}
)"""

# After the table is emptied: every session of the whole history, once.
_EVERYTHING = f"""
INSERT INTO vspc.job_run_facts ({_COLUMNS})
{_ALL_SESSIONS}
"""


@dataclass(frozen=True)
class ReportingResult:
    """Sessions written (new or changed) and daily rows recomputed."""

    sessions: int
    days_rows: int


def record_job_runs(
    conn: Connection,
    *,
    now: datetime,
    source: str,
    run_id: int,
    earlier: datetime | None = None,
) -> ReportingResult:
    """Sessions from the versions this run opened, then the SLA days they touch.

    Runs inside the caller's transaction, after :func:`etl.load.merge.merge`, which leaves
    the changed jobs in the temp table ``stage_changed`` and their records in ``stage_jobs``.
    ``earlier``: the earliest session the early merge wrote (``SESSIONS_OF_NEW``), if any.
    """
    started = time.perf_counter()
    params = {"source": source, "run_id": run_id}
    written, earliest = conn.execute(text(_THIS_RUN), params).one()
    recorded = time.perf_counter()
    # From the day of the earliest session counted differently, if any; the function also
    # computes the completed days since the last one it computed (today is never stored).
    since = min(t for t in (earliest, earlier, now) if t is not None)
    days = conn.execute(text("SELECT vspc.refresh_sla_daily(:since)"), {"since": since})
    result = ReportingResult(int(written), int(days.scalar_one()))
    log.debug(
        "reporting: %d session(s) written in %.0f ms; %d daily row(s) from %s in %.0f ms",
        result.sessions,
        (recorded - started) * 1000,
        result.days_rows,
        since.isoformat(),
        (time.perf_counter() - recorded) * 1000,
    )
    return result


def rebuild(conn: Connection) -> ReportingResult:
    """Derive every session from the whole snapshot history and recompute every day."""
    conn.execute(text("DELETE FROM vspc.job_run_facts"))
    written = conn.execute(text(_EVERYTHING)).rowcount
    days = conn.execute(text("SELECT vspc.refresh_sla_daily(NULL)")).scalar_one()
    return ReportingResult(int(written), int(days))
