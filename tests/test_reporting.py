"""The reporting views against hand-built histories: every number is counted by hand."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DataError, IntegrityError

from etl.load.reporting import rebuild
from etl.pipeline import run_once
from etl.simulator import Simulator
from tests.conftest import no_sleep
from tests.history import (
    ORG_A,
    ORG_B,
    ORG_C,
    Seen,
    at,
    day,
    insert,
    job,
    sla_history,
    versions,
)

DAILY = (
    "jobs_protected, runs, success_runs, warning_runs, failed_runs, success_rate, "
    "jobs_meeting_rpo, rpo_compliance"
)


@pytest.fixture
def history(fresh_db: Engine) -> Iterator[Connection]:
    """The hand-built SLA history, loaded and derived; the connection is left open."""
    with fresh_db.begin() as conn:
        insert(conn, sla_history())
        rebuild(conn)
    with fresh_db.connect() as conn:
        yield conn


def daily(conn: Connection, org: Any, first: int, last: int) -> dict[date, tuple[Any, ...]]:
    rows = conn.execute(
        text(
            f"SELECT day, {DAILY} FROM vspc.sla_daily WHERE organization_uid = :org "
            "AND day BETWEEN :a AND :b ORDER BY day"
        ),
        {"org": org, "a": day(first), "b": day(last)},
    ).all()
    return {r[0]: tuple(r[1:]) for r in rows}


def sla_at(conn: Connection, uid: Any, t: datetime) -> dict[str, Any] | None:
    row = (
        conn.execute(
            text(
                "SELECT last_status, last_success_at, hours_since_success, rpo_hours, rpo_met, "
                "consecutive_failures FROM vspc.job_sla_at(:t) WHERE instance_uid = :uid"
            ),
            {"t": t, "uid": uid},
        )
        .mappings()
        .one_or_none()
    )
    return dict(row) if row is not None else None


def d(value: str) -> Decimal:
    return Decimal(value)


def test_running_then_success_is_one_run(fresh_db: Engine) -> None:
    uid = job(1)
    with fresh_db.begin() as conn:
        insert(
            conn,
            versions(
                uid,
                ORG_A,
                # seen running: lastEndTime is still the previous session's
                Seen(at(0, 6), "Running", at(0, 5, 50), at(-1, 6, 40)),
                Seen(at(0, 7), "Success", at(0, 5, 50), at(0, 6, 40)),
                # a failed session whose end the console did not update: end unknown
                Seen(at(1, 7), "Failed", at(1, 5), at(0, 6, 40)),
            ),
        )
        rebuild(conn)
        runs = conn.execute(
            text(
                "SELECT started_at, ended_at, duration_s, status FROM vspc.job_runs "
                "WHERE instance_uid = :uid ORDER BY started_at"
            ),
            {"uid": uid},
        ).all()
    assert [tuple(r) for r in runs] == [
        (at(0, 5, 50), at(0, 6, 40), 3000, "Success"),
        (at(1, 5), None, None, "Failed"),
    ]


def test_three_failed_days_then_a_success(history: Connection) -> None:
    j2 = job(2)
    # Day 0's success ended 02:00: RPO (24 h) is met until day 1 02:00 exactly.
    assert sla_at(history, j2, at(0, 5)) is None  # not seen by any sync yet
    assert sla_at(history, j2, at(1, 1, 59)) == {
        "last_status": "Success",
        "last_success_at": at(0, 2),
        "hours_since_success": d("23.98"),
        "rpo_hours": 24,
        "rpo_met": True,
        "consecutive_failures": 0,
    }
    one_failure = sla_at(history, j2, at(1, 2))
    assert one_failure is not None
    assert (one_failure["rpo_met"], one_failure["consecutive_failures"]) == (False, 1)
    assert one_failure["hours_since_success"] == d("24.00")
    two = sla_at(history, j2, at(2, 12))
    three = sla_at(history, j2, at(3, 12))
    assert two is not None and three is not None
    assert (two["consecutive_failures"], three["consecutive_failures"]) == (2, 3)
    assert (three["last_status"], three["hours_since_success"]) == ("Failed", d("82.00"))
    # Day 4's success ends 03:30: a minute before, still three failures; then met again.
    before = sla_at(history, j2, at(4, 3, 29))
    assert before is not None
    assert (before["rpo_met"], before["consecutive_failures"]) == (False, 3)
    assert sla_at(history, j2, at(4, 3, 30)) == {
        "last_status": "Failed",  # the 06:00 sync had not seen the success yet
        "last_success_at": at(4, 3, 30),
        "hours_since_success": d("0.00"),
        "rpo_hours": 24,
        "rpo_met": True,
        "consecutive_failures": 0,
    }


def test_sla_daily_equals_the_hand_count(history: Connection) -> None:
    # (protected, runs, success, warning, failed, success_rate, meeting, compliance)
    assert daily(history, ORG_A, 0, 5) == {
        day(0): (2, 2, 2, 0, 0, d("1.0000"), 2, d("1.0000")),
        day(1): (2, 2, 1, 0, 1, d("0.5000"), 1, d("0.5000")),  # J2 failed, J3 ok
        day(2): (2, 2, 0, 1, 1, d("0.5000"), 1, d("0.5000")),  # J3's warning counts
        day(3): (2, 2, 0, 0, 2, d("0.0000"), 0, d("0.0000")),
        day(4): (2, 1, 1, 0, 0, d("1.0000"), 1, d("0.5000")),
        day(5): (2, 0, 0, 0, 0, None, 0, d("0.0000")),
    }


def test_deleted_job_stops_counting_and_disabled_is_not_protected(history: Connection) -> None:
    # K1 deleted on day 2 at 06:00; K2 disabled all along.
    assert daily(history, ORG_B, 0, 3) == {
        day(0): (1, 1, 1, 0, 0, d("1.0000"), 1, d("1.0000")),
        day(1): (1, 1, 1, 0, 0, d("1.0000"), 1, d("1.0000")),
        day(2): (0, 0, 0, 0, 0, None, 0, None),
        day(3): (0, 0, 0, 0, 0, None, 0, None),
    }
    live = history.execute(
        text(
            "SELECT instance_uid, is_enabled, rpo_met, last_success_at "
            "FROM vspc.job_sla_current WHERE organization_uid = :org"
        ),
        {"org": ORG_B},
    ).all()
    assert [tuple(r) for r in live] == [(job(12), False, False, None)]


def test_day_boundaries_follow_the_report_time_zone(fresh_db: Engine) -> None:
    with fresh_db.begin() as conn:
        insert(conn, sla_history())
        rebuild(conn)
    with fresh_db.connect() as conn:
        # M1's session starts day 0 23:30 UTC, which is day 1 02:30 in Moscow (UTC+3).
        assert daily(conn, ORG_C, 0, 1) == {
            day(0): (1, 1, 1, 0, 0, d("1.0000"), 1, d("1.0000")),
            day(1): (1, 0, 0, 0, 0, None, 0, d("0.0000")),
        }
    with fresh_db.begin() as conn:
        conn.execute(text("UPDATE vspc.report_settings SET time_zone = 'Europe/Moscow'"))
    with fresh_db.connect() as conn:
        # A Moscow day ends at 21:00 UTC: on day 0 the session had not ended yet.
        assert daily(conn, ORG_C, 0, 1) == {
            day(0): (1, 0, 0, 0, 0, None, 0, d("0.0000")),
            day(1): (1, 1, 1, 0, 0, d("1.0000"), 1, d("1.0000")),
        }
        session_day = conn.execute(
            text("SELECT day FROM vspc.job_runs WHERE instance_uid = :uid"), {"uid": job(21)}
        ).scalar_one()
        assert session_day == day(1)


def test_a_policy_per_organization_recomputes_history(history: Connection) -> None:
    history.execute(text("INSERT INTO vspc.sla_policy VALUES (:org, 48)"), {"org": ORG_A})
    history.commit()
    meeting = history.execute(
        text(
            "SELECT day, jobs_meeting_rpo, rpo_hours FROM vspc.sla_daily "
            "WHERE organization_uid = :org AND day BETWEEN :a AND :b ORDER BY day"
        ),
        {"org": ORG_A, "a": day(1), "b": day(3)},
    ).all()
    # 48 h: J2's day-0 success still covers the end of day 1, J3's day-2 warning day 3.
    assert [tuple(r) for r in meeting] == [(day(1), 2, 48), (day(2), 1, 48), (day(3), 1, 48)]
    still = sla_at(history, job(2), at(1, 2))
    assert still is not None and still["rpo_met"] is True
    other = history.execute(
        text("SELECT DISTINCT rpo_hours FROM vspc.sla_daily WHERE organization_uid = :org"),
        {"org": ORG_B},
    ).scalar_one()
    assert other == 24


def test_job_sla_current_is_job_sla_at_now(history: Connection) -> None:
    now = history.execute(text("SELECT now()")).scalar_one()
    current = history.execute(
        text("SELECT * FROM vspc.job_sla_current ORDER BY instance_uid")
    ).all()
    at_now = history.execute(
        text("SELECT * FROM vspc.job_sla_at(now()) ORDER BY instance_uid")
    ).all()
    assert current == at_now
    by_uid = {r.instance_uid: r for r in current}
    assert set(by_uid) == {job(2), job(3), job(12), job(21)}  # K1 was deleted
    j2, j3 = by_uid[job(2)], by_uid[job(3)]
    assert (j2.last_status, j2.last_success_at, j2.consecutive_failures) == (
        "Success",
        at(4, 3, 30),
        0,
    )
    hours = Decimal((now - at(4, 3, 30)) / timedelta(hours=1)).quantize(Decimal("0.01"))
    assert j2.hours_since_success == hours
    assert j2.rpo_met is False  # sixteen days ago
    # J3: warning on day 2 is its last success, one failure after it.
    assert (j3.last_status, j3.last_success_at, j3.consecutive_failures) == (
        "Failed",
        at(2, 22, 30),
        1,
    )


def test_settings_are_checked(fresh_db: Engine) -> None:
    with pytest.raises(DataError, match="time zone"), fresh_db.begin() as conn:
        conn.execute(text("UPDATE vspc.report_settings SET time_zone = 'Mars/Olympus'"))
    with pytest.raises(IntegrityError), fresh_db.begin() as conn:
        conn.execute(text("INSERT INTO vspc.report_settings (id) VALUES (false)"))
    with pytest.raises(IntegrityError), fresh_db.begin() as conn:
        conn.execute(text("INSERT INTO vspc.sla_policy VALUES (NULL, 12)"))  # second default
    with pytest.raises(IntegrityError), fresh_db.begin() as conn:
        conn.execute(text("UPDATE vspc.sla_policy SET rpo_hours = 0"))
    with fresh_db.connect() as conn:
        assert conn.execute(text("SELECT time_zone FROM vspc.report_settings")).all() == [("UTC",)]


def test_refresh_from_a_day_equals_a_full_refresh(history: Connection) -> None:
    everything = history.execute(
        text("SELECT * FROM vspc.sla_daily_counts ORDER BY day, organization_uid")
    ).all()
    written = history.execute(text("SELECT vspc.refresh_sla_daily(:t)"), {"t": at(3, 12)})
    assert written.scalar_one() > 0
    again = history.execute(
        text("SELECT * FROM vspc.sla_daily_counts ORDER BY day, organization_uid")
    ).all()
    assert again == everything


def test_a_job_first_seen_at_midnight_counts_on_the_day_that_ends_then(fresh_db: Engine) -> None:
    # The days read only versions opened by the end of the last day judged: a version opened
    # exactly at midnight is live at the end of the day before; one opened a microsecond later
    # is not, nor on any earlier day. Sessions before the warehouse's first look (the days a
    # first sync catches up on) count as runs on their own days.
    midnight = at(2)
    rows = [
        *versions(job(31), ORG_A, Seen(midnight, "Success", at(1, 22), at(1, 23))),
        *versions(
            job(32),
            ORG_A,
            Seen(midnight + timedelta(microseconds=1), "Success", at(0, 22), at(0, 23)),
        ),
    ]
    with fresh_db.begin() as conn:
        insert(conn, rows)
        rebuild(conn)
    with fresh_db.connect() as conn:
        assert daily(conn, ORG_A, 0, 2) == {
            day(0): (0, 1, 1, 0, 0, d("1.0000"), 0, None),  # J32's session, neither live yet
            day(1): (1, 1, 1, 0, 0, d("1.0000"), 1, d("1.0000")),  # J31 live, its run 1 h ago
            day(2): (2, 0, 0, 0, 0, None, 0, d("0.0000")),  # both successes over 24 h old
        }
        # Computed as ranges that end on day 0 or day 1 (the boundary of the versions read):
        # the rows stored by the full computation.
        stored = "SELECT * FROM vspc.sla_daily_counts WHERE day BETWEEN :a AND :b ORDER BY 1, 2"
        computed = "SELECT * FROM vspc.sla_daily_compute(:a, :b, 'UTC', now()) ORDER BY 1, 2"
        for first, last in ((0, 0), (1, 1), (0, 1)):
            days = {"a": day(first), "b": day(last)}
            counts = conn.execute(text(computed), days).all()
            assert counts == conn.execute(text(stored), days).all()
            assert [r.jobs_protected for r in counts] == [0, 1][first : last + 1]


def today_rows(conn: Connection) -> dict[Any, tuple[Any, ...]]:
    rows = conn.execute(
        text(
            f"SELECT organization_uid, {DAILY} FROM vspc.sla_daily "
            "WHERE day = (now() AT TIME ZONE 'UTC')::date"
        )
    ).all()
    return {r[0]: tuple(r[1:]) for r in rows}


def test_today_is_computed_when_read_and_never_stored(history: Connection) -> None:
    today = datetime.now(UTC).date()
    stored = history.execute(text("SELECT max(day) FROM vspc.sla_daily_counts")).scalar_one()
    assert stored == today - timedelta(days=1)  # completed days only
    # Live at this moment: A's J2 and J3 (last successes 16 and 17 days ago), B's K2 (disabled;
    # K1 was deleted), C's M1 (its one success 20 days ago). No session started today.
    assert today_rows(history) == {
        ORG_A: (2, 0, 0, 0, 0, None, 0, d("0.0000")),
        ORG_B: (0, 0, 0, 0, 0, None, 0, None),
        ORG_C: (1, 0, 0, 0, 0, None, 0, d("0.0000")),
    }
    # A session that ended two hours ago counts at once, without any refresh.
    now = datetime.now(UTC)
    history.execute(
        text(
            "UPDATE vspc.backup_agent_job_snapshots SET valid_to = :t "
            "WHERE instance_uid = :uid AND valid_to IS NULL"
        ),
        {"t": now - timedelta(hours=1), "uid": job(21)},
    )
    insert(
        history,
        versions(
            job(21),
            ORG_C,
            Seen(
                now - timedelta(hours=1),
                "Success",
                now - timedelta(hours=3),
                now - timedelta(hours=2),
            ),
        ),
    )
    history.execute(
        text(
            "INSERT INTO vspc.job_run_facts (instance_uid, started_at, source, "
            "organization_uid, ended_at, status, run_id) VALUES (:uid, :s, 'hand', :org, "
            ":e, 'Success', 1)"
        ),
        {
            "uid": job(21),
            "s": now - timedelta(hours=3),
            "e": now - timedelta(hours=2),
            "org": ORG_C,
        },
    )
    started_today = (now - timedelta(hours=3)).date() == today
    assert today_rows(history)[ORG_C] == (
        (1, 1, 1, 0, 0, d("1.0000"), 1, d("1.0000"))
        if started_today
        else (1, 0, 0, 0, 0, None, 1, d("1.0000"))
    )
    assert history.execute(text("SELECT max(day) FROM vspc.sla_daily_counts")).scalar_one() == (
        stored
    )


def test_a_refresh_recomputes_only_days_not_yet_computed(history: Connection) -> None:
    before = history.execute(
        text("SELECT * FROM vspc.sla_daily_counts ORDER BY day, organization_uid")
    ).all()
    assert history.execute(text("SELECT vspc.refresh_sla_daily(now())")).scalar_one() == 0
    # one day back: yesterday is recomputed (three organizations), equal to what it was
    yesterday = datetime.now(UTC) - timedelta(days=1)
    written = history.execute(text("SELECT vspc.refresh_sla_daily(:t)"), {"t": yesterday})
    assert written.scalar_one() == 3
    history.execute(text("DELETE FROM vspc.sla_daily_counts WHERE day >= :d"), {"d": day(10)})
    # since = now, but days 10..yesterday are missing: they are computed
    refilled = history.execute(text("SELECT vspc.refresh_sla_daily(now())")).scalar_one()
    assert refilled == 3 * (len({r.day for r in before}) - 10)
    after = history.execute(
        text("SELECT * FROM vspc.sla_daily_counts ORDER BY day, organization_uid")
    ).all()
    assert after == before


# ---------------------------------------------------------------- through real syncs
def wire_sessions(jobs: list[dict[str, Any]]) -> dict[tuple[str, datetime], str]:
    """(uid, lastRun) -> final status, read from what the console served."""
    finals = {"success": "Success", "warning": "Warning", "failed": "Failed"}
    return {
        (j["instanceUid"].lower(), instant(j["lastRun"])): finals[j["status"].lower()]
        for j in jobs
        if j.get("lastRun") and str(j.get("status")).lower() in finals
    }


def instant(value: str) -> datetime:
    from tests.test_pipeline import instant as parse

    parsed = parse(value)
    assert parsed is not None
    return parsed


def test_syncs_record_every_observed_session(
    fresh_db: Engine, settings: Any, simulator: Simulator
) -> None:
    expected: dict[tuple[str, datetime], str] = {}
    for hours in (0, 24, 24, 6):
        simulator.advance(hours)
        expected.update(wire_sessions(simulator.every_job()))  # a later look at a session wins
        assert run_once(settings, engine=fresh_db, sleep=no_sleep).status == "success"
    with fresh_db.connect() as conn:
        got = {
            (str(r.instance_uid), r.started_at): r.status
            for r in conn.execute(
                text("SELECT instance_uid, started_at, status FROM vspc.job_runs")
            )
        }
        assert got == expected
        assert len(set(expected.values())) == 3  # the data has every outcome
        incremental = [
            conn.execute(text(f"SELECT * FROM vspc.{t} ORDER BY 1, 2")).all()
            for t in ("job_run_facts", "sla_daily_counts")
        ]
        live = conn.execute(
            text("SELECT count(*) FROM vspc.backup_agent_jobs WHERE deleted_at IS NULL")
        ).scalar_one()
        assert conn.execute(text("SELECT count(*) FROM vspc.job_sla_current")).scalar_one() == live
    with fresh_db.begin() as conn:
        rebuild(conn)
        full = [
            conn.execute(text(f"SELECT * FROM vspc.{t} ORDER BY 1, 2")).all()
            for t in ("job_run_facts", "sla_daily_counts")
        ]
    assert incremental == full  # kept run by run == derived from the whole history


def test_a_session_seen_running_then_finished_is_one_run(
    fresh_db: Engine, settings: Any, simulator: Simulator
) -> None:
    uid = simulator.every_job()[0]["instanceUid"]
    start = "2026-10-31T22:00:00.0000000+02:00"
    simulator.mutate(uid, status="running", lastRun=start, lastEndTime="2026-10-30T21:00:00+02:00")
    assert run_once(settings, engine=fresh_db, sleep=no_sleep).status == "success"
    simulator.mutate(uid, status="success", lastEndTime="2026-10-31T22:45:00+02:00")
    assert run_once(settings, engine=fresh_db, sleep=no_sleep).status == "success"
    with fresh_db.connect() as conn:
        runs = conn.execute(
            text(
                "SELECT started_at, ended_at, duration_s, status FROM vspc.job_runs "
                "WHERE instance_uid = :uid"
            ),
            {"uid": uid},
        ).all()
    assert [tuple(r) for r in runs] == [
        (instant(start), at_utc(2026, 10, 31, 20, 45), 2700, "Success")
    ]


def at_utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def test_only_what_sla_daily_counts_moves_its_days(
    fresh_db: Engine, settings: Any, simulator: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    uid = simulator.every_job()[0]["instanceUid"]
    start = "2026-10-01T01:00:00+00:00"
    simulator.mutate(uid, status="Failed", lastRun=start, lastEndTime="2026-10-01T01:30:00Z")
    assert run_once(settings, engine=fresh_db, sleep=no_sleep).status == "success"

    def refreshed_from() -> str:
        [message] = [r.getMessage() for r in caplog.records if r.name == "etl.load.reporting"]
        caplog.clear()
        return message.split(" from ")[1].split(" in ")[0]

    caplog.set_level("DEBUG", logger="etl.load.reporting")
    simulator.mutate(uid, name="renamed job")  # same session, a new name: today only
    second = run_once(settings, engine=fresh_db, sleep=no_sleep)
    with fresh_db.connect() as conn:
        started = conn.execute(
            text("SELECT started_at FROM vspc.etl_runs WHERE run_id = :id"), {"id": second.run_id}
        ).scalar_one()
    assert refreshed_from() == started.isoformat()
    simulator.mutate(uid, status="Success")  # the same session counted differently
    assert run_once(settings, engine=fresh_db, sleep=no_sleep).status == "success"
    assert refreshed_from() == instant(start).isoformat()
    with fresh_db.connect() as conn:
        row = conn.execute(
            text("SELECT job_name, status FROM vspc.job_runs WHERE instance_uid = :u"), {"u": uid}
        ).one()
    assert tuple(row) == ("renamed job", "Success")
