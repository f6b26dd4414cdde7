"""The ``etl_runs`` log and the per-source advisory lock.

A run's ``running`` row is committed on its own before any data moves, so a crash always leaves
a trace; the next run of the same source, once it holds the lock, knows any other ``running``
row of that source is an orphan and marks it ``failed``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import SQLAlchemyError

log = logging.getLogger(__name__)

# Two-key advisory locks: this constant namespaces ours, hashtext(source) picks the source.
SYNC_LOCK_CLASS = 0x56535043  # "VSPC"


@dataclass(frozen=True)
class RunRow:
    """The identity of a started run."""

    run_id: int
    started_at: datetime


def try_lock(conn: Connection, source: str) -> bool:
    """Take the session-level sync lock for ``source`` without waiting."""
    got = conn.execute(
        text("SELECT pg_try_advisory_lock(:cls, hashtext(:source))"),
        {"cls": SYNC_LOCK_CLASS, "source": source},
    ).scalar_one()
    conn.commit()
    return bool(got)


def unlock(conn: Connection, source: str) -> None:
    """Release the sync lock; a closed connection releases it too, so errors are ignored."""
    try:
        conn.rollback()
        conn.execute(
            text("SELECT pg_advisory_unlock(:cls, hashtext(:source))"),
            {"cls": SYNC_LOCK_CLASS, "source": source},
        )
        conn.commit()
    except SQLAlchemyError:
        log.debug("could not release the sync lock explicitly; the connection is gone anyway")


def fail_orphans(conn: Connection, source: str) -> int:
    """Mark ``running`` rows of ``source`` failed. Only call while holding the source's lock."""
    result = conn.execute(
        text(
            "UPDATE vspc.etl_runs SET status = 'failed', finished_at = clock_timestamp(), "
            "error = 'the process running this sync ended without finishing it "
            "(killed or crashed); nothing of it was committed' "
            "WHERE source = :source AND status = 'running'"
        ),
        {"source": source},
    )
    conn.commit()
    if result.rowcount:
        log.warning("marked %d orphaned running sync(s) of %s as failed", result.rowcount, source)
    return result.rowcount


def start(conn: Connection, source: str, version: str, at: datetime | None = None) -> RunRow:
    """Insert and commit the run's ``running`` row, started ``at`` (default: the database's
    clock). Every instant the run writes derives from its ``started_at``."""
    run_id, started_at = conn.execute(
        text(
            "INSERT INTO vspc.etl_runs (source, started_at, status, etl_version) "
            "VALUES (:source, coalesce(CAST(:at AS timestamptz), clock_timestamp()), 'running', "
            ":version) RETURNING run_id, started_at"
        ),
        {"source": source, "version": version, "at": at},
    ).one()
    conn.commit()
    return RunRow(int(run_id), started_at)


def record_skipped(conn: Connection, source: str, version: str, reason: str) -> RunRow:
    """Log a run that did not start because another holds the lock."""
    run_id, started_at = conn.execute(
        text(
            "INSERT INTO vspc.etl_runs (source, started_at, finished_at, status, error, "
            "etl_version) VALUES (:source, clock_timestamp(), clock_timestamp(), 'skipped', "
            ":reason, :version) RETURNING run_id, started_at"
        ),
        {"source": source, "version": version, "reason": reason},
    ).one()
    conn.commit()
    return RunRow(int(run_id), started_at)


def finish_success(conn: Connection, run_id: int, **fields: Any) -> None:
    """Set the run ``success`` with its counts, inside the caller's data transaction."""
    assignments = ", ".join(f"{name} = :{name}" for name in fields)
    conn.execute(
        text(
            f"UPDATE vspc.etl_runs SET status = 'success', finished_at = clock_timestamp(), "
            f"{assignments} WHERE run_id = :run_id"
        ),
        {"run_id": run_id, **fields},
    )


def finish_failed(engine: Engine, run_id: int, error: str, **fields: Any) -> bool:
    """Mark the run failed on a fresh connection (the run's own may be broken).

    Returns False if even that failed; the next run will then mark the orphan.
    """
    assignments = "".join(f", {name} = :{name}" for name in fields)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "UPDATE vspc.etl_runs SET status = 'failed', finished_at = clock_timestamp(), "
                    f"error = :error{assignments} WHERE run_id = :run_id AND status = 'running'"
                ),
                {"run_id": run_id, "error": error, **fields},
            )
    except SQLAlchemyError as exc:
        log.error("could not record run %d as failed: %s", run_id, exc.__class__.__name__)
        return False
    return True
