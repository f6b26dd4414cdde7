"""Merge the staged extract into the warehouse: set-based SQL, one transaction, no row loops.

Order inside the transaction:
1. Dedupe ``stage_jobs``: one row per job (the last copy read wins if paging served it twice).
   Jobs an :class:`EarlyMerge` already wrote whose staged copy gave way to a later one (or to
   a re-read) are taken back out, and merged below like any other.
2. One comparison with ``backup_agent_jobs`` puts new, changed and returning jobs in
   ``stage_changed``. Jobs new to the warehouse are written by the one statement that writes
   a new job with its first version, fingerprint and sessions (``_writes_new``, which the
   early merge's batches run too); the changed and returning ones are upserted. Jobs staged
   as ``same`` (their record's fingerprint matched, see ``etl_job_fingerprints``) are
   unchanged without a comparison; the fingerprints of the fully staged jobs are stored for
   the next run.
3. Close the current snapshot of each changed job and open its new version.
4. Deletions, per platform (a complete read of that platform's collection only, within
   ``max_delete_ratio`` of its live jobs): soft-delete, tombstone.
5. Rejects into ``etl_rejects``.
The caller finishes the ``etl_runs`` row in the same transaction and commits.

On a first sync (the source has no live job), :class:`EarlyMerge` writes the jobs new to the
warehouse batch by batch while later pages are still read, in the same transaction (the run's
only one then); the steps above skip the jobs it wrote (``stage_merged``), which count as
inserted all the same. When to start a batch is the loader's decision (``etl.load.loader``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import datetime
from typing import Any

import psycopg
from sqlalchemy import Connection, TextClause, text

from etl.load.reporting import SESSIONS_OF_NEW
from etl.load.schema import BUSINESS
from etl.load.stage import distinct_keys, write_rejects_sql
from etl.testhook import pause

log = logging.getLogger(__name__)

JOBS = "vspc.backup_agent_jobs"
SNAPSHOTS = "vspc.backup_agent_job_snapshots"
FINGERPRINTS = "vspc.etl_job_fingerprints"

_COLS = ", ".join(BUSINESS)
_UPDATABLE = [c for c in BUSINESS if c != "instance_uid"]
_SET = ",\n    ".join(f"{c} = excluded.{c}" for c in _UPDATABLE)

# A re-read may have staged a job twice: the copy read last wins. Usually deletes nothing,
# and costs one hash aggregate over two narrow columns.
_DEDUPE = """
DELETE FROM stage_jobs s USING (
  SELECT instance_uid, max(seq) AS last_seq FROM stage_jobs
  GROUP BY instance_uid HAVING count(*) > 1
) d WHERE s.instance_uid = d.instance_uid AND s.seq < d.last_seq
"""

# A job the early merge wrote whose staged copy is gone (a later copy or a re-read replaced
# it) is taken back out: written by this transaction, it leaves no trace, and the copy that
# stayed is merged like any other. Usually deletes nothing.
_UNMERGE = f"""
WITH gone AS (
  DELETE FROM stage_merged m
  WHERE NOT EXISTS (SELECT 1 FROM stage_jobs s WHERE s.seq = m.seq)
  RETURNING instance_uid
), jobs AS (
  DELETE FROM {JOBS} j USING gone g WHERE j.instance_uid = g.instance_uid
), versions AS (
  DELETE FROM {SNAPSHOTS} s USING gone g
  WHERE s.instance_uid = g.instance_uid AND s.run_id = :run_id
), sessions AS (
  DELETE FROM vspc.job_run_facts f USING gone g
  WHERE f.instance_uid = g.instance_uid AND f.run_id = :run_id
)
DELETE FROM {FINGERPRINTS} f USING gone g WHERE f.instance_uid = g.instance_uid
"""


# The one statement that writes jobs new to the warehouse: the job, its first version, its
# fingerprint, its sessions (as etl.load.reporting would), and the staged copy written
# (stage_merged). ``{batch}`` selects the candidates, one staged row per job; ``b`` keeps those
# the warehouse has never seen (a job row of the uid, of any source, live or deleted, or any
# version of it, e.g. one left by a hand-built history, sends it to the comparison). Every
# part reads ``b`` alone: joined with each other, the parts were joined by nested loops (a
# range of the stage, which has no statistics, looks like ~30 rows to the planner: 18 s for
# the first batch of 5,000). The lookups are one probe per job (LIMIT 1), whatever the planner
# believes of the growing tables. A job another source's sync writes at the same moment fails
# the insert (and the run) instead of being skipped: the next run merges it.
def _writes_new(batch: str, also: str = "") -> str:
    return f"""
