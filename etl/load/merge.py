"""Merge the staged extract into the warehouse: set-based SQL, one transaction, no row loops.

Order inside the transaction:
1. ``stage_latest``: one row per job (the last copy read wins if paging served it twice).
2. Upsert ``backup_agent_jobs`` only where a business column differs or the job comes back;
   the changed uids land in ``stage_changed``.
3. Close the current snapshot of each changed job and open its new version.
4. Deletions (complete extract only, within ``max_delete_ratio``): soft-delete, tombstone.
5. Rejects into ``etl_rejects``.
The caller finishes the ``etl_runs`` row in the same transaction and commits.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, text

from etl.load.schema import BUSINESS
from etl.load.stage import distinct_keys

log = logging.getLogger(__name__)

JOBS = "vspc.backup_agent_jobs"
SNAPSHOTS = "vspc.backup_agent_job_snapshots"

_COLS = ", ".join(BUSINESS)
_UPDATABLE = [c for c in BUSINESS if c != "instance_uid"]
_SET = ",\n    ".join(f"{c} = excluded.{c}" for c in _UPDATABLE)
_DIFFERS = (
    "("
    + ", ".join(f"j.{c}" for c in _UPDATABLE)
    + ") IS DISTINCT FROM ("
    + ", ".join(f"excluded.{c}" for c in _UPDATABLE)
    + ")"
)

_LATEST = f"""
CREATE TEMP TABLE stage_latest AS
SELECT DISTINCT ON (instance_uid) {_COLS} FROM stage_jobs ORDER BY instance_uid, seq DESC
"""

_UPSERT = f"""
WITH up AS (
  INSERT INTO {JOBS} AS j (source, {_COLS}, first_seen_at, updated_at, deleted_at, last_run_id)
  SELECT :source, {_COLS}, :now, :now, NULL, :run_id FROM stage_latest
  ON CONFLICT (instance_uid) DO UPDATE SET
    source = excluded.source,
    {_SET},
    updated_at = excluded.updated_at,
    deleted_at = NULL,
    last_run_id = excluded.last_run_id
  WHERE {_DIFFERS} OR j.deleted_at IS NOT NULL
  RETURNING j.instance_uid, (j.xmax = 0) AS inserted
)
INSERT INTO stage_changed (instance_uid, inserted) SELECT instance_uid, inserted FROM up
"""

_CLOSE_CHANGED = f"""
UPDATE {SNAPSHOTS} s SET valid_to = :now
FROM stage_changed c WHERE s.instance_uid = c.instance_uid AND s.valid_to IS NULL
"""

_OPEN_CHANGED = f"""
INSERT INTO {SNAPSHOTS} (source, {_COLS}, valid_from, valid_to, is_deleted, run_id)
SELECT :source, {", ".join(f"l.{c}" for c in BUSINESS)}, :now, NULL, false, :run_id
FROM stage_latest l JOIN stage_changed c ON c.instance_uid = l.instance_uid
"""

_GONE = f"""
CREATE TEMP TABLE stage_gone AS
SELECT j.instance_uid FROM {JOBS} j
WHERE j.source = :source AND j.deleted_at IS NULL
  AND NOT EXISTS (SELECT 1 FROM stage_latest l WHERE l.instance_uid = j.instance_uid)
  AND NOT EXISTS (SELECT 1 FROM stage_rejects r WHERE lower(r.instance_uid) = j.instance_uid::text)
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

# A re-read stages the same bad record again: keep its latest copy once.
_REJECTS = """
INSERT INTO vspc.etl_rejects (run_id, instance_uid, reason, raw, rejected_at)
SELECT :run_id, instance_uid, reason, raw, now() FROM (
  SELECT DISTINCT ON (coalesce(lower(instance_uid), raw::text)) seq, instance_uid, reason, raw
  FROM stage_rejects ORDER BY coalesce(lower(instance_uid), raw::text), seq DESC
) latest ORDER BY seq
"""


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


def merge(
    conn: Connection,
    *,
    run_id: int,
    source: str,
    now: datetime,
    complete: bool,
    incomplete_reason: str | None,
    max_delete_ratio: float,
) -> MergeResult:
    """Apply the staged extract. Runs inside the caller's open transaction; does not commit."""
    params = {"source": source, "now": now, "run_id": run_id}
    run = conn.execute
    run(
        text("DROP TABLE IF EXISTS pg_temp.stage_latest, pg_temp.stage_changed, pg_temp.stage_gone")
    )
    run(text(_LATEST))
    run(text("ALTER TABLE stage_latest ADD PRIMARY KEY (instance_uid)"))
    run(text("ANALYZE stage_latest"))
    run(text("CREATE TEMP TABLE stage_changed (instance_uid uuid PRIMARY KEY, inserted boolean)"))
    live_before = int(
        run(
            text(f"SELECT count(*) FROM {JOBS} WHERE source = :source AND deleted_at IS NULL"),
            params,
        ).scalar_one()
    )
    run(text(_UPSERT), params)
    run(text(_CLOSE_CHANGED), params)
    run(text(_OPEN_CHANGED), params)
    valid, inserted = run(
        text(
            "SELECT (SELECT count(*) FROM stage_latest),"
            " (SELECT count(*) FROM stage_changed WHERE inserted)"
        )
    ).one()
    seen = distinct_keys(conn)
    changed = int(run(text("SELECT count(*) FROM stage_changed")).scalar_one())

    run(text(_GONE), params)
    missing = int(run(text("SELECT count(*) FROM stage_gone")).scalar_one())
    deleted = 0
    withheld: str | None = None
    if missing and not complete:
        withheld = (
            f"deletions not applied: {missing} live job(s) were not in the extract, but the "
            f"extract could not be verified complete ({incomplete_reason or 'unknown reason'})"
        )
    elif missing and live_before and missing / live_before > max_delete_ratio:
        withheld = (
            f"deletions withheld: {missing} of {live_before} live jobs "
            f"({missing / live_before:.0%}) are missing from the extract, more than "
            f"VSPC_MAX_DELETE_RATIO={max_delete_ratio:g} allows; if the console really lost "
            "them, run once with a higher VSPC_MAX_DELETE_RATIO"
        )
    elif missing:
        run(text(_SOFT_DELETE), params)
        run(text(_CLOSE_GONE), params)
        run(text(_TOMBSTONE), params)
        deleted = missing
    if withheld:
        log.warning(withheld)

    rejected = run(text(_REJECTS), params).rowcount
    return MergeResult(
        seen=int(seen),
        inserted=int(inserted),
        updated=changed - int(inserted),
        unchanged=int(valid) - changed,
        deleted=deleted,
        rejected=rejected,
        withheld=withheld,
    )
