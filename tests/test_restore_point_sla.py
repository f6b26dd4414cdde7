"""Restore points in the SLA answers (job_sla_at, sla_daily, computer_sla_current, report
--by computer) against hand-built histories: every number is counted by hand.

The fixed history (days of tests/history.py, RPO 24 h, UTC):

- A/J1 on computer SRV-01: session day 0 01:00-02:00 Success, day 1 01:00-01:30 Failed (seen at
  06:00 each). Restore points: day 0 02:00 (merged away day 5 06:00), day 1 14:00 (a run no
  sync saw), day 3 14:00.
- B/J2: session day 0 01:00-02:00 Success, deleted day 2 12:00. Points: day 0 02:00, day 1
  03:00, day 2 03:00 (the day it vanished), day 3 03:00 (after it vanished).
- C: computer WS-07 with no job the console lists; one point without a job, day 1 05:00.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import Connection, Engine, text
from sqlalchemy.engine import URL

from etl.cli import main
from etl.load.reporting import rebuild
from tests.history import ORG_A, ORG_B, ORG_C, Seen, at, day, insert, job, versions

J1, J2, J3 = job(1), job(2), job(3)
SRV = uuid.UUID("a0000000-0000-4000-8000-000000000001")
WS = uuid.UUID("a0000000-0000-4000-8000-000000000002")
OLD = uuid.UUID("a0000000-0000-4000-8000-000000000003")
MA_SRV = uuid.UUID("b0000000-0000-4000-8000-000000000001")
MA_WS = uuid.UUID("b0000000-0000-4000-8000-000000000002")


def point(
    conn: Connection,
    created: datetime,
    *,
    job_uid: uuid.UUID | None,
    agent: uuid.UUID,
    gone_at: datetime | None = None,
) -> uuid.UUID:
    """A restore point written as a sync would (one statement: the triggers see it)."""
    uid = uuid.uuid4()
    conn.execute(
        text(
            "INSERT INTO vspc.restore_points (instance_uid, source, backup_agent_uid, job_uid, "
            "creation_date, raw, first_seen_at, gone_at) VALUES (:uid, 'hand', :agent, :job, "
            ":created, '{}', now(), :gone)"
        ),
        {"uid": uid, "agent": agent, "job": job_uid, "created": created, "gone": gone_at},
    )
    return uid


CURRENT_JOBS = (
    "INSERT INTO vspc.backup_agent_jobs (instance_uid, source, backup_agent_uid, "
    "organization_uid, name, status, is_enabled, raw, first_seen_at, updated_at, deleted_at, "
    "system_type) SELECT DISTINCT ON (instance_uid) instance_uid, source, backup_agent_uid, "
    "organization_uid, name, status, is_enabled, raw, "
    "min(valid_from) OVER (PARTITION BY instance_uid), valid_from, "
    "CASE WHEN is_deleted THEN valid_from END, system_type "
    "FROM vspc.backup_agent_job_snapshots ORDER BY instance_uid, valid_from DESC"
)
"""``backup_agent_jobs`` from the snapshots, as the syncs would have left it: the jobs the
warehouse knows (a point of any other job counts for its computer's organization)."""


def agents(conn: Connection) -> None:
    """SRV-01 (A, Windows, Online) and WS-07 (C, Linux, Inaccessible) with their management
    agents; OLD (A), an agent whose only point was merged away."""
    conn.execute(
        text(
            "INSERT INTO vspc.management_agents (instance_uid, source, connection_status, "
            "last_heartbeat_at, first_seen_at, updated_at) VALUES "
            "(:m1, 'hand', 'Online', :h1, now(), now()), "
            "(:m2, 'hand', 'Inaccessible', :h2, now(), now())"
        ),
        {"m1": MA_SRV, "m2": MA_WS, "h1": at(20), "h2": at(3, 8)},
    )
    conn.execute(
        text(
            "INSERT INTO vspc.backup_agents (instance_uid, source, computer_name, "
            "organization_uid, agent_platform, management_agent_uid, first_seen_at, "
            "updated_at) VALUES "
            "(:srv, 'hand', 'SRV-01', :a, 'Windows', :m1, now(), now()), "
            "(:ws, 'hand', 'WS-07', :c, 'Linux', :m2, now(), now()), "
            "(:old, 'hand', 'OLD-PC', :a, 'Windows', NULL, now(), now())"
        ),
        {"srv": SRV, "ws": WS, "old": OLD, "a": ORG_A, "c": ORG_C, "m1": MA_SRV, "m2": MA_WS},
    )
    conn.execute(
        text(
            "INSERT INTO vspc.organizations VALUES (:a, 'hand', 'Acme Corp', 'acme', "
            "'Company', now(), now())"
        ),
        {"a": ORG_A},
    )


def on_agent(conn: Connection, uid: uuid.UUID, agent: uuid.UUID) -> None:
    conn.execute(
        text(
            "UPDATE vspc.backup_agent_job_snapshots SET backup_agent_uid = :agent "
            "WHERE instance_uid = :uid"
        ),
        {"uid": uid, "agent": agent},
    )


@pytest.fixture
def history(fresh_db: Engine) -> Iterator[Connection]:
    """The fixed history of the module docstring, loaded and derived."""
    with fresh_db.begin() as conn:
        insert(
            conn,
            [
                *versions(
                    J1,
                    ORG_A,
                    Seen(at(0, 6), "Success", at(0, 1), at(0, 2)),
                    Seen(at(1, 6), "Failed", at(1, 1), at(1, 1, 30)),
                ),
                *versions(
                    J2,
                    ORG_B,
                    Seen(at(0, 6), "Success", at(0, 1), at(0, 2)),
                    deleted_at=at(2, 12),
                ),
            ],
        )
        on_agent(conn, J1, SRV)
        conn.execute(text(CURRENT_JOBS))
        agents(conn)
        point(conn, at(0, 2), job_uid=J1, agent=SRV, gone_at=at(5, 6))
        point(conn, at(1, 14), job_uid=J1, agent=SRV)
        point(conn, at(3, 14), job_uid=J1, agent=SRV)
        for created in (at(0, 2), at(1, 3), at(2, 3), at(3, 3)):
            point(conn, created, job_uid=J2, agent=SRV)
        point(conn, at(1, 5), job_uid=None, agent=WS)
        rebuild(conn)
    with fresh_db.connect() as conn:
        yield conn


def daily(conn: Connection, org: uuid.UUID) -> dict[int, tuple[int, int, int]]:
    """Day number -> (jobs_protected, jobs_meeting_rpo, restore_points_created), days 0-7."""
    rows = conn.execute(
        text(
            "SELECT day, jobs_protected, jobs_meeting_rpo, restore_points_created "
            "FROM vspc.sla_daily WHERE organization_uid = :org AND day <= :last ORDER BY day"
        ),
        {"org": org, "last": day(7)},
    ).all()
    return {(r[0] - day(0)).days: (r[1], r[2], r[3]) for r in rows}


def sla_at(conn: Connection, uid: uuid.UUID, t: datetime) -> tuple[Any, ...]:
    return tuple(
        conn.execute(
            text(
                "SELECT last_status, last_success_at, last_restore_point_at, "
                "hours_since_success, rpo_met, consecutive_failures "
                "FROM vspc.job_sla_at(:t) WHERE instance_uid = :uid"
            ),
            {"t": t, "uid": uid},
        ).one()
    )


def test_a_newer_restore_point_meets_the_rpo_after_a_failed_session(
    history: Connection,
) -> None:
    # day 2 12:00: the last session seen failed (day 1); the last success ended day 0 02:00,
    # 58 h before; the point of day 1 14:00 is 22 h old: within 24 h.
    assert sla_at(history, J1, at(2, 12)) == (
        "Failed",
        at(0, 2),
        at(1, 14),
        Decimal("22.00"),
        True,
        1,
    )
    # day 3 12:00: the newest point is 46 h old
    assert sla_at(history, J1, at(3, 12))[2:5] == (at(1, 14), Decimal("46.00"), False)
    # day 3 14:30: the point of 14:00 counts from its creation on
    assert sla_at(history, J1, at(3, 14, 30))[2:5] == (at(3, 14), Decimal("0.50"), True)


def test_job_sla_at_a_past_instant_ignores_points_created_after_it(history: Connection) -> None:
    # day 1 12:00: the point of day 1 14:00 did not exist yet; day 0 02:00 is 34 h old
    assert sla_at(history, J1, at(1, 12))[2:5] == (at(0, 2), Decimal("34.00"), False)
    # day 1 14:00 exactly: the point created at that instant counts
    assert sla_at(history, J1, at(1, 14))[2:5] == (at(1, 14), Decimal("0.00"), True)


def test_a_point_merged_away_no_longer_counts_from_then_on(fresh_db: Engine) -> None:
    """A point merged away soon after its creation (the console lost it) proves nothing after."""
    with fresh_db.begin() as conn:
        insert(conn, versions(J1, ORG_A, Seen(at(0, 6), "Success", at(0, 1), at(0, 2))))
        conn.execute(text(CURRENT_JOBS))
        point(conn, at(6, 10), job_uid=J1, agent=SRV, gone_at=at(6, 20))
        rebuild(conn)
    with fresh_db.connect() as conn:
        assert sla_at(conn, J1, at(6, 12))[2:5] == (at(6, 10), Decimal("2.00"), True)
        assert sla_at(conn, J1, at(6, 21))[2:5] == (None, Decimal("163.00"), False)
        # day 6 ends after the merge: not meeting; the point still counts as created that day
        assert daily(conn, ORG_A)[6] == (1, 0, 1)
        # the merge is written after the day was computed: the trigger recomputes it
    with fresh_db.begin() as conn:  # listed again: the day's row is recomputed by the trigger
        conn.execute(text("UPDATE vspc.restore_points SET gone_at = NULL"))
    with fresh_db.connect() as conn:
        assert daily(conn, ORG_A)[6] == (1, 1, 1)
        assert daily(conn, ORG_A)[7] == (1, 0, 0)  # 38 h after the point at the end of day 7


def test_sla_daily_counts_points_per_day_and_organization(history: Connection) -> None:
    assert daily(history, ORG_A) == {
        0: (1, 1, 1),  # the point merged away on day 5 still counts for the day it was created
        1: (1, 1, 1),  # the session of day 0 ended 46 h before; the point of 14:00, 10 h
        2: (1, 0, 0),
        3: (1, 1, 1),
        4: (1, 0, 0),
        5: (1, 0, 0),
        6: (1, 0, 0),
        7: (1, 0, 0),
    }
    # J2 vanished on day 2 at 12:00: its points of day 2 and day 3 do not count
    assert daily(history, ORG_B) == {0: (1, 1, 1), 1: (1, 1, 1)}
    # the point without a job counts for the organization of its computer, for no job
    assert daily(history, ORG_C) == {1: (0, 0, 1)}
    stored = history.execute(
        text("SELECT sum(restore_points_created) FROM vspc.sla_daily_counts")
    ).scalar_one()
    assert stored == 6


def test_a_late_indexed_point_updates_the_day_already_computed(history: Connection) -> None:
    assert daily(history, ORG_A)[4] == (1, 0, 0)
    history.commit()
    point(history, at(4, 10), job_uid=J1, agent=SRV)
    history.commit()
    assert daily(history, ORG_A)[4] == (1, 1, 1)
    assert daily(history, ORG_A)[5] == (1, 0, 0)  # 38 h old at the end of day 5
    assert sla_at(history, J1, at(5, 0))[2:5] == (at(4, 10), Decimal("14.00"), True)


def test_job_sla_current_names_the_newest_point_still_listed(history: Connection) -> None:
    rows = history.execute(
        text(
            "SELECT instance_uid, last_restore_point_at, rpo_met FROM vspc.job_sla_current "
            "ORDER BY instance_uid"
        )
    ).all()
    assert [tuple(r) for r in rows] == [(J1, at(3, 14), False)]  # J2 is deleted


NOW = datetime.now(UTC).replace(microsecond=0)


def ago(hours: float) -> datetime:
    return NOW - timedelta(hours=hours)


@pytest.fixture
def computers(fresh_db: Engine) -> Iterator[Connection]:
    """Now, on SRV-01 (A): J1, last success 51 h ago, failed 27 h ago, its point 30 h ago;
    J3, disabled; a point without a job 2 h ago. WS-07 (C): only a point without a job, 50 h
    ago. OLD-PC (A): only a point merged away."""
    with fresh_db.begin() as conn:
        insert(
            conn,
            [
                *versions(
                    J1,
                    ORG_A,
                    Seen(ago(50), "Success", ago(52), ago(51)),
                    Seen(ago(26), "Failed", ago(28), ago(27)),
                    name="Nightly",
                ),
                *versions(J3, ORG_A, Seen(ago(50), "None", enabled=False), name="Spare"),
            ],
        )
        on_agent(conn, J1, SRV)
        on_agent(conn, J3, SRV)
        conn.execute(text(CURRENT_JOBS))
        agents(conn)
        point(conn, ago(30), job_uid=J1, agent=SRV)
        point(conn, ago(2), job_uid=None, agent=SRV)
        point(conn, ago(50), job_uid=None, agent=WS)
        point(conn, ago(40), job_uid=None, agent=OLD, gone_at=ago(10))
        rebuild(conn)
    with fresh_db.connect() as conn:
        yield conn


def hours(conn: Connection, since: datetime) -> Decimal:
    return Decimal(
        str(
            round(
                (conn.execute(text("SELECT now()")).scalar_one() - since).total_seconds() / 3600, 2
            )
        )
    )


def test_computer_sla_current(computers: Connection) -> None:
    with computers.begin():  # one transaction: one now()
        rows = (
            computers.execute(
                text("SELECT * FROM vspc.computer_sla_current ORDER BY computer_name")
            )
            .mappings()
            .all()
        )
        since_srv, since_ws = hours(computers, ago(2)), hours(computers, ago(50))
        job = computers.execute(
            text(
                "SELECT last_restore_point_at, rpo_met FROM vspc.job_sla_current "
                "WHERE instance_uid = :j"
            ),
            {"j": J1},
        ).one()
    assert [dict(r) for r in rows] == [
        {
            "backup_agent_uid": SRV,
            "source": "hand",
            "computer_name": "SRV-01",
            "organization_uid": ORG_A,
            "organization_name": "Acme Corp",
            "system_type": "Windows",
            "jobs": 2,
            "enabled_jobs": 1,
            "failing_jobs": 1,
            "last_success_at": ago(51),
            "last_restore_point_at": ago(2),
            "hours_since_success": since_srv,
            "rpo_hours": 24,
            "rpo_met": True,
            "connection_status": "Online",
            "last_heartbeat_at": at(20),
        },
        {
            "backup_agent_uid": WS,
            "source": "hand",
            "computer_name": "WS-07",
            "organization_uid": ORG_C,
            "organization_name": None,
            "system_type": "Linux",
            "jobs": 0,
            "enabled_jobs": 0,
            "failing_jobs": 0,
            "last_success_at": None,
            "last_restore_point_at": ago(50),
            "hours_since_success": since_ws,
            "rpo_hours": 24,
            "rpo_met": False,
            "connection_status": "Inaccessible",
            "last_heartbeat_at": at(3, 8),
        },
    ]
    # the point without a job protects the computer, not J1 (its own point is 30 h old)
    assert tuple(job) == (ago(30), False)


def test_report_by_computer(runner: CliRunner, computers: Connection, database_url: URL) -> None:
    env = {"DATABASE_URL": database_url.render_as_string(hide_password=False)}

    def report(*args: str) -> Any:
        result = runner.invoke(main, ["report", "--by", "computer", *args], env=env)
        assert result.exit_code == 0, result.output
        return result

    table = report().stdout.splitlines()
    minute = "%Y-%m-%d %H:%M"
    assert [
        line.split("  ") and [c.strip() for c in line.split("  ") if c.strip()]
        for line in table[:1] + table[2:]
    ] == [
        [
            "organization",
            "computer",
            "platform",
            "jobs",
            "failing",
            "last point (UTC)",
            "RPO met",
            "agent",
            "heartbeat (UTC)",
        ],
        [
            "cccccccc…",
            "WS-07",
            "Linux",
            "0",
            "0",
            ago(50).strftime(minute),
            "no",
            "Inaccessible",
            at(3, 8).strftime(minute),
        ],
        [
            "Acme Corp",
            "SRV-01",
            "Windows",
            "2",
            "1",
            ago(2).strftime(minute),
            "yes",
            "Online",
            at(20).strftime(minute),
        ],
    ]
    assert max(len(line) for line in table) <= 120
    records = json.loads(report("--format", "json").stdout)
    assert [
        (r["computer_name"], r["rpo_met"], r["jobs"], r["enabled_jobs"], r["failing_jobs"])
        for r in records
    ] == [("WS-07", False, 0, 0, 0), ("SRV-01", True, 2, 1, 1)]
    assert records[1]["last_restore_point_at"] == ago(2).isoformat()
    assert records[1]["backup_agent_uid"] == str(SRV)
    csv_lines = report("--format", "csv").stdout.splitlines()
    assert csv_lines[0].startswith("organization_name,computer_name,system_type,jobs,")
    assert len(csv_lines) == 3
    linux = json.loads(report("--format", "json", "--platform", "linux").stdout)
    assert [r["computer_name"] for r in linux] == ["WS-07"]
    acme = json.loads(report("--format", "json", "--organization", "Acme Corp").stdout)
    assert [r["computer_name"] for r in acme] == ["SRV-01"]
    other = report("--source", "elsewhere")
    assert other.stdout == ""
    assert other.stderr == (
        "no live computer for source 'elsewhere': run `vspc-etl sync` (or `vspc-etl demo`) first\n"
    )