WITH b AS MATERIALIZED (
  SELECT s.* FROM ({batch}) s
  LEFT JOIN LATERAL (
    SELECT 1 AS found FROM {JOBS} j WHERE j.instance_uid = s.instance_uid LIMIT 1
  ) j ON true
  LEFT JOIN LATERAL (
    SELECT 1 AS found FROM {SNAPSHOTS} v WHERE v.instance_uid = s.instance_uid LIMIT 1
  ) v ON true
  WHERE j.found IS NULL AND v.found IS NULL
), written AS (
  INSERT INTO {JOBS} (source, {_COLS}, first_seen_at, updated_at, deleted_at, last_run_id)
  SELECT %(source)s, {", ".join(f"b.{c}" for c in BUSINESS)}, %(now)s, %(now)s, NULL, %(run_id)s
  FROM b
), versions AS (
  INSERT INTO {SNAPSHOTS} (source, {_COLS}, valid_from, valid_to, is_deleted, run_id)
  SELECT %(source)s, {", ".join(f"b.{c}" for c in BUSINESS)}, %(now)s, NULL, false, %(run_id)s
  FROM b
), prints AS (
  INSERT INTO {FINGERPRINTS} AS f (instance_uid, fingerprint)
  SELECT instance_uid, fp FROM b WHERE fp IS NOT NULL
  ON CONFLICT (instance_uid) DO UPDATE SET fingerprint = excluded.fingerprint
), unhashed AS (
  DELETE FROM {FINGERPRINTS} f USING b WHERE f.instance_uid = b.instance_uid AND b.fp IS NULL
), {SESSIONS_OF_NEW},{also} merged AS (
  INSERT INTO stage_merged (seq, instance_uid) SELECT seq, instance_uid FROM b
  RETURNING 1
)
SELECT (SELECT count(*) FROM merged), (SELECT min(started_at) FROM new_sessions)
"""


# An early merge's batch: the staged jobs of seq (low, high], one row per job (a job staged
# twice in the batch by its later copy). A job staged again in a later batch finds its row and
# is left to the merge (which takes this batch's copy back out, see _UNMERGE).
_NEW_IN_RANGE = _writes_new(
    """SELECT DISTINCT ON (instance_uid) * FROM stage_jobs
    WHERE seq > %(low)s AND seq <= %(high)s AND NOT same
    ORDER BY instance_uid, seq DESC"""
)

# The merge's: the jobs the comparison found without a row (the stage is deduplicated by
# then); those written are then merged like an early batch's (stage_changed.merged), and the
# steps after the comparison leave them alone.
# Driven from the few new jobs, one probe of the stage's key each: a join planned from the
# empty table's guessed size scanned the whole stage (its raw texts) once more.
_NEW_OF_CHANGED = _writes_new(
    """SELECT s.* FROM (
      SELECT instance_uid FROM stage_changed WHERE inserted AND NOT merged OFFSET 0
    ) c CROSS JOIN LATERAL (
      SELECT * FROM stage_jobs s WHERE s.instance_uid = c.instance_uid OFFSET 0
    ) s""",
    """ flagged AS (
  UPDATE stage_changed c SET merged = true FROM b WHERE c.instance_uid = b.instance_uid
),""",
)


# One comparison decides everything; unchanged jobs are then never touched (not even locked).
# prev_last_run is the lastRun of the version the job had (reporting: is its session new?).
# Jobs the early merge wrote are new and already written (merged): no comparison for them;
# the others are set apart first (OFFSET 0): else the join with the jobs, which the planner
# believes empty right after a first sync, hashed every staged row (~1 s per 100,000).
_CHANGED = f"""
INSERT INTO stage_changed (instance_uid, inserted, prev_last_run, merged)
SELECT s.instance_uid, j.instance_uid IS NULL, j.last_run, false
FROM (
  SELECT * FROM stage_jobs s
  WHERE NOT s.same AND NOT EXISTS (SELECT 1 FROM stage_merged m WHERE m.seq = s.seq) OFFSET 0
) s LEFT JOIN {JOBS} j ON j.instance_uid = s.instance_uid
WHERE (j.instance_uid IS NULL OR j.deleted_at IS NOT NULL
   OR ({", ".join(f"j.{c}" for c in _UPDATABLE)})
      IS DISTINCT FROM ({", ".join(f"s.{c}" for c in _UPDATABLE)}))
