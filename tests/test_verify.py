"""The invariant checker (``etl.verify``) and ``vspc-etl verify``: each invariant, broken on
purpose inside a transaction that is rolled back, is reported exactly."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import Connection, Engine, text
from sqlalchemy.engine import URL

from etl.cli import main
from etl.load.runs import SYNC_LOCK_CLASS
from etl.pipeline import run_once
from etl.simulator import Simulator
from etl.verify import check_invariants, warehouse_counts
from tests.conftest import no_sleep

SOURCE = "test-console"


@pytest.fixture
def history(fresh_db: Engine, settings: Any, simulator: Simulator) -> dict[str, str]:
    """Three runs: a first load, a day of changes, a deletion. Returns a few uids to break."""
    assert run_once(settings, engine=fresh_db, sleep=no_sleep).status == "success"
    added = simulator.advance(24).added
    assert run_once(settings, engine=fresh_db, sleep=no_sleep).status == "success"
    gone = simulator.jobs()[0]["instanceUid"].lower()
    simulator.delete_job(gone)
    assert run_once(settings, engine=fresh_db, sleep=no_sleep).status == "success"
    with fresh_db.connect() as conn:
        changed = conn.execute(
            text(
                "SELECT instance_uid::text FROM vspc.backup_agent_job_snapshots "
                "WHERE NOT is_deleted GROUP BY 1 HAVING count(*) >= 2 ORDER BY 1 LIMIT 1"
            )
        ).scalar_one()
        single = conn.execute(
            text(
                "SELECT instance_uid::text FROM vspc.backup_agent_job_snapshots "
                "GROUP BY 1 HAVING count(*) = 1 ORDER BY 1 LIMIT 1"
            )
        ).scalar_one()
    # Every job ever seen keeps its row: the first load's, those the day added.
    return {"gone": gone, "changed": changed, "single": single, "jobs": str(60 + len(added))}


@pytest.fixture
def tx(fresh_db: Engine) -> Iterator[Connection]:
    """A connection in a transaction that is rolled back: break things freely."""
    with fresh_db.connect() as conn:
        conn.begin()
        yield conn
        conn.rollback()


def found(conn: Connection) -> set[tuple[str, str, str]]:
    return {(v.invariant, v.subject, v.detail) for v in check_invariants(conn)}


def kinds(conn: Connection) -> set[tuple[str, str]]:
    return {(v.invariant, v.subject) for v in check_invariants(conn)}


def test_a_synced_warehouse_is_sound(fresh_db: Engine, history: dict[str, str]) -> None:
    assert check_invariants(fresh_db) == []
    assert check_invariants(fresh_db, SOURCE) == []
    counts = warehouse_counts(fresh_db)
    assert counts["runs"] == 3
    assert counts["jobs"] == int(history["jobs"])
    assert counts["versions"] > counts["jobs"]
    assert counts["points"] > counts["jobs"]
    assert warehouse_counts(fresh_db, "another-console") == {
        "jobs": 0,
        "versions": 0,
        "points": 0,
        "runs": 0,
    }


def test_two_current_versions(tx: Connection, history: dict[str, str]) -> None:
    uid = history["single"]
    tx.execute(text("DROP INDEX vspc.uq_backup_agent_job_snapshots_current"))
    # a copy one hour later (the same valid_from would break the primary key)
    tx.execute(
        text(
            "CREATE TEMP TABLE copy ON COMMIT DROP AS SELECT * FROM "
            "vspc.backup_agent_job_snapshots WHERE instance_uid = CAST(:u AS uuid)"
        ).bindparams(u=uid)
    )
    tx.execute(text("UPDATE copy SET valid_from = valid_from + interval '1 hour'"))
    tx.execute(text("INSERT INTO vspc.backup_agent_job_snapshots SELECT * FROM copy"))
    # the copy equals the job row, so only the history's shape is wrong
    assert kinds(tx) == {("one_current_version", uid), ("versions_meet", uid)}
    detail = next(v.detail for v in check_invariants(tx) if v.invariant == "one_current_version")
    assert detail == "2 versions have valid_to NULL"


@pytest.mark.parametrize(
    ("shift", "word"),
    [("- interval '1 ms'", "gap after"), ("+ interval '1 ms'", "overlaps the next")],
)
def test_versions_that_do_not_meet(
    tx: Connection, history: dict[str, str], shift: str, word: str
) -> None:
    uid = history["changed"]
    tx.execute(
        text(
            f"UPDATE vspc.backup_agent_job_snapshots SET valid_to = valid_to {shift} "
            "WHERE instance_uid = :u AND valid_to = (SELECT min(valid_to) "
            "FROM vspc.backup_agent_job_snapshots WHERE instance_uid = :u)"
        ),
        {"u": uid},
    )
    violations = check_invariants(tx)
    assert [(v.invariant, v.subject) for v in violations] == [("versions_meet", uid)]
    assert violations[0].detail.startswith("gap after" if word == "gap after" else "version")
    assert word in violations[0].detail


def test_closed_last_version_leaves_the_job_without_a_current_one(
    tx: Connection, history: dict[str, str]
) -> None:
    uid = history["single"]
    tx.execute(
        text(
            "UPDATE vspc.backup_agent_job_snapshots SET valid_to = valid_from + interval '1 day' "
            "WHERE instance_uid = :u"
        ),
        {"u": uid},
    )
    violations = {v.invariant: v for v in check_invariants(tx)}
    assert {(name, v.subject) for name, v in violations.items()} == {
        ("job_is_current_version", uid),
        ("versions_meet", uid),
    }
    assert violations["job_is_current_version"].detail == "job row without a current version"
    assert violations["versions_meet"].detail.endswith("the job has no current version")


def test_job_row_differing_from_its_current_version(
    tx: Connection, history: dict[str, str]
) -> None:
    uid = history["changed"]
    tx.execute(
        text("UPDATE vspc.backup_agent_jobs SET name = 'tampered' WHERE instance_uid = :u"),
        {"u": uid},
    )
    assert found(tx) == {
        ("job_is_current_version", uid, "job row differs from its current version")
    }


def test_unknown_platform(tx: Connection, history: dict[str, str]) -> None:
    uid = history["single"]
    tx.execute(
        text("UPDATE vspc.backup_agent_jobs SET system_type = 'Solaris' WHERE instance_uid = :u"),
        {"u": uid},
    )
    tx.execute(
        text(
            "UPDATE vspc.backup_agent_job_snapshots SET system_type = 'Solaris' "
            "WHERE instance_uid = :u"
        ),
        {"u": uid},
    )
    assert {v[:2] for v in found(tx)} == {("known_platform", uid)}
    assert {v[2] for v in found(tx)} == {
        "the job row has system_type 'Solaris'",
        f"the version from {version_start(tx, uid)} has system_type 'Solaris'",
    }


def test_a_job_whose_versions_change_platform(tx: Connection, history: dict[str, str]) -> None:
    uid = history["changed"]
    platform = tx.execute(
        text("SELECT system_type FROM vspc.backup_agent_jobs WHERE instance_uid = :u"),
        {"u": uid},
    ).scalar_one()
    other = "Mac" if platform != "Mac" else "Linux"
    tx.execute(
        text(
            "UPDATE vspc.backup_agent_job_snapshots SET system_type = :t "
            "WHERE instance_uid = :u AND valid_to IS NOT NULL"
        ),
        {"u": uid, "t": other},
    )
    both = ", ".join(sorted((platform, other)))
    assert found(tx) == {("one_platform_per_job", uid, f"versions of {both}")}


def version_start(conn: Connection, uid: str) -> str:
    return str(
        conn.execute(
            text(
                "SELECT valid_from::text FROM vspc.backup_agent_job_snapshots "
                "WHERE instance_uid = :u"
            ),
            {"u": uid},
        ).scalar_one()
    )


def test_raw_counts_as_a_column(tx: Connection, history: dict[str, str]) -> None:
    uid = history["changed"]
    tx.execute(
        text(
            "UPDATE vspc.backup_agent_jobs SET raw = raw || '{\"extra\": 1}' "
            "WHERE instance_uid = :u"
        ),
        {"u": uid},
    )
    assert kinds(tx) == {("job_is_current_version", uid)}


def test_missing_job_row(tx: Connection, history: dict[str, str]) -> None:
    uid = history["single"]
    tx.execute(text("DELETE FROM vspc.backup_agent_jobs WHERE instance_uid = :u"), {"u": uid})
    assert found(tx) == {("job_is_current_version", uid, "current version without a job row")}


def test_deleted_at_without_tombstone_and_tombstone_without_deleted_at(
    tx: Connection, history: dict[str, str]
) -> None:
    live, gone = history["changed"], history["gone"]
    tx.execute(
        text("UPDATE vspc.backup_agent_jobs SET deleted_at = now() WHERE instance_uid = :u"),
        {"u": live},
    )
    tx.execute(
        text("UPDATE vspc.backup_agent_jobs SET deleted_at = NULL WHERE instance_uid = :u"),
        {"u": gone},
    )
    violations = check_invariants(tx)
    assert {(v.invariant, v.subject) for v in violations} == {
        ("deleted_iff_tombstone", live),
        ("deleted_iff_tombstone", gone),
    }
    details = {v.subject: v.detail for v in violations}
    assert "is not a tombstone" in details[live]
    assert details[gone].startswith("deleted_at is null but the current version")


def test_deleted_at_must_be_the_tombstones_start(tx: Connection, history: dict[str, str]) -> None:
    gone = history["gone"]
    tx.execute(
        text(
            "UPDATE vspc.backup_agent_jobs SET deleted_at = deleted_at + interval '1 second' "
            "WHERE instance_uid = :u"
        ),
        {"u": gone},
    )
    violations = check_invariants(tx)
    assert [(v.invariant, v.subject) for v in violations] == [("deleted_iff_tombstone", gone)]
    assert "but the tombstone is from" in violations[0].detail


def test_changes_of_a_run_not_recorded_success(tx: Connection, history: dict[str, str]) -> None:
    tx.execute(text("UPDATE vspc.etl_runs SET status = 'failed' WHERE run_id = 3"))
    violations = check_invariants(tx, limit=1000)
    assert {v.invariant for v in violations} == {"change_from_success"}
    points = [v for v in violations if v.subject.startswith("restore point ")]
    seen = tx.execute(
        text("SELECT count(*) FROM vspc.restore_points WHERE last_run_id = 3")
    ).scalar_one()
    assert len(points) == seen  # the points it wrote (new ones: none since run 2 here)
    violations = [v for v in violations if v not in points]
    # run 3 wrote the tombstone, rewrote the deleted job's row, and nothing else
    assert [v.subject for v in violations] == [
        f"job {history['gone']}",
        f"version {history['gone']} from {violations[1].subject.split(' from ')[1]}",
    ]
    assert violations[0].detail == "written by run 3, which is failed"


def test_listing_is_capped_per_invariant(tx: Connection, history: dict[str, str]) -> None:
    tx.execute(text("UPDATE vspc.etl_runs SET status = 'failed' WHERE run_id = 1"))
    violations = check_invariants(tx, limit=5)
    assert len(violations) == 6
    assert violations[-1].subject == "more"
    written = tx.execute(
        text(
            "SELECT (SELECT count(*) FROM vspc.backup_agent_job_snapshots WHERE run_id = 1)"
            " + (SELECT count(*) FROM vspc.backup_agent_jobs WHERE last_run_id = 1)"
            " + (SELECT count(*) FROM vspc.restore_points WHERE last_run_id = 1)"
        )
    ).scalar_one()
    assert written >= 60  # the first run wrote a version of each of the 60 jobs
    assert violations[-1].detail == f"and {written - 5} more like these"


def test_a_point_gone_without_a_complete_full_read(tx: Connection, history: dict[str, str]) -> None:
    uid = tx.execute(
        text("SELECT instance_uid::text FROM vspc.restore_points ORDER BY 1 LIMIT 1")
    ).scalar_one()
    started = tx.execute(text("SELECT started_at FROM vspc.etl_runs WHERE run_id = 2")).scalar_one()
    tx.execute(
        text("UPDATE vspc.restore_points SET gone_at = :g WHERE instance_uid = :u"),
        {"g": started, "u": uid},
    )
    [violation] = check_invariants(tx)
    assert (violation.invariant, violation.subject) == ("point_gone_by_full_read", uid)
    assert "is the start of no successful complete full read" in violation.detail
    tx.execute(
        text(
            "UPDATE vspc.restore_points SET gone_at = first_seen_at - interval '1 s' "
            "WHERE instance_uid = :u"
        ),
        {"u": uid},
    )
    [violation] = check_invariants(tx)
    assert "is before first_seen_at" in violation.detail


def test_a_live_point_the_last_complete_full_read_did_not_list(
    tx: Connection, history: dict[str, str]
) -> None:
    # Run 3 read only the new points; called a complete full read, it did not list the others.
    tx.execute(
        text(
            "UPDATE vspc.etl_runs SET restore_points_read = 'full', restore_points_gone = 0 "
            "WHERE run_id = 3"
        )
    )
    unlisted = set(
        tx.execute(
            text(
                "SELECT instance_uid::text FROM vspc.restore_points "
                "WHERE gone_at IS NULL AND last_run_id < 3"
            )
        ).scalars()
    )
    violations = check_invariants(tx, limit=100_000)
    assert unlisted
    assert {v.subject for v in violations} == unlisted
    assert {v.invariant for v in violations} == {"point_live_is_listed"}
    assert "complete full read 3 did not list it" in violations[0].detail


def orphan(conn: Connection, status: str = "running", finished: bool = False) -> int:
    return int(
        conn.execute(
            text(
                "INSERT INTO vspc.etl_runs (source, started_at, finished_at, status) "
                "VALUES (:s, now(), CASE WHEN :f THEN now() END, :st) RETURNING run_id"
            ),
            {"s": SOURCE, "f": finished, "st": status},
        ).scalar_one()
    )


def test_running_row_without_a_live_process_is_an_orphan(tx: Connection, fresh_db: Engine) -> None:
    run_id = orphan(tx)
    violations = check_invariants(tx)
    assert [(v.invariant, v.subject) for v in violations] == [("run_finished", f"run {run_id}")]
    assert violations[0].detail.startswith("running run of test-console started ")
    assert violations[0].detail.endswith("no live process holds the sync lock of its source")
    assert check_invariants(tx, "another-console") == []


def test_running_row_whose_process_holds_the_lock_is_alive(
    tx: Connection, fresh_db: Engine
) -> None:
    older = orphan(tx)
    newer = orphan(tx)
    with fresh_db.connect() as holder:  # stands in for the live sync's session
        holder.execute(
            text("SELECT pg_advisory_lock(:c, hashtext(:s))"), {"c": SYNC_LOCK_CLASS, "s": SOURCE}
        )
        # Only one sync per source: the newest running row is the live one.
        assert [(v.invariant, v.subject) for v in check_invariants(tx)] == [
            ("run_finished", f"run {older}")
        ]
        holder.execute(
            text("SELECT pg_advisory_unlock(:c, hashtext(:s))"), {"c": SYNC_LOCK_CLASS, "s": SOURCE}
        )
    assert {v.subject for v in check_invariants(tx)} == {f"run {older}", f"run {newer}"}


def test_finished_row_without_finished_at(tx: Connection, fresh_db: Engine) -> None:
    run_id = orphan(tx, status="failed")
    assert found(tx) == {
        ("run_finished", f"run {run_id}", "failed run of test-console has no finished_at")
    }
    assert orphan(tx, status="success", finished=True) > run_id
    assert len(check_invariants(tx)) == 1


# -- the command ---------------------------------------------------------------------------


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.chdir(tmp_path)
    return CliRunner()


def test_verify_command_exits_0_when_sound(
    runner: CliRunner, database_url: URL, fresh_db: Engine, history: dict[str, str]
) -> None:
    env = {"DATABASE_URL": database_url.render_as_string(hide_password=False)}
    result = runner.invoke(main, ["verify"], env=env)
    assert result.exit_code == 0, result.output
    counts = warehouse_counts(fresh_db)
    assert result.stdout == (
        f"ok: {counts['jobs']} jobs, {counts['versions']} versions, {counts['points']} restore "
        "points, 3 runs; every invariant holds\n"
    )


def test_verify_command_lists_violations_and_exits_1(
    runner: CliRunner, database_url: URL, fresh_db: Engine, history: dict[str, str]
) -> None:
    with fresh_db.begin() as conn:
        conn.execute(
            text("UPDATE vspc.backup_agent_jobs SET name = 'x' WHERE instance_uid = :u"),
            {"u": history["changed"]},
        )
        run_id = orphan(conn)
    env = {"DATABASE_URL": database_url.render_as_string(hide_password=False)}
    result = runner.invoke(main, ["verify", "--source", SOURCE], env=env)
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        f"job_is_current_version: {history['changed']}: job row differs from its current version",
        f"run_finished: run {run_id}: " + check_invariants(fresh_db)[1].detail,
    ]
    assert result.stderr.startswith("error: 2 invariant violation(s) in ")
