"""End-to-end runs: the simulator over loopback HTTP, a real PostgreSQL, ``run_once``."""

from __future__ import annotations

import re
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL

import etl.load.loader
import etl.load.stage
from etl.pipeline import RunResult, run_once
from etl.simulator import Simulator, SimulatorServer
from tests.conftest import TEST_PASSWORD, TEST_USER, make_settings, no_sleep

# The contract's mapping, written out independently of etl.transform.
UUIDS = {
    "instance_uid": "instanceUid",
    "backup_agent_uid": "backupAgentUid",
    "organization_uid": "organizationUid",
    "config_uid": "configUid",
    "backup_policy_uid": "backupPolicyUid",
}
PLAIN = {
    "name": "name",
    "description": "description",
    "backup_policy_name": "backupPolicyName",
    "backup_policy_failure_message": "backupPolicyFailureMessage",
    "destination": "destination",
    "restore_points": "restorePoints",
    "last_duration": "lastDuration",
    "avg_duration": "avgDuration",
    "is_enabled": "isEnabled",
    "last_modified_by": "lastModifiedBy",
    "failure_message": "failureMessage",
    "backed_up_size": "backedUpSize",
    "free_space": "freeSpace",
}
TIMES = {
    "last_run": "lastRun",
    "last_end_time": "lastEndTime",
    "next_run": "nextRun",
    "last_modified_date": "lastModifiedDate",
}
SPEC = {
    "status": ("None Success Warning Failed Running Starting Stopping Unknown", "status"),
    "operation_mode": ("Server Workstation UnLicensed Unknown", "operationMode"),
    "backup_mode": ("EntireComputer Volume File Unknown", "backupMode"),
    "target_type": ("Local Cloud Unknown", "targetType"),
    "schedule_type": (
        "NotScheduled Daily Monthly Periodically Continuously Unknown",
        "scheduleType",
    ),
    "backup_policy_assign_status": (
        "Unknown Applying Assigned Unassigned Custom Deleting FailedToApply Outdated Warning",
        "backupPolicyAssignStatus",
    ),
}
EVENTS = ["AtLock", "AtLogoff", "WhenBackupTargetIsConnected", "Unknown"]
# Linux and Mac jobs: no scheduleEvents, the detailed targetType.
UNIX_TARGETS = ["BackupRepository", "CloudRepository", "LocalFolder", "SharedFolder", "Unknown"]
COLUMNS = [*UUIDS, *PLAIN, *TIMES, *SPEC, "schedule_events", "system_type"]


def spelled(value: str | None, words: list[str]) -> str | None:
    if value is None:
        return None
    return next((w for w in words if w.lower() == value.lower()), value)


def instant(value: str | None) -> datetime | None:
    """Parse a .NET round-trip timestamp, rounding 100 ns ticks to microseconds."""
    if value is None:
        return None
    head, _, rest = value.partition(".")
    if rest:
        digits = re.match(r"\d*", rest).group()  # type: ignore[union-attr]
        offset = rest[len(digits) :]
        base = datetime.fromisoformat(head + offset.replace("Z", "+00:00"))
        micros = (Decimal("0." + digits) * 1_000_000).quantize(Decimal(1), ROUND_HALF_UP)
        return base + timedelta(microseconds=int(micros))
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def expected_row(record: dict[str, Any], system_type: str = "Windows") -> dict[str, Any]:
    row: dict[str, Any] = {"system_type": system_type}
    for column, field in UUIDS.items():
        row[column] = uuid.UUID(record[field]) if record.get(field) else None
    for column, field in PLAIN.items():
        row[column] = record.get(field)
    for column, field in TIMES.items():
        row[column] = instant(record.get(field))
    for column, (words, field) in SPEC.items():
        row[column] = spelled(record.get(field), words.split())
    events = record.get("scheduleEvents")
    row["schedule_events"] = None if events is None else [spelled(e, EVENTS) for e in events]
    if system_type != "Windows":
        row["schedule_events"] = None
        row["target_type"] = spelled(record.get("targetType"), UNIX_TARGETS)
    return row