UNION ALL
SELECT instance_uid, true, NULL, true FROM stage_merged
"""

_ANY_NEW = "SELECT EXISTS (SELECT 1 FROM stage_changed WHERE inserted AND NOT merged)"

# After the upsert, every fully staged job's row holds what its record says: that record's
# fingerprint now describes the row. A record orjson could not hash leaves none behind (an
# older fingerprint could match an older record that no longer describes the row).
_FINGERPRINTS = f"""
INSERT INTO {FINGERPRINTS} AS f (instance_uid, fingerprint)
SELECT instance_uid, fp FROM stage_jobs s
WHERE NOT same AND fp IS NOT NULL AND NOT EXISTS (SELECT 1 FROM stage_merged m WHERE m.seq = s.seq)
ON CONFLICT (instance_uid) DO UPDATE SET fingerprint = excluded.fingerprint
WHERE f.fingerprint <> excluded.fingerprint
"""

_UNHASHED = f"""
DELETE FROM {FINGERPRINTS} f USING stage_jobs s
WHERE s.instance_uid = f.instance_uid AND NOT s.same AND s.fp IS NULL
"""

_UPSERT = f"""
INSERT INTO {JOBS} AS j (source, {_COLS}, first_seen_at, updated_at, deleted_at, last_run_id)
SELECT :source, {", ".join(f"s.{c}" for c in BUSINESS)}, :now, :now, NULL, :run_id
FROM stage_jobs s JOIN stage_changed c ON c.instance_uid = s.instance_uid AND NOT c.merged
ON CONFLICT (instance_uid) DO UPDATE SET
  source = excluded.source,
  {_SET},
  updated_at = excluded.updated_at,
  deleted_at = NULL,
  last_run_id = excluded.last_run_id
"""

_CLOSE_CHANGED = f"""
UPDATE {SNAPSHOTS} s SET valid_to = :now
FROM stage_changed c WHERE s.instance_uid = c.instance_uid AND s.valid_to IS NULL AND NOT c.merged
"""

_OPEN_CHANGED = f"""
INSERT INTO {SNAPSHOTS} (source, {_COLS}, valid_from, valid_to, is_deleted, run_id)
SELECT :source, {", ".join(f"l.{c}" for c in BUSINESS)}, :now, NULL, false, :run_id
FROM stage_jobs l JOIN stage_changed c ON c.instance_uid = l.instance_uid AND NOT c.merged
"""

# Live jobs of this source when the run began (the early merge's have this run's id), and
# those the extract lacks: neither staged nor rejected. One definition of each serves the
# count and the list of missing jobs.
_LIVE_JOB = """l.source = :source AND l.deleted_at IS NULL
  AND l.last_run_id IS DISTINCT FROM :run_id"""
_NOT_REJECTED = """NOT EXISTS (
    SELECT 1 FROM stage_rejects r WHERE lower(r.instance_uid) = l.instance_uid::text)"""

# The count, per platform: one hash join of the live jobs with the stage (nested loops off:
# one planned from the stale statistics right after a first sync probed the staging index
# once per job, ~2 us each, ~0.2 s per 100,000 jobs); the rejects are looked at only for a
# job the stage lacks (CASE keeps the order).
_LIVE_MISSING = f"""
SELECT l.system_type, count(*), count(*) FILTER (WHERE CASE WHEN s.instance_uid IS NULL
  THEN {_NOT_REJECTED} ELSE false END)
FROM {JOBS} l LEFT JOIN stage_jobs s ON s.instance_uid = l.instance_uid
WHERE {_LIVE_JOB}
GROUP BY l.system_type
"""

# Only when some are missing: the jobs themselves, of the platforms whose collection may
# delete (read completely, within the ratio). Set operations: a hash whatever the statistics.
_GONE = f"""
CREATE TEMP TABLE stage_gone AS
SELECT l.instance_uid FROM (
  SELECT l.instance_uid FROM {JOBS} l
  WHERE {_LIVE_JOB} AND l.system_type = ANY(CAST(:deletable AS text[]))
  EXCEPT SELECT instance_uid FROM stage_jobs) l
