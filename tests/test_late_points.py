"""Restore points of completed days inserted into a warehouse whose days are stored: the
trigger adds them to the stored rows (``vspc.sla_daily_add_points``) instead of recomputing
the days, and the rows must then be exactly what a recomputation gives.

Random histories (seeded, so a failure replays): jobs moving between organizations, disabled
for a while, deleted; sessions; points of known jobs, of jobs the warehouse never saw, without a
job, merged away soon after their creation or long after; organizations with their own RPO;
a time zone with daylight saving time. Each round inserts a few late points in one statement,
as a sync does, and compares every stored row with ``sla_daily_compute`` over all completed
days, and the rows the statement wrote with the rows whose numbers changed.
"""

from __future__ import annotations

import random
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, text

from etl.load.reporting import rebuild
from tests.history import ORG_A, ORG_B, ORG_C, Seen, Version, at, insert, job, versions
from tests.test_restore_point_sla import CURRENT_JOBS

DAYS = 20  # day 0 is twenty days ago: days 0-19 are completed, day 20 is today
ORGS = (ORG_A, ORG_B, ORG_C)
AGENTS = tuple(uuid.UUID(f"a1000000-0000-4000-8000-{n:012d}") for n in range(3))
ROUNDS = 25
UNKNOWN_JOB = uuid.UUID("90000000-0000-4000-8000-000000000001")


def instant(rng: random.Random, first: int = 0, last: int = DAYS - 1) -> datetime:
    """A random instant of days first..last, sometimes exactly at midnight."""
    d = rng.randint(first, last)
    if rng.random() < 0.2:
        return at(d)
    return at(d, rng.randrange(24), rng.randrange(60))


def random_job(rng: random.Random, uid: uuid.UUID) -> list[Version]:
    """A job seen a few times: each observation may move it, disable it or record a session."""
    seen: list[Seen] = []
    start = rng.randint(0, 6)
    for d in sorted(rng.sample(range(start, DAYS), rng.randint(1, 6))):
        since = at(d, rng.randrange(24), rng.randrange(60))
        status = rng.choice(["Success", "Warning", "Failed", "None"])
        run = since - timedelta(hours=rng.randint(1, 20)) if status != "None" else None
        end = run + timedelta(minutes=rng.randint(5, 200)) if run else None
        if end is not None and end > since:
            end = since
        seen.append(Seen(since, status, run, end, enabled=rng.random() < 0.85))
    org = rng.choice(ORGS)
    deleted = at(rng.randint(10, DAYS - 1), 12) if rng.random() < 0.2 else None
    if deleted is not None and deleted <= seen[-1].since:
        deleted = None
    rows = versions(uid, org, *seen, deleted_at=deleted)
    return [
        Version(
            v.uid, rng.choice(ORGS) if rng.random() < 0.3 else v.org, v.seen, v.valid_to, v.deleted
        )
        for v in rows
    ]


def point_rows(
    rng: random.Random, jobs: list[uuid.UUID], n: int, first: int
) -> list[dict[str, Any]]:
    """``n`` points created from day ``first`` on: mostly of the given jobs, some of a job the
    warehouse never saw or without a job; half still listed, the rest merged away within two
    days or after a week."""
    rows = []
    for _ in range(n):
        created = instant(rng, first)
        kind = rng.random()
        owner: uuid.UUID | None = (
            rng.choice(jobs) if kind < 0.8 else UNKNOWN_JOB if kind < 0.9 else None
        )
        gone = rng.random()
        gone_at = (
            None
            if gone < 0.5
            else created + timedelta(hours=rng.randint(1, 40))
            if gone < 0.9
            else created + timedelta(days=rng.randint(3, 8))
        )
        rows.append(
            {
                "uid": uuid.UUID(int=rng.getrandbits(128)),
                "agent": rng.choice(AGENTS),
                "job": owner,
                "created": created,
                "gone": gone_at,
            }
        )
    return rows


