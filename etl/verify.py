"""The warehouse's invariants, checked with read-only SQL (``vspc-etl verify``, chaos tests).

    one_current_version      at most one version per job has ``valid_to IS NULL``
    versions_meet            a job's versions never overlap and leave no gap: each ``valid_to``
                             is the next version's ``valid_from``; only the last is open
    job_is_current_version   ``backup_agent_jobs`` holds exactly the current versions, column
                             for column (``raw`` included)
    deleted_iff_tombstone    ``deleted_at`` is set iff the current version is a tombstone, and
                             then equals the tombstone's ``valid_from``
    change_from_success      every version, job row and reject was written by a run recorded
                             ``success`` (a run's changes commit with its success, or not at all)
    run_finished             every ``etl_runs`` row is finished unless its process is alive
    known_platform           every job and version has a ``system_type`` of Windows, Linux or
                             Mac (the collection it was read from)
    one_platform_per_job     all versions of a job have one ``system_type``: a job never moves
                             between platforms, so deletions per platform never miss one
    point_gone_by_full_read  a restore point's ``gone_at`` is the start of a successful run of
                             its source that read every point completely and applied gone_at
                             (``restore_points_gone`` recorded), never before ``first_seen_at``
    point_live_is_listed     a restore point with ``gone_at`` null was listed by the last such
                             complete full read of its source or by a later run

A run's process is alive while it holds its source's sync lock: the two-key advisory lock
``(SYNC_LOCK_CLASS, hashtext(source))`` of :mod:`etl.load.runs`, which PostgreSQL releases when
the session ends, however the process died. A ``running`` row without that lock, or older than
another ``running`` row of its source, is an orphan.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, text

from etl.load.runs import SYNC_LOCK_CLASS
from etl.load.schema import BUSINESS

JOBS = "vspc.backup_agent_jobs"
SNAPSHOTS = "vspc.backup_agent_job_snapshots"
RUNS = "vspc.etl_runs"
REJECTS = "vspc.etl_rejects"
POINTS = "vspc.restore_points"

_ONLY = "(CAST(:source AS text) IS NULL OR {t}.source = CAST(:source AS text))"
_DATA_COLUMNS = [c for c in BUSINESS if c != "instance_uid"]


@dataclass(frozen=True)
class Violation:
    """One broken invariant: which, about what (a job uid or a run id), and how."""

    invariant: str
    subject: str
    detail: str

    def __str__(self) -> str:
        return f"{self.invariant}: {self.subject}: {self.detail}"


# Each check selects (subject, detail) for every row that breaks its invariant.
_CHECKS: dict[str, str] = {
    "one_current_version": f"""
        SELECT s.instance_uid::text, count(*) || ' versions have valid_to NULL'
        FROM {SNAPSHOTS} s WHERE s.valid_to IS NULL AND {_ONLY.format(t="s")}
        GROUP BY s.instance_uid HAVING count(*) > 1""",
    "versions_meet": f"""
        SELECT v.instance_uid::text, CASE
            WHEN v.valid_to <= v.valid_from THEN
              format('version from %s ends at %s, not after it', v.valid_from, v.valid_to)
            WHEN v.next_from IS NULL THEN
              format('last version (from %s) is closed at %s: the job has no current version',
                     v.valid_from, v.valid_to)
            WHEN v.valid_to IS NULL THEN
              format('version from %s is open but a later one starts at %s',
                     v.valid_from, v.next_from)
            WHEN v.valid_to > v.next_from THEN
              format('version from %s overlaps the next: ends %s, next starts %s',
                     v.valid_from, v.valid_to, v.next_from)
            ELSE format('gap after the version from %s: ends %s, next starts %s',
                        v.valid_from, v.valid_to, v.next_from) END
        FROM (SELECT s.instance_uid, s.valid_from, s.valid_to,
                     lead(s.valid_from) OVER (PARTITION BY s.instance_uid
                                              ORDER BY s.valid_from) AS next_from
              FROM {SNAPSHOTS} s WHERE {_ONLY.format(t="s")}) v
        WHERE v.valid_to <= v.valid_from
           OR (v.next_from IS NULL AND v.valid_to IS NOT NULL)
           OR (v.next_from IS NOT NULL AND v.valid_to IS DISTINCT FROM v.next_from)""",
    "job_is_current_version": f"""
        SELECT coalesce(j.instance_uid, s.instance_uid)::text, CASE
            WHEN s.instance_uid IS NULL THEN 'job row without a current version'
            WHEN j.instance_uid IS NULL THEN 'current version without a job row'
            ELSE 'job row differs from its current version' END
        FROM (SELECT * FROM {JOBS} j WHERE {_ONLY.format(t="j")}) j
        FULL JOIN (SELECT * FROM {SNAPSHOTS} s
                   WHERE s.valid_to IS NULL AND {_ONLY.format(t="s")}) s
          ON s.instance_uid = j.instance_uid
        WHERE j.instance_uid IS NULL OR s.instance_uid IS NULL
           OR ({", ".join(f"j.{c}" for c in _DATA_COLUMNS)})
              IS DISTINCT FROM ({", ".join(f"s.{c}" for c in _DATA_COLUMNS)})""",
    "deleted_iff_tombstone": f"""
        SELECT j.instance_uid::text, CASE
            WHEN j.deleted_at IS NULL THEN
              format('deleted_at is null but the current version (from %s) is a tombstone',
                     s.valid_from)
            WHEN NOT s.is_deleted THEN
              format('deleted_at is %s but the current version (from %s) is not a tombstone',
                     j.deleted_at, s.valid_from)
            ELSE format('deleted_at is %s but the tombstone is from %s',
                        j.deleted_at, s.valid_from) END
        FROM {JOBS} j JOIN {SNAPSHOTS} s
          ON s.instance_uid = j.instance_uid AND s.valid_to IS NULL
        WHERE {_ONLY.format(t="j")}
          AND ((j.deleted_at IS NULL) = s.is_deleted
               OR (s.is_deleted AND j.deleted_at <> s.valid_from))""",
    "change_from_success": f"""
        SELECT w.what, format('written by run %s, which is %s', w.run_id,
                              coalesce(r.status, 'not in etl_runs'))
        FROM (SELECT 'version ' || s.instance_uid || ' from ' || s.valid_from AS what, s.run_id
              FROM {SNAPSHOTS} s WHERE {_ONLY.format(t="s")}
              UNION ALL
              SELECT 'job ' || j.instance_uid, j.last_run_id
              FROM {JOBS} j WHERE {_ONLY.format(t="j")}
              UNION ALL
              SELECT 'restore point ' || p.instance_uid, p.last_run_id
              FROM {POINTS} p WHERE {_ONLY.format(t="p")}
              UNION ALL
              SELECT 'reject ' || x.reject_id, x.run_id FROM {REJECTS} x
              WHERE CAST(:source AS text) IS NULL
                 OR x.run_id IN (SELECT run_id FROM {RUNS} WHERE source = :source)) w
        LEFT JOIN {RUNS} r ON r.run_id = w.run_id
        WHERE r.status IS DISTINCT FROM 'success'""",
    "known_platform": f"""
        SELECT k.instance_uid::text, format('%s has system_type %s', k.what,
                                            coalesce(quote_literal(k.system_type), 'null'))
        FROM (SELECT j.instance_uid, j.system_type, 'the job row' AS what FROM {JOBS} j
              WHERE {_ONLY.format(t="j")}
              UNION ALL
              SELECT s.instance_uid, s.system_type, 'the version from ' || s.valid_from
              FROM {SNAPSHOTS} s WHERE {_ONLY.format(t="s")}) k
        WHERE k.system_type IS NULL OR k.system_type NOT IN ('Windows', 'Linux', 'Mac')""",
    "one_platform_per_job": f"""
        SELECT s.instance_uid::text,
               'versions of ' || string_agg(DISTINCT s.system_type, ', ' ORDER BY s.system_type)
        FROM {SNAPSHOTS} s WHERE {_ONLY.format(t="s")}
        GROUP BY s.instance_uid HAVING count(DISTINCT s.system_type) > 1""",
    "point_gone_by_full_read": f"""
        SELECT p.instance_uid::text, CASE
            WHEN p.gone_at < p.first_seen_at THEN
              format('gone_at %s is before first_seen_at %s', p.gone_at, p.first_seen_at)
            ELSE format('gone_at %s is the start of no successful complete full read of %s',
                        p.gone_at, p.source) END
        FROM {POINTS} p
        WHERE p.gone_at IS NOT NULL AND {_ONLY.format(t="p")}
          AND (p.gone_at < p.first_seen_at OR NOT EXISTS (
            SELECT 1 FROM {RUNS} r
            WHERE r.source = p.source AND r.started_at = p.gone_at AND r.status = 'success'
              AND r.restore_points_read = 'full' AND r.restore_points_gone IS NOT NULL))""",
    "point_live_is_listed": f"""
        SELECT p.instance_uid::text,
               format('gone_at is null, but complete full read %s did not list it (last '
                      'written by run %s)', f.run_id, p.last_run_id)
        FROM {POINTS} p
        JOIN (SELECT r.source, max(r.run_id) AS run_id FROM {RUNS} r
              WHERE r.status = 'success' AND r.restore_points_read = 'full'
                AND r.restore_points_gone IS NOT NULL GROUP BY r.source) f
          ON f.source = p.source
        WHERE p.gone_at IS NULL AND p.last_run_id < f.run_id AND {_ONLY.format(t="p")}""",
}

# Not MVCC: pg_locks shows the locks of this instant, the rows their snapshot's.
_RUN_FINISHED = f"""
    SELECT 'run ' || r.run_id, CASE
        WHEN r.status = 'running' THEN
          format('%s run of %s started %s: no live process holds the sync lock of its source',
                 r.status, r.source, r.started_at)
        ELSE format('%s run of %s has no finished_at', r.status, r.source) END
    FROM {RUNS} r
    WHERE {_ONLY.format(t="r")} AND (
      (r.status <> 'running' AND r.finished_at IS NULL)
      OR (r.status = 'running' AND (
        r.run_id < (SELECT max(o.run_id) FROM {RUNS} o
                    WHERE o.source = r.source AND o.status = 'running')
        OR NOT EXISTS (
          SELECT 1 FROM pg_locks l
          WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
            AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
            AND l.classid = CAST(:lock_class AS bigint)::oid
            AND l.objid = hashtext(r.source)::oid))))"""


def check_invariants(
    db: Engine | Connection, source: str | None = None, *, limit: int = 20
) -> list[Violation]:
    """Every violation of the invariants above (for one ``source``, or all); [] when sound.

    Given an engine, the data checks read one consistent snapshot (repeatable read, read only)
    while syncs may be writing. At most ``limit`` violations per invariant are listed, the
    last saying how many more there are.
    """
    if isinstance(db, Engine):
        with db.connect() as conn:
            conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                conn.execute(text("SET TRANSACTION READ ONLY"))
                found = _data_violations(conn, source, limit)
            with conn.begin():
                first = _run_violations(conn, source, limit)
            if first:
                with conn.begin():
                    found += _confirmed(first, _run_violations(conn, source, limit))
            return found
    found = _data_violations(db, source, limit)
    first = _run_violations(db, source, limit)
    return found + (_confirmed(first, _run_violations(db, source, limit)) if first else [])


def warehouse_counts(db: Engine | Connection, source: str | None = None) -> dict[str, int]:
    """How much was checked: jobs, versions, restore points, runs (of ``source``, or all)."""
    sql = text(
        f"SELECT (SELECT count(*) FROM {JOBS} j WHERE {_ONLY.format(t='j')}),"
        f" (SELECT count(*) FROM {SNAPSHOTS} s WHERE {_ONLY.format(t='s')}),"
        f" (SELECT count(*) FROM {POINTS} p WHERE {_ONLY.format(t='p')}),"
        f" (SELECT count(*) FROM {RUNS} r WHERE {_ONLY.format(t='r')})"
    )
    if isinstance(db, Engine):
        with db.connect() as conn:
            jobs, versions, points, runs = conn.execute(sql, {"source": source}).one()
    else:
        jobs, versions, points, runs = db.execute(sql, {"source": source}).one()
    return {"jobs": int(jobs), "versions": int(versions), "points": int(points), "runs": int(runs)}


def _data_violations(conn: Connection, source: str | None, limit: int) -> list[Violation]:
    found: list[Violation] = []
    for name, sql in _CHECKS.items():
        found += _select(conn, name, sql, {"source": source}, limit)
    return found


def _run_violations(conn: Connection, source: str | None, limit: int) -> list[Violation]:
    params = {"source": source, "lock_class": SYNC_LOCK_CLASS}
    return _select(conn, "run_finished", _RUN_FINISHED, params, limit)


def _confirmed(first: list[Violation], second: list[Violation]) -> list[Violation]:
    # A run that commits between the row snapshot and the pg_locks read looks orphaned once;
    # a real orphan is still there on a second look.
    again = {v.subject for v in second}
    return [v for v in first if v.subject in again or v.subject == "more"]


def _select(
    conn: Connection, name: str, sql: str, params: dict[str, Any], limit: int
) -> list[Violation]:
    rows = conn.execute(
        text(
            f"SELECT subject, detail, count(*) OVER () FROM ({sql}) AS v(subject, detail) "
            "ORDER BY subject LIMIT :limit"
        ),
        {**params, "limit": limit},
    ).all()
    found = [Violation(name, subject, detail) for subject, detail, _ in rows]
    total = int(rows[0][2]) if rows else 0
    if total > len(rows):
        found.append(Violation(name, "more", f"and {total - len(rows)} more like these"))
    return found