WHERE {_NOT_REJECTED}
"""

_SOFT_DELETE = f"""
UPDATE {JOBS} j SET deleted_at = :now, last_run_id = :run_id
FROM stage_gone g WHERE j.instance_uid = g.instance_uid
"""

_CLOSE_GONE = f"""
UPDATE {SNAPSHOTS} s SET valid_to = :now
FROM stage_gone g WHERE s.instance_uid = g.instance_uid AND s.valid_to IS NULL
"""

_TOMBSTONE = f"""
INSERT INTO {SNAPSHOTS} (source, {_COLS}, valid_from, valid_to, is_deleted, run_id)
SELECT j.source, {", ".join(f"j.{c}" for c in BUSINESS)}, :now, NULL, true, :run_id
FROM {JOBS} j JOIN stage_gone g ON g.instance_uid = j.instance_uid
"""

# Each job's reject names the collection of its platform (windows_jobs, ...).
_REJECTS = write_rejects_sql("stage_rejects", "lower(system_type) || '_jobs'")


@dataclass(frozen=True)
class EarlyOutcome:
    """Job rows staged in the run (every pass), how many of them the early merge wrote, and
    the earliest session it wrote (the SLA days from there are recomputed)."""

    staged: int
    written: int
    earliest_session: datetime | None


@dataclass(frozen=True)
class Pass:
    """What the run knows of one platform's collection: whether its last pass proved it
    complete, and if not, why not."""

    complete: bool
    problem: str | None = None


@dataclass(frozen=True)
class MergeResult:
    """What the merge did; ``withheld`` says why deletions were not applied, if they were not."""

    seen: int
    inserted: int
    updated: int
    unchanged: int
    deleted: int
    rejected: int
    withheld: str | None
    earliest_session: datetime | None = None
    """The earliest session of the jobs new to the warehouse this merge or an early batch
    wrote (``etl.load.reporting.record_job_runs`` recomputes the SLA days from there)."""


def merge(
    conn: Connection,
    *,
    run_id: int,
    source: str,
    now: datetime,
    passes: Mapping[str, Pass],
    max_delete_ratio: float,
    reread: bool = True,
    early: EarlyOutcome | None = None,
    seen: int | None = None,
) -> MergeResult:
    """Apply the staged extract. Runs inside the caller's open transaction; does not commit.

    ``passes``: by ``system_type``, the platforms whose collection was read, and whether
    completely. Each deletes only its own live jobs, only if read completely and within
    ``max_delete_ratio`` of them; a platform not in ``passes`` (not read, or skipped) keeps
    its jobs as they are.

    ``reread``: whether the stage kept only a later pass (the early merge's rows can then be
    stale even when no job was staged twice in the pass that stayed). ``early``: what an
    :class:`EarlyMerge` did in this run, if one ran. ``seen``: the distinct jobs staged, if
    the caller counted them already (:func:`~etl.load.stage.distinct_keys`, ~0.1 s per
    100,000 jobs); else they are counted here.
    """
    steps = _Steps(conn, {"source": source, "now": now, "run_id": run_id})
    # A first sync whose every staged job the early merge wrote: then none was staged twice
    # (a batch writes one copy of a job, a later batch none) and none had a row already;
    # nothing is left to dedupe, compare, write or delete.
    all_written = early is not None and not reread and early.written == early.staged
    steps.prepare(dedupe=not all_written, reread=reread)
    if all_written:
        assert early is not None
        jobs = _Jobs(valid=early.written, inserted=early.written, changed=early.written)
        pause("merge")  # chaos tests only (etl/testhook.py)
    else:
        # With an early merge the source had no live job when the run began.
        jobs = steps.write_changed(count_live=early is None)
    notes: list[str] = []
    deletable: list[str] = []
    deleted = 0
    for system_type, (live, missing) in sorted(jobs.live.items()):
        known = passes.get(system_type)
        if known is None or not missing:
            continue
        note = _withheld(system_type, live, missing, known, max_delete_ratio)
        if note:
            log.warning(note)
            notes.append(note)
        else:
            deletable.append(system_type)
            deleted += missing
    if deletable:
        steps.delete_missing(deletable)
    withheld = "; ".join(notes) or None
    rejected = steps.run(text(_REJECTS), steps.params).rowcount
    return MergeResult(
        seen=int(distinct_keys(conn) if seen is None else seen),
        inserted=jobs.inserted,
        updated=jobs.changed - jobs.inserted,
        unchanged=jobs.valid - jobs.changed,
        deleted=deleted,
        rejected=rejected,
        withheld=withheld,
        earliest_session=_earlier(jobs.earliest, early.earliest_session if early else None),
    )


@dataclass(frozen=True)
class _Jobs:
    """What the comparison found: staged jobs, new ones, changed ones (new included), live
    jobs of the source when the run began and how many of them the extract lacks."""

    valid: int
    inserted: int
    changed: int
    live: dict[str, tuple[int, int]] = dataclass_field(default_factory=dict)
    """Per ``system_type``: live jobs of the source when the run began, and how many of them
    the extract lacks."""
    earliest: datetime | None = None


def _withheld(
    system_type: str, live: int, missing: int, known: Pass, max_delete_ratio: float
) -> str | None:
    """Why the missing jobs of one platform are not deleted, if they are not."""
    if not known.complete:
        return (
            f"{system_type} deletions not applied: {missing} live {system_type} job(s) were "
            f"not in the extract, but the {system_type} collection could not be verified "
            f"complete ({known.problem or 'unknown reason'})"
        )
    if live and missing / live > max_delete_ratio:
        return (
            f"{system_type} deletions withheld: {missing} of {live} live {system_type} jobs "
            f"({missing / live:.0%}) are missing from the extract, more than "
            f"VSPC_MAX_DELETE_RATIO={max_delete_ratio:g} allows; if the console really lost "
            "them, run once with a higher VSPC_MAX_DELETE_RATIO"
        )
    return None


class _Steps:
    """The merge's statements on one connection, each timed in the DEBUG log."""

    def __init__(self, conn: Connection, params: dict[str, Any]) -> None:
        self.conn = conn
        self.params = params

    def run(self, statement: TextClause, values: dict[str, object] | None = None) -> Any:
        started = time.perf_counter()
        result = self.conn.execute(statement, values)
        log.debug(
            "merge step %.0f ms: %s",
            (time.perf_counter() - started) * 1000,
            " ".join(statement.text.split())[:60],
        )
        return result

    def prepare(self, *, dedupe: bool, reread: bool) -> None:
        """Session settings, a deduplicated stage, the tables the steps below fill."""
        run = self.run
        # Sorts and hashes over the extract stay in memory for this transaction only.
        run(text("SET LOCAL work_mem = '256MB'"))
        run(text("DROP TABLE IF EXISTS pg_temp.stage_changed, pg_temp.stage_gone"))
        if dedupe and (run(text(_DEDUPE)).rowcount or reread):
            run(text(_UNMERGE), self.params)
        # Hash, not btree: a rejected record's instanceUid is kept as received, and a btree
        # key over ~2.7 kB (a hostile uid) would fail the whole run, and every run after it.
        run(text("CREATE INDEX ON stage_rejects USING hash (lower(instance_uid))"))
        run(text("ANALYZE stage_rejects"))
        run(
            text(
                "CREATE TEMP TABLE stage_changed "
                "(instance_uid uuid PRIMARY KEY, inserted boolean, prev_last_run timestamptz, "
                "merged boolean NOT NULL)"
            )
        )

    def write_changed(self, *, count_live: bool) -> _Jobs:
        """Compare the stage with the warehouse; write new jobs, upsert changed ones, close
        and open their versions, keep their fingerprints."""
        run, params = self.run, self.params
        # Row counts and the key column are all the planner needs; full statistics on the
        # wide jsonb column cost a second per 100,000 jobs.
        # Indexes keep every anti-join fast whatever the planner believes: right after a
        # first sync the warehouse table has no statistics yet, and a nested loop over two
        # seq scans took 28 s at 10,000 jobs.
        run(text("CREATE UNIQUE INDEX ON stage_jobs (instance_uid)"))
        run(text("ANALYZE stage_jobs (instance_uid)"))
        # Before the upsert, which touches staged jobs only: the missing ones are the same
        # after.
        live: dict[str, tuple[int, int]] = {}
        if count_live:
            # Right after a first sync the warehouse table looks empty to the planner: a
            # nested loop over it probed the stage once per live job. Hashes only.
            run(text("SET LOCAL enable_nestloop = off"))
            for system_type, n_live, n_missing in run(text(_LIVE_MISSING), params):
                live[system_type] = (int(n_live), int(n_missing))
            run(text("RESET enable_nestloop"))
        new = run(text(_CHANGED)).rowcount and run(text(_ANY_NEW)).scalar_one()
        earliest = _write_new(self.conn, _NEW_OF_CHANGED, params)[1] if new else None
        run(text(_UPSERT), params)
        pause("merge")  # chaos tests only (etl/testhook.py)
        run(text(_CLOSE_CHANGED), params)
        run(text(_OPEN_CHANGED), params)
        run(text(_FINGERPRINTS))
        run(text(_UNHASHED))
        valid, inserted, changed = run(
            text(
                "SELECT (SELECT count(*) FROM stage_jobs),"
                " (SELECT count(*) FROM stage_changed WHERE inserted),"
                " (SELECT count(*) FROM stage_changed)"
            )
        ).one()
        return _Jobs(int(valid), int(inserted), int(changed), live, earliest)

    def delete_missing(self, system_types: list[str]) -> None:
        """Soft-delete the live jobs of ``system_types`` the extract lacks, close their
        versions, tombstone."""
        params = {**self.params, "deletable": system_types}
        for statement in (_GONE, _SOFT_DELETE, _CLOSE_GONE, _TOMBSTONE):
            self.run(text(statement), params)


