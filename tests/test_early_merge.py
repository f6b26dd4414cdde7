"""A first sync writes its new jobs while later pages are read (``etl.load.merge.EarlyMerge``).

The warehouse must end exactly as the merge after the extract leaves it, whatever the paging
did: the same scenario runs on two identical consoles, once with batches of one page and once
without the early merge, and every table a run writes is compared.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import URL

import etl.load.loader
import etl.load.merge
from etl.load.names import NameStage
from etl.load.stage import Stage
from etl.pipeline import RunResult, run_once
from etl.simulator import Simulator, SimulatorServer
from tests.conftest import TEST_API_KEY, empty_warehouse, make_settings, no_sleep

PAGE = 10
JOBS = 60

# Every table a sync writes, in a stable order; run ids and run start times are replaced by
# the run's ordinal (the two sides' runs start at different moments).
TABLES = {
    "jobs": "SELECT * FROM vspc.backup_agent_jobs ORDER BY instance_uid",
    "versions": "SELECT * FROM vspc.backup_agent_job_snapshots ORDER BY instance_uid, valid_from",
    "fingerprints": "SELECT * FROM vspc.etl_job_fingerprints ORDER BY instance_uid",
    "sessions": "SELECT * FROM vspc.job_run_facts ORDER BY instance_uid, started_at",
    "sla_state": "SELECT * FROM vspc.job_sla_state ORDER BY instance_uid",
    "sla_days": "SELECT * FROM vspc.sla_daily_counts ORDER BY day, organization_uid NULLS FIRST",
    "rejects": "SELECT run_id, instance_uid, reason, raw FROM vspc.etl_rejects ORDER BY reject_id",
    "runs": (
        "SELECT run_id, status, complete, pages, jobs_seen, jobs_inserted, jobs_updated, "
        "jobs_unchanged, jobs_deleted, jobs_rejected, error FROM vspc.etl_runs ORDER BY run_id"
    ),
}


def warehouse(engine: Engine) -> dict[str, list[dict[str, Any]]]:
    with engine.connect() as conn:
        runs = conn.execute(
            text("SELECT run_id, started_at FROM vspc.etl_runs ORDER BY run_id")
        ).all()
        number = {run_id: n for n, (run_id, _) in enumerate(runs, 1)}
        started = {at: f"start of run {n}" for n, (_, at) in enumerate(runs, 1)}

        def plain(column: str, value: Any) -> Any:
            if column in ("run_id", "last_run_id") and value is not None:
                return number[value]
            if isinstance(value, datetime):
                return started.get(value, value)
            return value

        return {
            name: [
                {k: plain(k, v) for k, v in row.items()}
                for row in conn.execute(text(sql)).mappings()
            ]
            for name, sql in TABLES.items()
        }


@pytest.fixture
def batches(caplog: pytest.LogCaptureFixture) -> Callable[[], list[str]]:
    """The early merge batches run so far (their DEBUG lines)."""
    caplog.set_level(logging.DEBUG, logger="etl.load.merge")
    return lambda: [r.getMessage() for r in caplog.records if "early merge of" in r.getMessage()]


@pytest.fixture
def every_page(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(etl.load.merge, "MERGE_EVERY_ROWS", PAGE)


def without_early_merge(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(etl.load.loader, "MERGE_EARLY", False)


def console() -> Simulator:
    return Simulator(jobs=JOBS, seed=11, api_keys=(TEST_API_KEY,))


def sync(
    database_url: URL,
    server: SimulatorServer,
    engine: Engine,
    source: str,
    progress: Callable[[int, int, int], None] | None = None,
) -> RunResult:
    # One request at a time: the faults hit the same pages on both sides.
    settings = make_settings(
        database_url, server, VSPC_PAGE_SIZE=PAGE, VSPC_SOURCE=source, VSPC_CONCURRENCY=1
    )
    return run_once(settings, engine=engine, sleep=no_sleep, progress=progress)


class Run(Protocol):
    def __call__(
        self, source: str, progress: Callable[[int, int, int], None] | None = None
    ) -> RunResult: ...


Scenario = Callable[[Simulator, Run, Engine], list[RunResult]]


def plain_then_changed(sim: Simulator, run: Run, db: Engine) -> list[RunResult]:
    first = run("one")
    sim.advance(hours=30)
    return [first, run("one")]


def page_served_twice(sim: Simulator, run: Run, db: Engine) -> list[RunResult]:
    # The third page comes back as the first: its jobs are staged twice, the pass re-read.
    sim.faults.add("bad_offset", after=2, times=1)
    return [run("one")]


def collection_shifts(sim: Simulator, run: Run, db: Engine) -> list[RunResult]:
    # A job is inserted before the pager's offset mid-pass: a job is read twice, the
    # counts disagree, and the pass is read again.
    sim.faults.add("shift", after=3, times=1, op="insert")
    return [run("one")]


def changed_between_copies(sim: Simulator, run: Run, db: Engine) -> list[RunResult]:
    # The third page comes back as the first, after a job of the first page changed: the
    # batch wrote its first copy, the one to keep is the later one.
    sim.faults.add("bad_offset", after=2, times=1)
    uid = min((job["instanceUid"] for job in sim.every_job()), key=str.lower)  # on the first page

    def progress(read: int, records: int, total: int) -> None:
        if read == 1:
            sim.mutate(uid, name="renamed while the pages were read")

    return [run("one", progress)]


def history_without_its_jobs(sim: Simulator, run: Run, db: Engine) -> list[RunResult]:
    # Versions whose job rows are gone (a hand-built history, a careless clean-up): the
    # source has no live job, but the jobs are not new to the history.
    first = run("one")
    with db.begin() as conn:
        conn.execute(text("DELETE FROM vspc.backup_agent_jobs WHERE source = 'one'"))
    sim.advance(hours=30)
    return [first, run("one")]


def bad_records(sim: Simulator, run: Run, db: Engine) -> list[RunResult]:
    jobs = sim.every_job()
    sim.mutate(jobs[3]["instanceUid"], lastRun="2026-02-30T10:00:00+00:00")
    sim.add_job(instanceUid="not-a-uuid")
    return [run("one")]


def jobs_of_another_source(sim: Simulator, run: Run, db: Engine) -> list[RunResult]:
    # The second source's first sync finds every job already stored (under the first source):
    # none is new to the warehouse, all take the comparison.
    return [run("one"), run("two")]


def deleted_then_back(sim: Simulator, run: Run, db: Engine) -> list[RunResult]:
    first = run("one")
    gone = sim.every_job()[5]["instanceUid"]
    sim.delete_job(gone)
    second = run("one")
    return [first, second, run("two")]


SCENARIOS: dict[str, Scenario] = {
    "plain_then_changed": plain_then_changed,
    "page_served_twice": page_served_twice,
    "collection_shifts": collection_shifts,
    "changed_between_copies": changed_between_copies,
    "history_without_its_jobs": history_without_its_jobs,
    "bad_records": bad_records,
    "jobs_of_another_source": jobs_of_another_source,
    "deleted_then_back": deleted_then_back,
}


def play(
    scenario: Scenario, engine: Engine, database_url: URL
) -> tuple[list[RunResult], dict[str, list[dict[str, Any]]]]:
    empty_warehouse(engine)
    sim = console()
    with SimulatorServer(sim, host="127.0.0.1", port=0) as server:
        results = scenario(
            sim,
            lambda source, progress=None: sync(database_url, server, engine, source, progress),
            engine,
        )
    return results, warehouse(engine)


def counts(results: list[RunResult]) -> list[tuple[Any, ...]]:
    return [
        (r.status, r.complete, r.seen, r.inserted, r.updated, r.unchanged, r.deleted, r.rejected)
        for r in results
    ]


def stored(engine: Engine, *tables: str) -> tuple[int, ...]:
    """Rows in each vspc table, as a session of its own (another reader) sees them."""
    sql = ", ".join(f"(SELECT count(*) FROM vspc.{table})" for table in tables)
    with engine.connect() as conn:
        return tuple(conn.execute(text(f"SELECT {sql}")).one())


@pytest.mark.parametrize("name", SCENARIOS)
def test_early_merge_leaves_what_the_merge_alone_leaves(
    name: str,
    engine: Engine,
    database_url: URL,
    monkeypatch: pytest.MonkeyPatch,
    every_page: None,
    batches: Callable[[], list[str]],
) -> None:
    early_results, early = play(SCENARIOS[name], engine, database_url)
    ran = batches()
    with monkeypatch.context() as patch:
        without_early_merge(patch)
        results, merged = play(SCENARIOS[name], engine, database_url)
    assert len(batches()) == len(ran)  # none without it
    assert ran, "no early merge batch ran: the scenario tested nothing"
    assert counts(early_results) == counts(results)
    assert all(r.status == "success" for r in results)
    assert early["jobs"], "nothing was loaded"
    for table in TABLES:
        assert early[table] == merged[table], table


def test_batches_write_every_new_job_while_pages_are_read(
    fresh_db: Engine,
    database_url: URL,
    every_page: None,
    batches: Callable[[], list[str]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    sim = console()

    def between_pages(read: int, records: int, total: int) -> None:
        # The pager has the next pages in flight already: give each batch the time to
        # end before the loader takes the next page, which then starts the next batch.
        time.sleep(0.05)

    with SimulatorServer(sim, host="127.0.0.1", port=0) as server:
        result = sync(database_url, server, fresh_db, "one", progress=between_pages)
        assert (result.status, result.inserted) == ("success", JOBS)
        # Every job written by a batch: the merge neither dedupes nor compares.
        steps = [r.getMessage() for r in caplog.records if "merge step" in r.getMessage()]
        skipped = ("DELETE FROM stage_jobs", "INSERT INTO stage_changed")
        assert steps and not [s for s in steps if any(k in s for k in skipped)]
        lines = batches()
        written = sum(int(line.split(": ")[1].split()[0]) for line in lines)
        assert written == JOBS
        assert len(lines) >= JOBS // PAGE // 2
        # The next sync finds every fingerprint the batches stored (nothing to transform),
        # and merges after the extract only: the source has live jobs.
        again = sync(database_url, server, fresh_db, "one")
    assert (again.unchanged, again.inserted, again.updated) == (JOBS, 0, 0)
    assert batches() == lines


@pytest.fixture
def slow_batches(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Each batch waits 0.2 s before its statement: the pages read meanwhile are held back."""
    held: list[int] = []
    merge_batch = etl.load.merge.EarlyMerge._merge
    add = Stage.add

    def slow(self: etl.load.merge.EarlyMerge, params: dict[str, Any]) -> None:
        time.sleep(0.2)
        merge_batch(self, params)

    def watching(self: Stage, *args: Any, **kwargs: Any) -> None:
        add(self, *args, **kwargs)
        held.append(self.held_rows)

    monkeypatch.setattr(etl.load.merge.EarlyMerge, "_merge", slow)
    monkeypatch.setattr(Stage, "add", watching)
    return held


