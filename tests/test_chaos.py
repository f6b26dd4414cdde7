"""Chaos: ``kill -9`` of a sync at chosen points, and migrations racing a sync.

Each sync here is a real ``python -m etl sync`` process against the simulator and the session
database. The test hook ``VSPC_ETL_TEST_PAUSE`` (etl/testhook.py) holds it inside a page's COPY,
inside the merge, or just before COMMIT; paging is caught with the simulator's latency. After
each kill the warehouse must be exactly as before, the checker must see the orphaned
``running`` row and nothing else, and the next run must mark it failed and complete.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import URL

from etl.pipeline import run_once
from etl.simulator import Simulator, SimulatorServer
from etl.testhook import VARIABLE
from etl.verify import check_invariants
from tests.conftest import TEST_API_KEY, no_sleep
from tests.warehouse import (
    assert_sound,
    content,
    lost_jobs,
    statuses,
    sync_backends,
    wait_for,
)

SOURCE = "test-console"  # the ``settings`` fixture's source: in-process runs share the lock


class SyncProcess:
    """``python -m etl sync`` in the background, its output in a file."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.log = cwd / f"sync-{len(list(cwd.glob('sync-*.log')))}.log"
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "etl", "sync", "--no-progress"],
                env=env,
                cwd=cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        assert self.proc.wait(timeout=10) == -signal.SIGKILL

    def finish(self, timeout: float = 60) -> tuple[int, str]:
        code = self.proc.wait(timeout=timeout)
        return code, self.log.read_text()


@pytest.fixture
def sync_env(database_url: URL, sim_server: SimulatorServer) -> dict[str, str]:
    return dict(
        os.environ,
        DATABASE_URL=database_url.render_as_string(hide_password=False),
        VSPC_URL=sim_server.url,
        VSPC_API_KEY=TEST_API_KEY,
        VSPC_SOURCE=SOURCE,
        VSPC_PAGE_SIZE="10",
        LOG_FORMAT="text",
    )


@pytest.fixture
def before(fresh_db: Engine, settings: Any, simulator: Simulator) -> str:
    """A first sync, then a day of changes and a deletion: the next run has work to do.

    Returns the warehouse's content digest before that next run.
    """
    assert run_once(settings, engine=fresh_db, sleep=no_sleep).status == "success"
    summary = simulator.advance(24)
    simulator.delete_job(simulator.every_job()[5]["instanceUid"])
    assert summary.changed or summary.added
    return content(fresh_db)


def assert_killed_cleanly(engine: Engine, old: str) -> None:
    """The old state, and the checker sees the orphan (once its session is gone) and no more."""
    assert content(engine) == old
    wait_for(lambda: sync_backends(engine) == 0, 15, "the killed sync's session to end")
    violations = check_invariants(engine)
    assert [v.invariant for v in violations] == ["run_finished"], violations
    assert violations[0].detail.endswith("no live process holds the sync lock of its source")
    assert statuses(engine) == ["success", "running"]


def assert_next_run_recovers(engine: Engine, settings: Any, simulator: Simulator) -> None:
    result = run_once(settings, engine=engine, sleep=no_sleep)
    assert result.status == "success", result.error
    assert statuses(engine) == ["success", "failed", "success"]
    with engine.connect() as conn:
        error = conn.execute(text("SELECT error FROM vspc.etl_runs WHERE run_id = 2")).scalar_one()
    assert error.startswith("the process running this sync ended without finishing it")
    assert_sound(engine)
    assert lost_jobs(engine, simulator.every_job()) == 0


@pytest.mark.parametrize("point", ["copy", "merge", "commit"])
def test_kill_9_at_a_point_leaves_the_old_state(
    point: str,
    before: str,
    fresh_db: Engine,
    settings: Any,
    simulator: Simulator,
    sync_env: dict[str, str],
    tmp_path: Path,
) -> None:
    marker = tmp_path / f"{point}.paused"
    sync = SyncProcess(sync_env | {VARIABLE: f"{point}:{marker}"}, tmp_path)
    wait_for(marker.exists, 60, f"the sync to reach {point}")
    assert int(marker.read_text()) == sync.proc.pid
    sync.kill()
    assert_killed_cleanly(fresh_db, before)
    assert_next_run_recovers(fresh_db, settings, simulator)


def test_kill_9_while_paging_leaves_the_old_state(
    before: str,
    fresh_db: Engine,
    settings: Any,
    simulator: Simulator,
    sync_env: dict[str, str],
    tmp_path: Path,
) -> None:
    simulator.latency = 0.2  # seven pages: about 1.5 s of paging
    start = simulator.stats.snapshot()["requests"].get("jobs", 0)
    sync = SyncProcess(sync_env, tmp_path)
    wait_for(
        lambda: simulator.stats.snapshot()["requests"].get("jobs", 0) >= start + 3, 60, "3 pages"
    )
    sync.kill()
    simulator.latency = 0.0
    assert_killed_cleanly(fresh_db, before)
    assert_next_run_recovers(fresh_db, settings, simulator)


def test_a_paused_run_that_goes_on_commits_the_new_state(
    before: str, fresh_db: Engine, simulator: Simulator, sync_env: dict[str, str], tmp_path: Path
) -> None:
    """The hook is no trap: released, the run commits (the other half of "old or new")."""
    marker = tmp_path / "commit.paused"
    sync = SyncProcess(sync_env | {VARIABLE: f"commit:{marker}"}, tmp_path)
    wait_for(marker.exists, 60, "the sync to reach commit")
    assert content(fresh_db) == before
    marker.unlink()
    code, output = sync.finish()
    assert code == 0, output
    assert content(fresh_db) != before
    assert statuses(fresh_db) == ["success", "success"]
    assert_sound(fresh_db)
    assert lost_jobs(fresh_db, simulator.every_job()) == 0


# -- migrations racing a sync --------------------------------------------------------------


def migrate(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "etl", "migrate", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def revision(engine: Engine) -> str:
    with engine.connect() as conn:
        return str(conn.execute(text("SELECT version_num FROM vspc.alembic_version")).scalar_one())


def test_migrate_while_a_sync_holds_its_merge_open(
    before: str, fresh_db: Engine, simulator: Simulator, sync_env: dict[str, str], tmp_path: Path
) -> None:
    """No deadlock, no corruption: a no-op migrate passes; a schema change waits at most
    ``lock_timeout`` and fails cleanly; the sync then commits; the schema is untouched."""
    head = revision(fresh_db)
    marker = tmp_path / "commit.paused"
    sync = SyncProcess(sync_env | {VARIABLE: f"commit:{marker}"}, tmp_path)
    wait_for(marker.exists, 60, "the sync to reach commit")

    noop = migrate(sync_env, tmp_path)
    assert noop.returncode == 0, noop.stderr
    assert noop.stdout.strip().endswith(f"is at revision {head}")

    down = migrate(sync_env, tmp_path, "0001")  # drops what the open merge has written to
    assert down.returncode == 1, down.stdout + down.stderr
    assert down.stderr.splitlines()[-1] == (
        "error: migration failed: canceling statement due to lock timeout"
    )
    assert "Traceback" not in down.stderr
    assert revision(fresh_db) == head

    marker.unlink()
    code, output = sync.finish()
    assert code == 0, output
    assert statuses(fresh_db) == ["success", "success"]
    assert_sound(fresh_db)
    assert lost_jobs(fresh_db, simulator.every_job()) == 0
