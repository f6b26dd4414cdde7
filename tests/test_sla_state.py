"""job_sla_state (revision 0006) against a count in Python, after every kind of write.

The triggers on ``job_run_facts`` keep one row per job: its latest session's start, its latest
success (Success/Warning with an end), the Failed sessions after it, and the instant from
which that answer holds. ``job_sla_at`` answers from it, and from the sessions themselves for
jobs whose answer is not settled at the instant asked. Each test writes random sessions the
way a sync, a repair or ``rebuild`` would and checks both against an oracle written here.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, text

from etl.load.reporting import rebuild
from etl.pipeline import run_once
from etl.simulator import Simulator
from tests.conftest import no_sleep
from tests.history import NOW, ORG_A, Seen, at, insert, job, versions

INSERT = text(
    "INSERT INTO vspc.job_run_facts (instance_uid, started_at, source, organization_uid, "
    "job_name, ended_at, status, run_id) VALUES (:uid, :started, 'hand', :org, 'job', :ended, "
    ":status, 1)"
)
STATE = text(
    "SELECT instance_uid, last_started_at, ok_started_at, ok_ended_at, failures, settled_at "
    "FROM vspc.job_sla_state ORDER BY instance_uid"
)
SESSIONS = text("SELECT instance_uid, started_at, ended_at, status FROM vspc.job_run_facts")

Session = tuple[uuid.UUID, datetime, datetime | None, str]


def visible_at(s: Session) -> datetime | None:
    """When job_sla_at starts counting the session (never: None)."""
    _, started, ended, status = s
    if status == "Failed":
        return ended or started
    return ended


def oracle_state(sessions: Iterable[Session]) -> list[tuple[Any, ...]]:
    by_job: dict[uuid.UUID, list[Session]] = {}
    for s in sessions:
        by_job.setdefault(s[0], []).append(s)
    rows = []
    for uid in sorted(by_job):
        ordered = sorted(by_job[uid], key=lambda s: s[1])
        oks = [s for s in ordered if s[3] != "Failed" and s[2] is not None]
        ok = oks[-1] if oks else None
        failures = sum(1 for s in ordered if s[3] == "Failed" and (ok is None or s[1] > ok[1]))
        seen = [v for v in map(visible_at, ordered) if v is not None]
        rows.append(
            (
                uid,
                ordered[-1][1],
                ok[1] if ok else None,
                ok[2] if ok else None,
                failures,
                max(seen) if seen else None,
            )
        )
    return rows


def oracle_at(sessions: Iterable[Session], uid: uuid.UUID, t: datetime) -> tuple[Any, int]:
    """(last_success_at, consecutive_failures) of job ``uid`` at ``t``, as 0002 defined them."""
    mine = sorted((s for s in sessions if s[0] == uid), key=lambda s: s[1])
    oks = [s for s in mine if s[3] != "Failed" and s[2] is not None and s[2] <= t]
    ok = oks[-1] if oks else None
    failures = sum(
        1 for s in mine if s[3] == "Failed" and (ok is None or s[1] > ok[1]) and (s[2] or s[1]) <= t
    )
    return (ok[2] if ok else None, failures)


def random_sessions(
    rng: random.Random, uid: uuid.UUID, start: datetime, count: int
) -> list[Session]:
    """``count`` sessions a few hours apart; some without an end, some ending after NOW."""
    out: list[Session] = []
    t = start
    for _ in range(count):
        t += timedelta(hours=rng.randint(2, 30), seconds=rng.randint(0, 59))
        status = rng.choice(("Success", "Success", "Warning", "Failed", "Failed"))
        ended = None if rng.random() < 0.15 else t + timedelta(minutes=rng.randint(0, 90))
        out.append((uid, t, ended, status))
    return out


def write(conn: Connection, sessions: Iterable[Session]) -> None:
    rows = [
        {"uid": u, "started": s, "ended": e, "status": st, "org": ORG_A} for u, s, e, st in sessions
    ]
    if rows:
        conn.execute(INSERT, rows)


# Every row in one statement (``write`` may send one statement per row): the trigger then
# sees new jobs, appended sessions and late ones in one transition table.
INSERT_ALL = text(
    "INSERT INTO vspc.job_run_facts (instance_uid, started_at, source, organization_uid, "
    "job_name, ended_at, status, run_id) SELECT u, s, 'hand', :org, 'job', e, st, 1 "
    "FROM unnest(CAST(:uids AS uuid[]), CAST(:starts AS timestamptz[]), "
    "CAST(:ends AS timestamptz[]), CAST(:statuses AS text[])) AS t (u, s, e, st)"
)


def write_in_one_statement(conn: Connection, sessions: list[Session]) -> None:
    uids, starts, ends, statuses = zip(*sessions, strict=True)
    conn.execute(
        INSERT_ALL,
        {
            "uids": list(uids),
            "starts": list(starts),
            "ends": list(ends),
            "statuses": list(statuses),
            "org": ORG_A,
        },
    )


def stored(conn: Connection) -> list[Session]:
    return [tuple(r) for r in conn.execute(SESSIONS)]  # type: ignore[misc]


def answers(
    conn: Connection, source: str, params: dict[str, Any] | None = None
) -> dict[uuid.UUID, tuple[Any, int]]:
    """(last_success_at, consecutive_failures) per job, as a view or job_sla_at answers."""
    rows = conn.execute(
        text(f"SELECT instance_uid, last_success_at, consecutive_failures FROM {source}"),
        params or {},
    )
    return {r[0]: (r[1], r[2]) for r in rows}


def assert_state_is_exact(conn: Connection) -> None:
    assert [tuple(r) for r in conn.execute(STATE)] == oracle_state(stored(conn))


@pytest.fixture
def conn(fresh_db: Engine) -> Iterator[Connection]:
    with fresh_db.begin() as connection:
        yield connection


def test_state_follows_every_kind_of_write(conn: Connection) -> None:
    rng = random.Random(6)
    jobs = [job(n) for n in range(1, 31)]
    history = {uid: random_sessions(rng, uid, at(0), 12) for uid in jobs}

    # What a sync writes: each job's sessions in order, a few per statement (folded).
    for i in range(0, 12, 3):
        write(conn, [s for uid in jobs for s in history[uid][i : i + 3]])
        assert_state_is_exact(conn)
    assert conn.execute(text("SELECT count(*) FROM vspc.job_sla_state")).scalar_one() == 30

    # A late session, before a job's latest (recomputed), in one statement with appended ones.
    last = history[jobs[0]][-1][1]
    late = (jobs[0], last - timedelta(minutes=1), last + timedelta(days=10), "Success")
    appended = (jobs[1], history[jobs[1]][-1][1] + timedelta(hours=1), None, "Failed")
    write(conn, [late, appended])
    assert_state_is_exact(conn)

    # An outcome changed, an end changed, a name changed (no state change), keys moved.
    ok = next(s for s in history[jobs[2]] if s[3] != "Failed" and s[2] is not None)
    conn.execute(
        text(
            "UPDATE vspc.job_run_facts SET status = 'Failed' "
            "WHERE instance_uid = :u AND started_at = :s"
        ),
        {"u": ok[0], "s": ok[1]},
    )
    conn.execute(
        text(
            "UPDATE vspc.job_run_facts SET ended_at = NULL "
            "WHERE instance_uid = :u AND status <> 'Failed'"
        ),
        {"u": jobs[3]},
    )
    before = [tuple(r) for r in conn.execute(STATE)]
    conn.execute(text("UPDATE vspc.job_run_facts SET job_name = 'renamed'"))
    assert [tuple(r) for r in conn.execute(STATE)] == before
    conn.execute(
        text(
            "UPDATE vspc.job_run_facts SET instance_uid = :to, "
            "started_at = started_at + interval '7 days' WHERE instance_uid = :u"
        ),
        {"u": jobs[4], "to": job(99)},
    )
    assert_state_is_exact(conn)

    # The sync's upsert: an existing session gets a new outcome, a new one is added.
    latest = history[jobs[5]][-1]
    conn.execute(
        text(
            "INSERT INTO vspc.job_run_facts AS f (instance_uid, started_at, source, ended_at, "
            "status, run_id) VALUES (:u, :s, 'hand', :e, :st, 2), (:u, :s2, 'hand', :e2, "
            "'Failed', 2) ON CONFLICT (instance_uid, started_at) DO UPDATE SET "
            "status = excluded.status, ended_at = excluded.ended_at"
        ),
        {
            "u": latest[0],
            "s": latest[1],
            "e": latest[1] + timedelta(minutes=5),
            "st": "Warning" if latest[3] == "Failed" else "Failed",
            "s2": latest[1] + timedelta(hours=3),
            "e2": latest[1] + timedelta(hours=4),
        },
    )
    assert_state_is_exact(conn)

    # Deletes: some sessions of one job, every session of another.
    conn.execute(
        text("DELETE FROM vspc.job_run_facts WHERE instance_uid = :u AND started_at > :t"),
        {"u": jobs[6], "t": history[jobs[6]][4][1]},
    )
    conn.execute(text("DELETE FROM vspc.job_run_facts WHERE instance_uid = :u"), {"u": jobs[7]})
    assert_state_is_exact(conn)
    assert jobs[7] not in {r[0] for r in conn.execute(STATE)}

    conn.execute(text("TRUNCATE vspc.job_run_facts"))
    assert conn.execute(text("SELECT count(*) FROM vspc.job_sla_state")).scalar_one() == 0


def test_one_statement_adds_folds_and_recomputes(conn: Connection) -> None:
    """A statement mixing jobs without a row (added), sessions after a job's latest (folded,
    several per job) and sessions before it (recomputed), round after round."""
    rng = random.Random(9)
    jobs = [job(n) for n in range(1, 41)]
    history = {uid: random_sessions(rng, uid, at(0), 12) for uid in jobs}
    written: dict[uuid.UUID, int] = {}
    for round_no in range(4):
        batch: list[Session] = []
        for uid in jobs[: 10 * (round_no + 1)]:  # ten jobs more each round: new ones
            n = written.get(uid, 0)
            batch += history[uid][n : n + 3]
            written[uid] = n + 3
        for uid in rng.sample(jobs[: 10 * round_no], k=min(3, 10 * round_no)):
            first = min(s[1] for s in history[uid][: written[uid]])
            batch.append((uid, first - timedelta(hours=rng.randint(1, 9)), None, "Failed"))
        rng.shuffle(batch)
        write_in_one_statement(conn, batch)
        assert_state_is_exact(conn)
    assert conn.execute(text("SELECT count(*) FROM vspc.job_sla_state")).scalar_one() == 40
    late = conn.execute(
        text("SELECT count(*) FROM vspc.job_run_facts WHERE status = 'Failed' AND ended_at IS NULL")
    ).scalar_one()
    assert late >= 9  # the late sessions are there (and some random ones without an end)


def test_the_recompute_function_repairs_a_damaged_state(conn: Connection) -> None:
    rng = random.Random(7)
    write(conn, [s for n in range(1, 6) for s in random_sessions(rng, job(n), at(0), 8)])
    conn.execute(text("UPDATE vspc.job_sla_state SET failures = failures + 5"))
    conn.execute(text("DELETE FROM vspc.job_sla_state WHERE instance_uid = :u"), {"u": job(2)})
    assert [tuple(r) for r in conn.execute(STATE)] != oracle_state(stored(conn))
    conn.execute(
        text(
            "SELECT vspc.job_sla_state_recompute(array_agg(DISTINCT instance_uid)) "
            "FROM vspc.job_run_facts"
        )
    )
    assert_state_is_exact(conn)


def test_job_sla_at_matches_the_count_at_every_instant(conn: Connection) -> None:
    """Settled jobs answer from the state, the others from their sessions: same numbers."""
    rng = random.Random(8)
    jobs = [job(n) for n in range(1, 21)]
    insert(conn, [v for uid in jobs for v in versions(uid, ORG_A, Seen(at(0), "Success"))])
    sessions = [s for uid in jobs for s in random_sessions(rng, uid, at(0), 9)]
    # Two jobs whose latest session ends after now: settled only then.
    for uid in jobs[:2]:
        last = max((s for s in sessions if s[0] == uid), key=lambda s: s[1])
        sessions.append((uid, NOW - timedelta(minutes=30), NOW + timedelta(hours=2), "Success"))
        assert last[1] < NOW - timedelta(minutes=30)
    sessions = [s for s in sessions if s[1] <= NOW]
    write(conn, sessions)
    assert_state_is_exact(conn)

    unsettled_now = conn.execute(
        text("SELECT count(*) FROM vspc.job_sla_state WHERE settled_at > now()")
    ).scalar_one()
    assert unsettled_now >= 2
    instants = [at(d, h) for d in range(0, 20, 3) for h in (0, 11)]
    instants += [NOW, NOW + timedelta(hours=3)]
    for t in instants:
        got = answers(conn, "vspc.job_sla_at(:t)", {"t": t})
        assert got == {uid: oracle_at(sessions, uid, t) for uid in jobs}, t


def test_rebuild_leaves_an_exact_state(conn: Connection) -> None:
    """rebuild empties job_run_facts and derives it again (delete and insert triggers)."""
    uid = job(1)
    insert(
        conn,
        versions(
            uid,
            ORG_A,
            Seen(at(0, 6), "Failed", at(0, 1), at(0, 2)),
            Seen(at(1, 6), "Success", at(1, 1), at(1, 2)),
            Seen(at(2, 6), "Failed", at(2, 1), None),
        ),
    )
    write(conn, [(job(2), at(0, 1), None, "Failed")])  # not in the snapshots: rebuild drops it
    rebuild(conn)
    assert [tuple(r) for r in conn.execute(STATE)] == [
        (uid, at(2, 1), at(1, 1), at(1, 2), 1, at(2, 1))
    ]
    assert_state_is_exact(conn)


def test_syncs_keep_the_state_exact(fresh_db: Engine, settings: Any, simulator: Simulator) -> None:
    """What the triggers see from real syncs: days and hours of sessions, a job renamed."""
    jobs_kept = 0
    for hours in (0, 24, 24, 3, 30):
        simulator.advance(hours)
        assert run_once(settings, engine=fresh_db, sleep=no_sleep).status == "success"
        with fresh_db.connect() as conn:
            assert_state_is_exact(conn)
            jobs_kept = max(
                jobs_kept,
                conn.execute(text("SELECT count(*) FROM vspc.job_sla_state")).scalar_one(),
            )
    uid = simulator.every_job()[0]["instanceUid"]
    simulator.mutate(uid, name="renamed job")
    assert run_once(settings, engine=fresh_db, sleep=no_sleep).status == "success"
    with fresh_db.connect() as conn:
        assert_state_is_exact(conn)
        sessions = stored(conn)
        now = conn.execute(text("SELECT now()")).scalar_one()
        got = answers(conn, "vspc.job_sla_current")
    assert jobs_kept >= 40  # most of the 60 jobs have sessions
    assert got == {u: oracle_at(sessions, u, now) for u in got}
