"""Chaos on the database side: PostgreSQL restarted or the connection killed mid-run, and a
database that is down when a sync or the daemon starts.

Restarts and outages use a private embedded PostgreSQL (pgserver) in a temporary directory,
never the shared server; ``pg_terminate_backend`` only ends the sync's own session.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import URL

from etl.db import make_engine, migrate, normalize_url
from etl.load.runs import SYNC_LOCK_CLASS
from etl.pipeline import RunResult, run_once
from etl.simulator import Simulator, SimulatorServer
from etl.testhook import VARIABLE
from tests.conftest import TEST_API_KEY, create_database, make_settings, no_sleep
from tests.warehouse import assert_sound, content, lost_jobs, statuses, wait_for


class PrivatePostgres:
    """An embedded PostgreSQL of this test module only: restart and stop it at will."""

    def __init__(self, pgdata: Path) -> None:
        import pgserver

        self.server = pgserver.get_server(pgdata, cleanup_mode="delete")
        self.url = normalize_url(self.server.get_uri())

    def _pg_ctl(self, *args: str) -> None:
        from pgserver._commands import pg_ctl

        pg_ctl(["-w", *args], pgdata=self.server.pgdata, user=self.server.system_user)

    def restart(self) -> None:
        self._pg_ctl("-m", "fast", "restart")

    def stop(self) -> None:
        self._pg_ctl("-m", "fast", "stop")

    def start(self) -> None:
        # The options pgserver starts it with: no TCP, a socket in its own directory.
        socket_dir = str(self.url.query["host"])
        log = str(self.server.pgdata / "log")
        self._pg_ctl("-o", '-h ""', "-o", f"-k {socket_dir}", "-l", log, "start")


@pytest.fixture(scope="module")
def private_pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivatePostgres]:
    pg = PrivatePostgres(tmp_path_factory.mktemp("private-pgdata"))
    yield pg
    pg.server.cleanup()


@pytest.fixture
def private_db(private_pg: PrivatePostgres) -> URL:
    url = create_database(private_pg.url, "chaos")
    migrate(url)
    return url


def in_background(settings: Any, engine: Engine) -> tuple[threading.Thread, list[RunResult]]:
    results: list[RunResult] = []
    thread = threading.Thread(
        target=lambda: results.append(run_once(settings, engine=engine, sleep=no_sleep))
    )
    thread.start()
    return thread, results


def jobs_requests(simulator: Simulator) -> int:
    return simulator.stats.snapshot()["requests"].get("jobs", 0)


def assert_failed_cleanly(result: RunResult, engine: Engine, old: str) -> None:
    assert result.status == "failed"
    assert result.error is not None and result.error.startswith("database error: ")
    assert "\n" not in result.error
    assert content(engine) == old


def assert_next_run_succeeds(settings: Any, engine: Engine, simulator: Simulator) -> None:
    simulator.latency = 0.0
    result = run_once(settings, engine=engine, sleep=no_sleep)
    assert result.status == "success", result.error
    runs = statuses(engine)
    assert runs[-2:] == ["failed", "success"]  # marked failed by itself, or else by the next
    assert_sound(engine)
    assert lost_jobs(engine, simulator.every_job()) == 0


@pytest.mark.parametrize("when", ["paging", "merge"])
def test_postgres_restarted_mid_run(
    when: str,
    private_pg: PrivatePostgres,
    private_db: URL,
    sim_server: SimulatorServer,
    simulator: Simulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = make_settings(private_db, sim_server, VSPC_SOURCE="restart", VSPC_PAGE_SIZE=10)
    engine = make_engine(settings)
    try:
        assert run_once(settings, engine=engine, sleep=no_sleep).status == "success"
        simulator.advance(24)
        old = content(engine)
        marker = tmp_path / "merge.paused"
        if when == "merge":
            monkeypatch.setenv(VARIABLE, f"merge:{marker}")
        else:
            simulator.latency = 0.2
        start = jobs_requests(simulator)
        thread, results = in_background(settings, engine)
        if when == "merge":
            wait_for(marker.exists, 30, "the merge")
        else:
            wait_for(lambda: jobs_requests(simulator) >= start + 3, 30, "3 pages")
        private_pg.restart()
        marker.unlink(missing_ok=True)
        thread.join(60)
        assert not thread.is_alive()
        monkeypatch.delenv(VARIABLE, raising=False)
        assert_failed_cleanly(results[0], engine, old)
        assert_next_run_succeeds(settings, engine, simulator)
    finally:
        engine.dispose()


def terminate_sync_backend(engine: Engine, source: str) -> int:
    """End the session holding ``source``'s sync lock, as an operator's pg_terminate_backend."""
    with engine.connect() as conn:
        return int(
            conn.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_locks "
                    "WHERE locktype = 'advisory' AND classid = CAST(:c AS bigint)::oid "
                    "AND objid = hashtext(:s)::oid AND objsubid = 2 AND granted "
                    # advisory locks are per database; another test session may hold its own
                    "AND database = (SELECT oid FROM pg_database "
                    "WHERE datname = current_database())"
                ),
                {"c": SYNC_LOCK_CLASS, "s": source},
            ).scalar_one()
        )


@pytest.mark.parametrize("when", ["paging", "merge"])
def test_connection_killed_mid_run(
    when: str,
    fresh_db: Engine,
    settings: Any,
    simulator: Simulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = settings.model_copy(update={"vspc_page_size": 10})
    assert run_once(settings, engine=fresh_db, sleep=no_sleep).status == "success"
    simulator.advance(24)
    old = content(fresh_db)
    marker = tmp_path / "merge.paused"
    if when == "merge":
        monkeypatch.setenv(VARIABLE, f"merge:{marker}")
    else:
        simulator.latency = 0.2
    start = jobs_requests(simulator)
    thread, results = in_background(settings, fresh_db)
    if when == "merge":
        wait_for(marker.exists, 30, "the merge")
    else:
        wait_for(lambda: jobs_requests(simulator) >= start + 3, 30, "3 pages")
    assert terminate_sync_backend(fresh_db, settings.source) == 1
    marker.unlink(missing_ok=True)
    thread.join(60)
    assert not thread.is_alive()
    monkeypatch.delenv(VARIABLE, raising=False)
    assert_failed_cleanly(results[0], fresh_db, old)
    assert statuses(fresh_db) == ["success", "failed"]  # recorded on a fresh connection
    assert_next_run_succeeds(settings, fresh_db, simulator)


# -- down at start ---------------------------------------------------------------------------


def cli_env(url: URL, server: SimulatorServer, source: str) -> dict[str, str]:
    return dict(
        os.environ,
        DATABASE_URL=url.render_as_string(hide_password=False),
        VSPC_URL=server.url,
        VSPC_API_KEY=TEST_API_KEY,
        VSPC_SOURCE=source,
        LOG_FORMAT="text",
    )


def test_database_down_at_start(
    private_pg: PrivatePostgres, private_db: URL, sim_server: SimulatorServer, tmp_path: Path
) -> None:
    """`sync`: one clear line and exit 1. The daemon: stays up, syncs once the database is back."""
    env = cli_env(private_db, sim_server, "outage")
    private_pg.stop()
    try:
        sync = subprocess.run(
            [sys.executable, "-m", "etl", "sync", "--no-progress"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert sync.returncode == 1
        last = sync.stderr.splitlines()[-1]
        assert last.startswith(
            f"error: cannot connect to the database {private_db.render_as_string()}: "
        )
        assert "Traceback" not in sync.stderr

        daemon_log = tmp_path / "daemon.log"
        with daemon_log.open("w") as out:
            daemon = subprocess.Popen(
                [sys.executable, "-m", "etl", "run"],
                env=env | {"SYNC_INTERVAL": "1", "SYNC_JITTER": "0", "HTTP_PORT": "0"},
                cwd=tmp_path,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_for(lambda: "tries again at the next run" in daemon_log.read_text(), 30, "a miss")
            assert daemon.poll() is None
        finally:
            private_pg.start()
        engine = make_engine(make_settings(private_db))
        try:
            wait_for(lambda: "success" in statuses(engine, "outage"), 30, "a successful run")
            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(timeout=30) == 0, daemon_log.read_text()
            assert "running" not in statuses(engine, "outage")
            assert_sound(engine)
        finally:
            engine.dispose()
    finally:
        if daemon_log.exists() and "daemon" in locals() and daemon.poll() is None:
            daemon.kill()