def test_pages_read_during_a_batch_are_held_then_staged(
    fresh_db: Engine,
    database_url: URL,
    every_page: None,
    slow_batches: list[int],
) -> None:
    sim = console()
    with SimulatorServer(sim, host="127.0.0.1", port=0) as server:
        result = sync(database_url, server, fresh_db, "one")
    assert (result.status, result.inserted, result.seen) == ("success", JOBS, JOBS)
    assert max(slow_batches) >= PAGE  # at least one page waited for a batch
    with fresh_db.connect() as conn:
        stored = conn.execute(
            text("SELECT count(*) FROM vspc.backup_agent_job_snapshots WHERE valid_to IS NULL")
        ).scalar_one()
    assert stored == JOBS


def test_a_failing_batch_fails_the_run_and_keeps_nothing(
    fresh_db: Engine,
    database_url: URL,
    every_page: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The second batch (there are at least two: one after the first page, one at the end)
    # divides by zero on the server.
    calls = [0]
    merge_batch = etl.load.merge.EarlyMerge._merge

    def failing(self: etl.load.merge.EarlyMerge, params: dict[str, Any]) -> None:
        calls[0] += 1
        if calls[0] == 2:
            with self.conn.cursor() as cursor:
                cursor.execute("SELECT 1 / 0")
        merge_batch(self, params)

    monkeypatch.setattr(etl.load.merge.EarlyMerge, "_merge", failing)
    sim = console()
    with SimulatorServer(sim, host="127.0.0.1", port=0) as server:
        result = sync(database_url, server, fresh_db, "one")
        assert result.status == "failed"
        assert result.error is not None and "division by zero" in result.error
        written = ("backup_agent_jobs", "backup_agent_job_snapshots", "job_run_facts")
        assert stored(fresh_db, *written, "etl_job_fingerprints") == (0, 0, 0, 0)
        with fresh_db.connect() as conn:
            left = conn.execute(
                text(
                    "SELECT (SELECT count(*) FROM pg_locks l"
                    "  JOIN pg_database d ON d.oid = l.database"
                    "  WHERE l.locktype = 'advisory' AND d.datname = current_database()),"
                    " (SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    "  AND state LIKE 'idle in transaction%')"
                )
            ).one()
        assert tuple(left) == (0, 0)
        assert not [t for t in threading.enumerate() if t.name.startswith("early-merge")]
        monkeypatch.setattr(etl.load.merge.EarlyMerge, "_merge", merge_batch)
        again = sync(database_url, server, fresh_db, "one")
    assert (again.status, again.inserted) == ("success", JOBS)