def _earlier(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else min(a, b)


def _write_new(
    conn: Connection | psycopg.Connection[Any], statement: str, params: dict[str, Any]
) -> tuple[int, datetime | None]:
    """Run a :func:`_writes_new` statement: the jobs written, and their earliest session."""
    driver = conn if isinstance(conn, psycopg.Connection) else conn.connection.driver_connection
    with driver.cursor() as cursor:  # type: ignore[union-attr]
        cursor.execute(statement, params)
        written, earliest = cursor.fetchone() or (0, None)
    return int(written), earliest


MERGE_EVERY_ROWS = 5_000
"""An early merge batch starts once this many rows are staged since the last one began."""


class EarlyMerge:
    """Writes the staged jobs that are new to the warehouse while later pages are read.

    A first sync writes every job it reads: a batch of staged pages is merged
    (``_NEW_IN_RANGE``) by a thread of its own on the loader's connection, inside the run's
    transaction, while the loader transforms the next pages (the server merges one batch while
    the client prepares the next one, instead of all of it after the extract). The loader
    holds its rows meanwhile and uses the connection only once :meth:`wait` returned.
    :func:`merge` then does the rest and takes back what a later copy replaced. Nothing is
    committed before the merge is: the run stays one transaction.
    """

    def __init__(
        self, conn: psycopg.Connection[Any], *, run_id: int, source: str, now: datetime
    ) -> None:
        self.conn = conn
        self.params: dict[str, Any] = {"run_id": run_id, "source": source, "now": now}
        self.merged_upto = 0
        self._rows_at_start = 0
        self.rows = 0
        self.earliest: datetime | None = None
        """The earliest session the batches wrote (the SLA days from there are recomputed)."""
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="early-merge")
        self._batch: Future[None] | None = None

    def due(self, job_rows: int) -> bool:
        """Whether enough job rows were staged (``job_rows`` so far) since the last batch
        began to start one."""
        return self._batch is None and job_rows - self._rows_at_start >= MERGE_EVERY_ROWS

    def start(self, staged_upto: int, job_rows: int) -> None:
        """Merge the rows staged up to sequence number ``staged_upto`` (all of them on the
        server: no COPY may be open, no row held back) on the merge thread; ``job_rows``: the
        job rows staged so far."""
        assert self._batch is None
        params = {**self.params, "low": self.merged_upto, "high": staged_upto}
        self.merged_upto = staged_upto
        self._rows_at_start = job_rows
        self._batch = self._thread.submit(self._merge, params)

    def busy(self) -> bool:
        """Whether a batch is still running (the connection is then the thread's)."""
        return self._batch is not None and not self._batch.done()

    def wait(self) -> None:
        """Wait for the running batch, if any; raises what it raised."""
        if self._batch is not None:
            batch, self._batch = self._batch, None
            batch.result()

    def close(self) -> None:
        """Wait for a running batch, whatever it raises, and end the thread (after a failure
        the connection must be free before it can roll back)."""
        try:
            self.wait()
        except Exception as exc:  # the run's own failure is the one to report
            log.debug("early merge batch failed too: %s", exc)
        finally:
            self._thread.shutdown(wait=True)

    def _merge(self, params: dict[str, Any]) -> None:
        started = time.perf_counter()
        written, earliest = _write_new(self.conn, _NEW_IN_RANGE, params)
        self.rows += written
        if earliest is not None and (self.earliest is None or earliest < self.earliest):
            self.earliest = earliest
        log.debug(
            "early merge of seq %d-%d: %d new job(s) written in %.0f ms",
            params["low"] + 1,
            params["high"],
            written,
            (time.perf_counter() - started) * 1000,
        )