def write_points(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """One INSERT statement for all of them, as a sync's merge writes them."""
    values = ", ".join(
        f"(CAST(:uid{i} AS uuid), 'hand', CAST(:agent{i} AS uuid), CAST(:job{i} AS uuid), "
        f"CAST(:created{i} AS timestamptz), '{{}}', now(), CAST(:gone{i} AS timestamptz))"
        for i in range(len(rows))
    )
    params = {f"{k}{i}": v for i, row in enumerate(rows) for k, v in row.items()}
    conn.execute(
        text(
            "INSERT INTO vspc.restore_points (instance_uid, source, backup_agent_uid, job_uid, "
            f"creation_date, raw, first_seen_at, gone_at) VALUES {values}"
        ),
        params,
    )


STORED = (
    "SELECT day, organization_uid, jobs_protected, runs, success_runs, warning_runs, "
    "failed_runs, jobs_meeting_rpo, rpo_hours, restore_points_created "
)


def stored(conn: Connection) -> dict[tuple[Any, Any], tuple[Any, ...]]:
    rows = conn.execute(text(f"{STORED} FROM vspc.sla_daily_counts")).all()
    return {(r[0], r[1]): tuple(r[2:]) for r in rows}


def recomputed(conn: Connection) -> dict[tuple[Any, Any], tuple[Any, ...]]:
    """Every completed day as sla_daily_compute answers it now."""
    rows = conn.execute(
        text(
            f"{STORED} FROM vspc.report_settings s, LATERAL vspc.sla_daily_compute("
            "least((SELECT (min(valid_from) AT TIME ZONE s.time_zone)::date "
            "       FROM vspc.backup_agent_job_snapshots), "
            "      (SELECT (min(started_at) AT TIME ZONE s.time_zone)::date "
            "       FROM vspc.job_run_facts)), "
            "(now() AT TIME ZONE s.time_zone)::date - 1, s.time_zone, now())"
        )
    ).all()
    return {(r[0], r[1]): tuple(r[2:]) for r in rows}


def written_in_this_transaction(conn: Connection) -> set[tuple[Any, Any]]:
    """The stored rows the current transaction wrote."""
    rows = conn.execute(
        text(
            "SELECT day, organization_uid FROM vspc.sla_daily_counts "
            "WHERE xmin = pg_current_xact_id()::xid"
        )
    ).all()
    return {(r[0], r[1]) for r in rows}


@pytest.mark.parametrize(
    ("seed", "time_zone", "default_rpo", "own_rpo"),
    [
        (1, "UTC", 24, {ORG_A: 12, ORG_B: 48}),
        (2, "America/New_York", 24, {ORG_C: 6}),
        (3, "Europe/Berlin", 36, {ORG_A: 72}),
        (4, "Asia/Kolkata", 12, {}),
    ],
)
def test_late_points_added_to_stored_days_equal_a_recomputation(
    fresh_db: Engine,
    seed: int,
    time_zone: str,
    default_rpo: int,
    own_rpo: dict[uuid.UUID, int],
) -> None:
    rng = random.Random(seed)
    jobs = [job(100 + n) for n in range(12)]
    with fresh_db.begin() as conn:
        conn.execute(text("UPDATE vspc.report_settings SET time_zone = :tz"), {"tz": time_zone})
        conn.execute(text("UPDATE vspc.sla_policy SET rpo_hours = :h"), {"h": default_rpo})
        for org, hours in own_rpo.items():
            conn.execute(
                text("INSERT INTO vspc.sla_policy VALUES (:org, :h)"), {"org": org, "h": hours}
            )
        insert(conn, [v for uid in jobs for v in random_job(rng, uid)])
        conn.execute(text(CURRENT_JOBS))
        conn.execute(
            text(
                "INSERT INTO vspc.backup_agents (instance_uid, source, computer_name, "
                "organization_uid, first_seen_at, updated_at) VALUES "
                "(:a0, 'hand', 'PC-0', :o0, now(), now()), "
                "(:a1, 'hand', 'PC-1', :o1, now(), now())"  # AGENTS[2]: a computer not known
            ),
            {"a0": AGENTS[0], "a1": AGENTS[1], "o0": ORG_A, "o1": ORG_B},
        )
        write_points(conn, point_rows(rng, jobs, 30, 0))
        rebuild(conn)
        assert stored(conn) == recomputed(conn)

    for round_no in range(ROUNDS):
        with fresh_db.begin() as conn:
            before = stored(conn)
            last = DAYS - 1 if round_no % 2 else rng.randint(10, DAYS - 1)
            added = point_rows(rng, jobs, rng.randint(1, 12), rng.randint(0, last))
            write_points(conn, added)
            after = stored(conn)
            assert after == recomputed(conn), f"round {round_no}: {added}"
            changed = {key for key in after if after[key] != before.get(key)}
            assert written_in_this_transaction(conn) == changed, f"round {round_no}"
    # The rounds counted something: not every insert can have landed on nothing.
    assert any(v[5] for v in after.values())  # restore_points_created


def test_late_points_when_yesterday_is_not_stored_recompute_from_their_day(
    fresh_db: Engine,
) -> None:
    """Just after midnight yesterday's rows are not stored yet: the trigger recomputes, so
    yesterday is then stored too, equal to a recomputation."""
    rng = random.Random(7)
    jobs = [job(200 + n) for n in range(6)]
    with fresh_db.begin() as conn:
        insert(conn, [v for uid in jobs for v in random_job(rng, uid)])
        conn.execute(text(CURRENT_JOBS))
        rebuild(conn)
        yesterday = at(DAYS - 1).date()
        conn.execute(text("DELETE FROM vspc.sla_daily_counts WHERE day = :d"), {"d": yesterday})
        write_points(conn, point_rows(rng, jobs, 3, DAYS - 3))
        after = stored(conn)
        assert max(day for day, _ in after) == yesterday
        assert after == recomputed(conn)