def test_a_cancel_during_a_batch_waits_for_it_and_keeps_nothing(
    fresh_db: Engine,
    database_url: URL,
    every_page: None,
    slow_batches: list[int],
) -> None:
    sim = console()
    cancel = threading.Event()

    def progress(read: int, records: int, total: int) -> None:
        if read == 3:
            cancel.set()

    with SimulatorServer(sim, host="127.0.0.1", port=0) as server:
        settings = make_settings(database_url, server, VSPC_PAGE_SIZE=PAGE, VSPC_SOURCE="one")
        result = run_once(
            settings, engine=fresh_db, sleep=no_sleep, cancel=cancel, progress=progress
        )
    assert result.status == "failed" and result.pages == 3
    assert stored(fresh_db, "backup_agent_jobs", "job_run_facts") == (0, 0)
    assert not [t for t in threading.enumerate() if t.name.startswith("early-merge")]


def test_nothing_a_batch_writes_is_visible_before_the_run_commits(
    fresh_db: Engine,
    database_url: URL,
    every_page: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A dashboard reading during a first sync sees the warehouse as it was, not a part of
    the run: the batches write inside the run's one transaction."""
    seen_outside: list[tuple[int, ...]] = []
    seen_inside: list[int] = []
    merge_batch = etl.load.merge.EarlyMerge._merge

    def watched(self: etl.load.merge.EarlyMerge, params: dict[str, Any]) -> None:
        merge_batch(self, params)
        with self.conn.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM vspc.backup_agent_jobs")
            seen_inside.append(cursor.fetchone()[0])  # type: ignore[index]
        seen_outside.append(stored(fresh_db, "backup_agent_jobs", "backup_agent_job_snapshots"))

    monkeypatch.setattr(etl.load.merge.EarlyMerge, "_merge", watched)
    sim = console()
    with SimulatorServer(sim, host="127.0.0.1", port=0) as server:
        result = sync(database_url, server, fresh_db, "one")
    assert (result.status, result.inserted) == ("success", JOBS)
    assert len(seen_inside) >= 2 and seen_inside[-1] == JOBS  # the run saw its own writes
    assert set(seen_outside) == {(0, 0)}  # nobody else did, until the commit
    assert stored(fresh_db, "backup_agent_jobs") == (JOBS,)


def test_name_pages_are_staged_between_batches(
    fresh_db: Engine,
    database_url: URL,
    every_page: None,
    slow_batches: list[int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A first sync starts a batch as soon as the last one ends, so between two job pages a
    batch always has the connection; the name pages waiting are staged in the moment between
    two batches, not all after the job pages (the names thread would stall on its full queue
    from the first batch on)."""
    events: list[str] = []
    add_jobs, add_names = Stage.add, NameStage.add

    def jobs(self: Stage, rows: Any, *args: Any, **kwargs: Any) -> None:
        add_jobs(self, rows, *args, **kwargs)
        if rows:  # not the empty page that ends the pass
            events.append("jobs")

    def names(self: NameStage, kind: str, rows: Any) -> None:
        add_names(self, kind, rows)
        events.append(kind)

    monkeypatch.setattr(Stage, "add", jobs)
    monkeypatch.setattr(NameStage, "add", names)
    monkeypatch.setattr(etl.load.loader, "HOLD_ROWS", PAGE)  # each page waits for the batch
    sim = console()
    with SimulatorServer(sim, host="127.0.0.1", port=0) as server:
        result = sync(database_url, server, fresh_db, "one")
    assert (result.status, result.inserted) == ("success", JOBS)
    last_job_page = max(i for i, e in enumerate(events) if e == "jobs")
    staged_before = [e for e in events[:last_job_page] if e != "jobs"]
    per_platform = [len(sim.jobs(p)) for p in ("windows", "linux", "mac")]
    assert sum(per_platform) == JOBS
    assert events.count("jobs") == sum(-(-n // PAGE) for n in per_platform)
    assert staged_before, f"every name page was staged after the job pages: {events}"
    assert stored(fresh_db, "backup_agents") == (len(sim.agents()),)