def current_rows(engine: Engine) -> dict[str, dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(f"SELECT {', '.join(COLUMNS)}, raw, deleted_at FROM vspc.backup_agent_jobs")
        ).mappings()
        return {str(r["instance_uid"]): dict(r) for r in rows}


def snapshots(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [
            dict(r)
            for r in conn.execute(
                text(
                    "SELECT instance_uid::text AS uid, valid_from, valid_to, is_deleted, run_id, "
                    "status, raw FROM vspc.backup_agent_job_snapshots ORDER BY uid, valid_from"
                )
            ).mappings()
        ]


def run_row(engine: Engine, run_id: int) -> dict[str, Any]:
    with engine.connect() as conn:
        return dict(
            conn.execute(text("SELECT * FROM vspc.etl_runs WHERE run_id = :id"), {"id": run_id})
            .mappings()
            .one()
        )


def sync(settings: Any, engine: Engine) -> RunResult:
    return run_once(settings, engine=engine, sleep=no_sleep)


def assert_mirrors(engine: Engine, simulator: Simulator) -> None:
    """The live rows equal the console's truth of every platform, column by column, raw
    included."""
    truth = {
        j["instanceUid"].lower(): (j, system_type)
        for platform, system_type in (("windows", "Windows"), ("linux", "Linux"), ("mac", "Mac"))
        for j in simulator.jobs(platform)
    }
    rows = current_rows(engine)
    live = {uid: row for uid, row in rows.items() if row["deleted_at"] is None}
    assert set(live) == set(truth)
    assert {system_type for _, system_type in truth.values()} == {"Windows", "Linux", "Mac"}
    for uid, (record, system_type) in truth.items():
        row = live[uid]
        assert row["raw"] == record
        for column, value in expected_row(record, system_type).items():
            assert row[column] == value, (uid, column)


# ---------------------------------------------------------------- first sync, exact columns
def test_first_sync_loads_every_column_exactly(
    fresh_db: Engine, settings: Any, simulator: Simulator
) -> None:
    result = sync(settings, fresh_db)
    assert result.status == "success"
    assert result.complete is True
    assert result.seen == result.inserted == len(simulator.every_job())
    assert (result.updated, result.unchanged, result.deleted, result.rejected) == (0, 0, 0, 0)
    assert_mirrors(fresh_db, simulator)
    versions = snapshots(fresh_db)
    assert len(versions) == result.inserted
    assert all(v["valid_to"] is None and not v["is_deleted"] for v in versions)


def test_the_data_exercises_the_traps(simulator: Simulator) -> None:
    """Guard for the test above: the simulated data really holds what it must prove."""
    jobs = simulator.every_job()
    statuses = {j["status"] for j in jobs}
    assert any(s.islower() for s in statuses)
    assert any(s[0].isupper() for s in statuses)
    stamps = [j["lastRun"] for j in jobs if j.get("lastRun")]
    assert any(len(s.split(".")[-1]) >= 13 for s in stamps if "." in s)  # 7 digits + offset
    assert len({s[-6:] for s in stamps}) > 1  # mixed offsets
    assert any("description" not in j for j in jobs)  # absent fields
    assert any(j.get("freeSpace") is None for j in jobs)
    assert any("\\" in (j.get("destination") or "") for j in jobs)


def test_seed_examples_load_exactly(
    fresh_db: Engine, database_url: URL, seed_jobs: list[dict[str, Any]]
) -> None:
    simulator = Simulator(jobs=0, seed=1, api_keys=("seed-key-1",))
    for job in seed_jobs:
        simulator.add_job(**job)
    with SimulatorServer(simulator, host="127.0.0.1", port=0) as server:
        settings = make_settings(database_url, server, VSPC_API_KEY="seed-key-1")
        result = sync(settings, fresh_db)
    assert (result.status, result.inserted, result.rejected) == ("success", 2, 0)
    rows = current_rows(fresh_db)
    first = rows["724111ac-15f5-bf02-604d-20862fbafece"]
    assert first["destination"] == "C:\\VeeamBackup"
    assert first["last_modified_by"] == "vspc\\administrator"
    assert first["status"] == "Success"
    assert first["operation_mode"] == "Workstation"
    assert first["backup_mode"] == "File"
    assert first["target_type"] == "Local"
    assert first["schedule_type"] == "Daily"
    assert first["schedule_events"] == []
    assert first["last_run"] == datetime(2020, 3, 1, 8, 35, tzinfo=UTC)
    assert first["last_modified_date"] == datetime(2020, 2, 28, 1, 17, 34, 507218, tzinfo=UTC)
    assert first["free_space"] is None and first["description"] is None
    second = rows["3d29a667-2026-2f74-1143-18e04ba3c8e2"]
    # .0325436 s rounds to 032544 µs
    assert second["last_modified_date"] == datetime(2020, 2, 28, 1, 10, 30, 32544, tzinfo=UTC)
    assert second["last_run"] == datetime(2020, 3, 1, 8, 0, tzinfo=UTC)
    assert second["raw"] == seed_jobs[1]


# ---------------------------------------------------------------- later syncs
def test_second_sync_versions_only_what_changed(
    fresh_db: Engine, settings: Any, simulator: Simulator
) -> None:
    first = sync(settings, fresh_db)
    before = {j["instanceUid"]: j for j in simulator.every_job()}
    victim = next(iter(before))
    simulator.delete_job(victim)
    simulator.mutate(sorted(before)[1], name="renamed job")
    added = simulator.add_job()
    after = {j["instanceUid"]: j for j in simulator.every_job()}
    changed = {u for u in after if u in before and after[u] != before[u]}

    second = sync(settings, fresh_db)
    assert second.status == "success" and second.complete
    assert (second.inserted, second.updated, second.deleted) == (1, len(changed), 1)
    assert second.unchanged == len(after) - 1 - len(changed)
    assert second.seen == len(after)
    assert_mirrors(fresh_db, simulator)

    versions = snapshots(fresh_db)
    by_uid: dict[str, list[dict[str, Any]]] = {}
    for v in versions:
        by_uid.setdefault(v["uid"], []).append(v)
    run2 = run_row(fresh_db, second.run_id)
    for uid in before:
        expected = 2 if uid in changed or uid == victim else 1
        assert len(by_uid[uid]) == expected, uid
    assert len(by_uid[added["instanceUid"]]) == 1
    tomb = by_uid[victim][-1]
    assert tomb["is_deleted"] and tomb["valid_to"] is None
    assert tomb["valid_from"] == run2["started_at"]
    assert by_uid[victim][0]["valid_to"] == run2["started_at"]
    assert current_rows(fresh_db)[victim]["deleted_at"] == run2["started_at"]
    assert run2["status"] == "success"
    assert run2["complete"] is True
    assert (
        run2["jobs_seen"],
        run2["jobs_inserted"],
        run2["jobs_updated"],
        run2["jobs_unchanged"],
        run2["jobs_deleted"],
        run2["jobs_rejected"],
        run2["pages"],
    ) == (
        second.seen,
        second.inserted,
        second.updated,
        second.unchanged,
        second.deleted,
        second.rejected,
        second.pages,
    )
    assert run2["finished_at"] > run2["started_at"]
    assert first.run_id < second.run_id


def test_unchanged_sync_writes_nothing(
    fresh_db: Engine, settings: Any, simulator: Simulator
) -> None:
    sync(settings, fresh_db)
    with fresh_db.connect() as conn:
        xmins = conn.execute(
            text("SELECT instance_uid, xmin::text FROM vspc.backup_agent_jobs")
        ).all()
        snap_xmins = conn.execute(
            text("SELECT instance_uid, valid_from, xmin::text FROM vspc.backup_agent_job_snapshots")
        ).all()
    again = sync(settings, fresh_db)
    assert (again.inserted, again.updated, again.deleted) == (0, 0, 0)
    assert again.unchanged == len(simulator.every_job())
    with fresh_db.connect() as conn:
        assert (
            conn.execute(text("SELECT instance_uid, xmin::text FROM vspc.backup_agent_jobs")).all()
            == xmins
        )
        assert (
            conn.execute(
                text(
                    "SELECT instance_uid, valid_from, xmin::text "
                    "FROM vspc.backup_agent_job_snapshots"
                )
            ).all()
            == snap_xmins
        )


def test_deleted_job_comes_back(fresh_db: Engine, settings: Any, simulator: Simulator) -> None:
    sync(settings, fresh_db)
    job = simulator.every_job()[3]
    uid = job["instanceUid"]
    simulator.delete_job(uid)
    sync(settings, fresh_db)
    assert current_rows(fresh_db)[uid.lower()]["deleted_at"] is not None
    simulator.add_job(**job)
    back = sync(settings, fresh_db)
    assert (back.updated, back.inserted) == (1, 0)
    assert current_rows(fresh_db)[uid.lower()]["deleted_at"] is None
    kinds = [v["is_deleted"] for v in snapshots(fresh_db) if v["uid"] == uid.lower()]
    assert kinds == [False, True, False]


def test_time_passing_keeps_history(fresh_db: Engine, settings: Any, simulator: Simulator) -> None:
    for _ in range(3):
        assert sync(settings, fresh_db).status == "success"
        simulator.advance(24)
    final = sync(settings, fresh_db)
    assert final.status == "success"
    assert_mirrors(fresh_db, simulator)
    with fresh_db.connect() as conn:
        bad = conn.execute(
            text(
                "SELECT count(*) FROM vspc.backup_agent_job_snapshots a "
                "JOIN vspc.backup_agent_job_snapshots b ON a.instance_uid = b.instance_uid "
                "AND a.valid_from < b.valid_from "
                "AND (a.valid_to IS NULL OR a.valid_to > b.valid_from)"
            )
        ).scalar_one()
        assert bad == 0  # versions never overlap
        runs = conn.execute(text("SELECT status FROM vspc.etl_runs ORDER BY run_id")).scalars()
        assert list(runs) == ["success"] * 4


# ---------------------------------------------------------------- faults
@pytest.mark.parametrize(
    ("kind", "params"),
    [
        ("429", {"retry_after": 1}),
        ("429", {"retry_after": 1, "header": True}),
        ("520", {}),
        ("503", {}),
        ("reset", {}),
        ("202", {"polls": 2}),
        ("401", {}),
        ("bad_json", {}),
    ],
)
def test_transient_faults_mid_paging_still_load_everything(
    fresh_db: Engine,
    database_url: URL,
    sim_server: SimulatorServer,
    simulator: Simulator,
    kind: str,
    params: dict[str, Any],
) -> None:
    settings = make_settings(database_url, sim_server, VSPC_PAGE_SIZE=5, VSPC_SOURCE="faulty")
    # Two separate hits, mid-paging, far enough apart that with 4 pages in flight a retry is
    # never the second hit (with an API key, a 401 twice in a row is a real rejection).
    simulator.faults.add(kind, after=2, times=1, **params)
    simulator.faults.add(kind, after=7, times=1, **params)  # of 9 Windows job pages
    result = sync(settings, fresh_db)
    assert result.status == "success", result.error
    assert result.complete
    assert simulator.stats.faults[kind] == 2
    assert_mirrors(fresh_db, simulator)


def test_password_auth_survives_expiry_and_logouts(fresh_db: Engine, database_url: URL) -> None:
    simulator = Simulator(jobs=40, seed=3, users={TEST_USER: TEST_PASSWORD}, token_ttl=1.0)
    simulator.faults.add("401", after=1, times=1)
    simulator.faults.add("slow", after=0, times=None, seconds=0.15)
    with SimulatorServer(simulator, host="127.0.0.1", port=0) as server:
        settings = make_settings(
            database_url,
            server,
            VSPC_API_KEY=None,
            VSPC_USERNAME=TEST_USER,
            VSPC_PASSWORD=TEST_PASSWORD,
            VSPC_PAGE_SIZE=5,
        )
        result = sync(settings, fresh_db)
    assert result.status == "success", result.error
    assert simulator.stats.requests["token"] >= 2  # logged in, then refreshed or re-logged
    assert_mirrors(fresh_db, simulator)


def test_console_failing_for_good_changes_nothing(
    fresh_db: Engine, database_url: URL, sim_server: SimulatorServer, simulator: Simulator
) -> None:
    settings = make_settings(
        database_url, sim_server, VSPC_PAGE_SIZE=10, VSPC_MAX_ATTEMPTS=3, VSPC_SOURCE="x"
    )
    sync(settings, fresh_db)
    simulator.advance(48)
    before_jobs, before_snaps = current_rows(fresh_db), snapshots(fresh_db)
    simulator.faults.add("520", after=2, times=None)
    result = sync(settings, fresh_db)
    assert result.status == "failed"
    assert result.error is not None and "520" in result.error and "gave up" in result.error
    assert current_rows(fresh_db) == before_jobs
    assert snapshots(fresh_db) == before_snaps
    row = run_row(fresh_db, result.run_id)
    assert row["status"] == "failed" and row["finished_at"] is not None
    assert row["error"] == result.error
    with fresh_db.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM vspc.etl_rejects")).scalar_one() == 0


@pytest.mark.parametrize(
    ("kind", "params"),
    [
        ("short", {}),
        ("total_zero", {}),
        ("bad_offset", {}),
        ("shift", {"op": "insert"}),
        ("shift", {"op": "delete"}),
    ],
)
def test_unreliable_paging_never_deletes_a_live_job(
    fresh_db: Engine,
    database_url: URL,
    sim_server: SimulatorServer,
    simulator: Simulator,
    kind: str,
    params: dict[str, Any],
) -> None:
    settings = make_settings(database_url, sim_server, VSPC_PAGE_SIZE=10, VSPC_SOURCE="pager")
    sync(settings, fresh_db)
    simulator.faults.add(kind, after=1, times=None, **params)
    result = sync(settings, fresh_db)
    assert result.status == "success"
    truth = {j["instanceUid"].lower() for j in simulator.every_job()}
    rows = current_rows(fresh_db)
    assert all(rows[uid]["deleted_at"] is None for uid in truth if uid in rows)
    if not result.complete:
        assert result.deleted == 0


def test_shift_once_is_reread_and_completes(
    fresh_db: Engine, database_url: URL, sim_server: SimulatorServer, simulator: Simulator
) -> None:
    settings = make_settings(database_url, sim_server, VSPC_PAGE_SIZE=10, VSPC_SOURCE="shift")
    sync(settings, fresh_db)
    simulator.faults.add("shift", after=2, times=1, op="delete")
    result = sync(settings, fresh_db)
    assert result.status == "success" and result.complete
    assert result.deleted == 1
    assert_mirrors(fresh_db, simulator)


def test_mass_disappearance_is_withheld(
    fresh_db: Engine, settings: Any, simulator: Simulator
) -> None:
    sync(settings, fresh_db)
    for job in simulator.every_job()[: len(simulator.every_job()) * 2 // 3]:
        simulator.delete_job(job["instanceUid"])
    result = sync(settings, fresh_db)
    assert result.status == "success" and result.complete
    assert result.deleted == 0
    assert result.error is not None and "VSPC_MAX_DELETE_RATIO=0.5" in result.error
    assert run_row(fresh_db, result.run_id)["error"] == result.error
    assert all(r["deleted_at"] is None for r in current_rows(fresh_db).values())


def test_bad_records_are_rejected_and_the_rest_loads(
    fresh_db: Engine, settings: Any, simulator: Simulator
) -> None:
    jobs = simulator.every_job()
    simulator.mutate(jobs[0]["instanceUid"], lastRun="2026-02-30T10:00:00+00:00")
    simulator.mutate(jobs[1]["instanceUid"], restorePoints="four")
    simulator.add_job(instanceUid="not-a-uuid")
    result = sync(settings, fresh_db)
    assert result.status == "success"
    assert result.rejected == 3
    assert result.inserted == len(jobs) - 2
    with fresh_db.connect() as conn:
        rejects = conn.execute(
            text("SELECT instance_uid, reason, raw FROM vspc.etl_rejects ORDER BY reject_id")
        ).all()
    reasons = {r.instance_uid: r.reason for r in rejects}
    assert "lastRun" in reasons[jobs[0]["instanceUid"]]
    assert "restorePoints" in reasons[jobs[1]["instanceUid"]]
    assert "instanceUid" in reasons["not-a-uuid"]
    assert {r.raw["instanceUid"] for r in rejects} == set(reasons)


def test_a_rejected_record_keeps_its_job_live(
    fresh_db: Engine, settings: Any, simulator: Simulator
) -> None:
    """A job whose record turns bad is not missing: rejected, kept, counted as present (its
    uid matched case-insensitively); only the job that really disappeared is deleted."""
    sync(settings, fresh_db)
    jobs = simulator.every_job()
    bad, shouted, gone = (j["instanceUid"] for j in jobs[:3])
    simulator.mutate(bad, restorePoints="four")
    simulator.delete_job(shouted)
    simulator.add_job(**{**jobs[1], "instanceUid": shouted.upper(), "lastRun": "yesterday"})
    simulator.delete_job(gone)
    result = sync(settings, fresh_db)
    assert (result.rejected, result.deleted) == (2, 1)
    rows = current_rows(fresh_db)
    assert rows[bad.lower()]["deleted_at"] is None
    assert rows[shouted.lower()]["deleted_at"] is None
    assert rows[gone.lower()]["deleted_at"] is not None
    assert sum(r["deleted_at"] is None for r in rows.values()) == len(jobs) - 1


# ---------------------------------------------------------------- concurrency
def test_two_concurrent_syncs_one_skips(
    fresh_db: Engine, database_url: URL, sim_server: SimulatorServer, simulator: Simulator
) -> None:
    settings = make_settings(database_url, sim_server, VSPC_PAGE_SIZE=5, VSPC_SOURCE="twins")
    simulator.faults.add("slow", after=0, times=None, seconds=0.05)
    results: list[RunResult] = []
    barrier = threading.Barrier(2)

    def worker() -> None:
        barrier.wait()
        results.append(sync(settings, fresh_db))

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(r.status for r in results) == ["skipped", "success"]
    with fresh_db.connect() as conn:
        statuses = conn.execute(text("SELECT status FROM vspc.etl_runs ORDER BY status")).scalars()
        assert list(statuses) == ["skipped", "success"]
        dupes = conn.execute(
            text(
                "SELECT count(*) FROM (SELECT instance_uid FROM vspc.backup_agent_job_snapshots "
                "GROUP BY instance_uid HAVING count(*) > 1) d"
            )
        ).scalar_one()
    assert dupes == 0


def test_orphaned_running_row_is_marked_failed(fresh_db: Engine, settings: Any) -> None:
    with fresh_db.begin() as conn:
        orphan = conn.execute(
            text(
                "INSERT INTO vspc.etl_runs (source, started_at, status) "
                "VALUES ('test-console', now() - interval '1 hour', 'running') RETURNING run_id"
            )
        ).scalar_one()
    result = sync(settings, fresh_db)
    assert result.status == "success"
    row = run_row(fresh_db, orphan)
    assert row["status"] == "failed"
    assert "ended without finishing" in row["error"]


def test_progress_is_reported_per_page(
    fresh_db: Engine, database_url: URL, sim_server: SimulatorServer, simulator: Simulator
) -> None:
    settings = make_settings(database_url, sim_server, VSPC_PAGE_SIZE=25, VSPC_SOURCE="progress")
    calls: list[tuple[int, int, int]] = []
    result = run_once(settings, engine=fresh_db, progress=lambda *a: calls.append(a))
    # Pages arrive in whatever order the console answers them, the three platforms' side by
    # side (42 Windows jobs, 12 Linux, 6 Mac); the total is that of the collections whose
    # first page has come back, all three's from the last page on.
    assert [pages for pages, _, _ in calls] == [1, 2, 3, 4]
    totals = [total for _, _, total in calls]
    assert totals == sorted(totals) and totals[-1] == 60
    assert set(totals) <= {6, 12, 18, 42, 48, 54, 60}
    counts = [records for _, records, _ in calls]
    assert sorted(b - a for a, b in zip([0, *counts], counts, strict=False)) == [6, 12, 17, 25]
    assert counts[-1] == 60
    # the job pages, then the restore points' (the last one short, or empty)
    assert result.points is not None and result.points.seen is not None
    assert result.pages == 4 + result.points.seen // 25 + 1


def test_cancel_stops_after_the_page_in_hand_and_keeps_nothing(
    fresh_db: Engine, database_url: URL, sim_server: SimulatorServer, simulator: Simulator
) -> None:
    """A shutdown ends the run after the page in hand, not after the whole extract (minutes
    for a large console); nothing of it is kept, and the next run loads everything."""
    settings = make_settings(database_url, sim_server, VSPC_PAGE_SIZE=10, VSPC_SOURCE="cancel")
    cancel = threading.Event()
    pages: list[int] = []

    def progress(read: int, records: int, total: int) -> None:
        pages.append(read)
        if read == 2:
            cancel.set()

    result = run_once(settings, engine=fresh_db, progress=progress, cancel=cancel, sleep=no_sleep)
    assert result.status == "failed"
    assert result.error == "cancelled before it finished (the process is shutting down); " + (
        "nothing was committed"
    )
    assert pages == [1, 2] and result.pages == 2
    # The readers and the pager's requests in flight end with the run, not at exit.
    deadline = time.monotonic() + 10
    while ours := [
        t.name
        for t in threading.enumerate()
        if t.name.startswith("vspc-") and not t.name.startswith("vspc-simulator")
    ]:
        assert time.monotonic() < deadline, ours
        time.sleep(0.05)
    assert run_row(fresh_db, result.run_id)["status"] == "failed"
    assert current_rows(fresh_db) == {} and snapshots(fresh_db) == []
    again = sync(settings, fresh_db)
    assert again.status == "success" and again.inserted == len(simulator.every_job())
    assert_mirrors(fresh_db, simulator)


def test_a_run_failing_after_a_staging_commit_rolls_back_and_frees_its_lock(
    fresh_db: Engine,
    database_url: URL,
    sim_server: SimulatorServer,
    simulator: Simulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The stage commits between pages through the driver, which SQLAlchemy does not see: the
    failure path must still roll the driver's transaction back, or the session keeps the
    aborted transaction and the source's lock past the run."""
    clock = [0.0]
    monkeypatch.setattr(etl.load.stage, "_clock", lambda: clock[0])
    # A first sync merges early, and then commits nothing before the merge: not this case.
    monkeypatch.setattr(etl.load.loader, "MERGE_EARLY", False)
    settings = make_settings(database_url, sim_server, VSPC_PAGE_SIZE=10, VSPC_SOURCE="locked")
    cancel = threading.Event()

    def progress(read: int, records: int, total: int) -> None:
        if read == 1:
            clock[0] += 2  # the second page's rows are committed with it
        if read == 3:
            cancel.set()  # the third page's COPY is open, uncommitted

    failed = run_once(settings, engine=fresh_db, progress=progress, cancel=cancel, sleep=no_sleep)
    assert failed.status == "failed" and failed.pages == 3
    with fresh_db.connect() as conn:
        held = conn.execute(
            # This database's only: another test session on the server may hold its own.
            text(
                "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
                "WHERE l.locktype = 'advisory' AND l.granted AND d.datname = current_database()"
            )
        ).scalar_one()
        idle_in_transaction = conn.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND state LIKE 'idle in transaction%'"
            )
        ).scalar_one()
    assert (held, idle_in_transaction) == (0, 0)
    other = create_engine(database_url)
    try:
        again = sync(settings, other)
    finally:
        other.dispose()
    assert again.status == "success" and again.inserted == len(simulator.every_job())
