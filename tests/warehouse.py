"""Helpers for the reliability tests: what the warehouse holds, compared with the truth."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, text

from etl.verify import check_invariants


def live_raw(engine: Engine, source: str | None = None) -> dict[str, Any]:
    """uid -> raw record of every live job (of ``source``, or all)."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT instance_uid::text, raw FROM vspc.backup_agent_jobs "
                "WHERE deleted_at IS NULL AND (CAST(:s AS text) IS NULL OR source = :s)"
            ),
            {"s": source},
        ).all()
    return {uid: raw for uid, raw in rows}


def truth(jobs: list[dict[str, Any]]) -> dict[str, Any]:
    """uid -> record of the console's jobs, keyed like :func:`live_raw`."""
    return {job["instanceUid"].lower(): job for job in jobs}


def lost_jobs(engine: Engine, jobs: list[dict[str, Any]], source: str | None = None) -> int:
    """Jobs of the console missing from the warehouse's live rows, or stored differently."""
    live = live_raw(engine, source)
    return sum(1 for uid, job in truth(jobs).items() if live.get(uid) != job)


def live_points(engine: Engine, source: str | None = None) -> dict[str, Any]:
    """uid -> raw record of every restore point with ``gone_at`` null (of ``source``, or all)."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT instance_uid::text, raw FROM vspc.restore_points "
                "WHERE gone_at IS NULL AND (CAST(:s AS text) IS NULL OR source = :s)"
            ),
            {"s": source},
        ).all()
    return {uid: raw for uid, raw in rows}


def lost_points(
    engine: Engine, points: list[dict[str, Any]], *, exact: bool, source: str | None = None
) -> int:
    """Restore points the console lists missing from the live rows or stored differently;
    ``exact`` (after a complete full read): also live rows the console does not list."""
    live = live_points(engine, source)
    listed = {point["instanceUid"].lower(): point for point in points}
    missing = sum(1 for uid, point in listed.items() if live.get(uid) != point)
    return missing + (len(set(live) - set(listed)) if exact else 0)


def content(engine: Engine) -> str:
    """A digest of the data a run may change (jobs, versions, rejects, restore points), run
    ids aside.

    Two states with the same digest hold the same jobs, the same history, the same rejects and
    the same restore points.
    """
    queries = [
        "SELECT instance_uid::text, raw::text, deleted_at IS NULL, first_seen_at::text,"
        " updated_at::text, deleted_at::text FROM vspc.backup_agent_jobs ORDER BY 1",
        "SELECT instance_uid::text, valid_from::text, valid_to::text, is_deleted, raw::text"
        " FROM vspc.backup_agent_job_snapshots ORDER BY 1, 2",
        "SELECT instance_uid, reason, raw::text FROM vspc.etl_rejects ORDER BY 1, 2, 3",
        "SELECT instance_uid::text, raw::text, first_seen_at::text, gone_at::text"
        " FROM vspc.restore_points ORDER BY 1",
    ]
    digest = hashlib.sha256()
    with engine.connect() as conn:
        for sql in queries:
            for row in conn.execute(text(sql)):
                digest.update(json.dumps(list(row), default=str).encode())
            digest.update(b"|")
    return digest.hexdigest()


def statuses(engine: Engine, source: str | None = None) -> list[str]:
    """Run statuses in run order."""
    with engine.connect() as conn:
        return list(
            conn.execute(
                text(
                    "SELECT status FROM vspc.etl_runs "
                    "WHERE CAST(:s AS text) IS NULL OR source = :s ORDER BY run_id"
                ),
                {"s": source},
            ).scalars()
        )


def assert_sound(engine: Engine, source: str | None = None) -> None:
    """No invariant is violated."""
    violations = check_invariants(engine, source)
    assert [str(v) for v in violations] == []


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` until it holds; fail the test naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)


def sync_backends(engine: Engine) -> int:
    """Sessions of ``vspc-etl`` processes (their application_name) on this database."""
    with engine.connect() as conn:
        return int(
            conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND application_name = 'vspc-etl'"
                )
            ).scalar_one()
        )
