"""``vspc-etl run``: schedule settings, JSON logs, and the daemon as a real subprocess.

The subprocess tests run ``python -m etl run`` against the in-process simulator and the session
database, and talk to it the way an orchestrator would: HTTP probes, /metrics, SIGTERM.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL

from etl.cli import main
from etl.config import load_settings
from etl.crontab import cron_trigger
from etl.daemon import Daemon
from etl.errors import ConfigError
from etl.logs import JsonFormatter, RedactingFilter
from etl.schedule import build_schedule
from etl.simulator import Simulator, SimulatorServer
from tests.conftest import TEST_API_KEY

CLEAN_PREFIXES = ("VSPC_", "DATABASE_URL", "SYNC_", "SHUTDOWN_", "HTTP_", "LOG_")


# ---------------------------------------------------------------- settings and schedule
@pytest.mark.parametrize(
    ("given", "seconds"),
    [("900", 900), ("15m", 900), ("1h", 3600), ("1h30m", 5400), ("45s", 45), ("1d", 86400)],
)
def test_sync_interval_takes_seconds_or_units(given: str, seconds: int) -> None:
    assert load_settings(environ={"SYNC_INTERVAL": given}, dotenv=False).sync_interval == seconds


@pytest.mark.parametrize("given", ["soon", "15x", "m", "0", "-5"])
def test_bad_sync_interval_is_one_sentence(given: str) -> None:
    with pytest.raises(ConfigError, match=r"^SYNC_INTERVAL: "):
        load_settings(environ={"SYNC_INTERVAL": given}, dotenv=False)


def test_daemon_defaults() -> None:
    s = load_settings(environ={}, dotenv=False)
    assert (s.sync_interval, s.sync_cron, s.sync_jitter) == (900, None, 30)
    assert (s.sync_run_at_start, s.shutdown_grace, s.http_port) == (True, 60.0, 8080)
    schedule = build_schedule(s)
    assert schedule.period == 900
    assert schedule.trigger.jitter == 30


def test_cron_weekdays_count_from_sunday_like_crontab() -> None:
    # APScheduler 3's from_crontab would read "0" as Monday.
    sunday_nine = cron_trigger("0 9 * * 0")
    friday = datetime(2025, 1, 3, 12, 0, tzinfo=UTC)  # a Friday
    fire = sunday_nine.get_next_fire_time(None, friday.astimezone(sunday_nine.timezone))
    assert fire is not None
    assert (fire.strftime("%A"), fire.hour) == ("Sunday", 9)
    weekdays = cron_trigger("30 6 * * 1-5")
    fire = weekdays.get_next_fire_time(None, friday.astimezone(weekdays.timezone))
    assert fire is not None
    assert fire.strftime("%A") == "Monday"


def test_cron_wins_and_its_longest_gap_sets_readiness() -> None:
    s = load_settings(environ={"SYNC_CRON": "0 9 * * mon-fri", "SYNC_INTERVAL": "60"}, dotenv=False)
    schedule = build_schedule(s)
    assert schedule.period == timedelta(days=3).total_seconds()  # Friday to Monday
    assert "cron" in schedule.description


@pytest.mark.parametrize(
    ("env", "jitter", "warning"),
    [
        ({"SYNC_INTERVAL": "60", "SYNC_JITTER": "60"}, 60, None),
        (
            {"SYNC_INTERVAL": "60", "SYNC_JITTER": "600"},
            60,
            "SYNC_JITTER 600 s is longer than the 1 min interval: using 60 s",
        ),
        (
            {"SYNC_CRON": "*/5 * * * *", "SYNC_JITTER": "3600"},
            300,
            "SYNC_JITTER 3600 s is longer than the shortest gap between two cron runs: using 300 s",
        ),
    ],
)
def test_a_jitter_longer_than_the_interval_is_clamped_with_a_warning(
    env: dict[str, str], jitter: int, warning: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="etl.schedule"):
        schedule = build_schedule(load_settings(environ=env, dotenv=False))
    assert (schedule.jitter, schedule.trigger.jitter) == (jitter, jitter)
    said = [r.getMessage() for r in caplog.records if r.name == "etl.schedule"]
    assert said == ([warning] if warning else [])


def test_readyz_allows_for_the_jitter(fresh_db: Engine, database_url: URL) -> None:
    env = {
        "DATABASE_URL": database_url.render_as_string(hide_password=False),
        "VSPC_URL": "https://127.0.0.1:9",
        "VSPC_API_KEY": TEST_API_KEY,
        "VSPC_SOURCE": "jittery",
        "SYNC_INTERVAL": "60",
        "SYNC_JITTER": "30",
        "SYNC_RUN_AT_START": "false",
        "HTTP_PORT": "0",
    }
    daemon = Daemon(load_settings(environ=env, dotenv=False))

    def success(seconds_ago: int) -> tuple[bool, dict[str, Any]]:
        with fresh_db.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO vspc.etl_runs (source, status, started_at, finished_at) "
                    "VALUES ('jittery', 'success', now() - make_interval(secs => :s + 1), "
                    "now() - make_interval(secs => :s))"
                ),
                {"s": seconds_ago},
            )
        time.sleep(1.05)  # past the probes' one-second cache
        return daemon.ready()

    daemon.start()
    try:
        too_old = success(300)  # past 3 x (60 s + 30 s)
        recent = success(200)  # past 3 x 60 s, within 3 x (60 s + 30 s)
    finally:
        daemon.stop()
    assert too_old[0] is False
    assert too_old[1]["reason"].startswith("the last successful sync of jittery finished 3")
    assert too_old[1]["reason"].endswith("s ago, more than 3 x (the 60 s period + 30 s of jitter)")
    assert (recent[0], recent[1]["window_s"]) == (True, 270.0)
    assert 200 <= recent[1]["last_success_age_s"] < 230


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith(CLEAN_PREFIXES):
            monkeypatch.delenv(name)
    return CliRunner()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SYNC_INTERVAL": "often"}, "error: SYNC_INTERVAL: Value error, must be a duration"),
        ({"SYNC_CRON": "61 * * * *"}, "error: SYNC_CRON: Value error, '61 * * * *' is not a val"),
        ({"SYNC_CRON": "* * *"}, "error: SYNC_CRON: Value error, '* * *' has 3 fields"),
        ({"SYNC_CRON": "0 0 30 2 *"}, "error: SYNC_CRON: the expression fires at most once"),
        ({"HTTP_PORT": "70000"}, "error: HTTP_PORT: Input should be less than or equal to"),
        ({"SHUTDOWN_GRACE": "-1"}, "error: SHUTDOWN_GRACE: Input should be greater than"),
        ({"VSPC_URL": ""}, "error: VSPC_URL is not set"),
    ],
)
def test_run_configuration_errors_exit_2(
    runner: CliRunner, database_url: URL, env: dict[str, str], message: str
) -> None:
    base = {
        "DATABASE_URL": database_url.render_as_string(hide_password=False),
        "VSPC_URL": "http://127.0.0.1:9",
        "VSPC_API_KEY": TEST_API_KEY,
        "HTTP_PORT": "0",
    }
    result = runner.invoke(main, ["run"], env=base | env)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(message), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_http_port_in_use_exits_2(runner: CliRunner, database_url: URL) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {
            "DATABASE_URL": database_url.render_as_string(hide_password=False),
            "VSPC_URL": "http://127.0.0.1:9",
            "VSPC_API_KEY": TEST_API_KEY,
            "HTTP_HOST": "127.0.0.1",
            "HTTP_PORT": str(port),
        }
        result = runner.invoke(main, ["run"], env=env)
    assert result.exit_code == 2
    last = result.stderr.splitlines()[-1]  # after the plain-http warning of VSPC_URL
    assert last.startswith(f"error: HTTP_PORT {port} cannot be used on 127.0.0.1")


# ---------------------------------------------------------------- JSON logs
def test_json_log_is_one_object_per_line_and_scrubbed() -> None:
    secret = "s3cr3t-api-key-value"
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    redacting = RedactingFilter([secret])
    handler.addFilter(redacting)
    handler.setFormatter(JsonFormatter(redacting))
    logger = logging.getLogger("tests.json-log")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning(
            "run %d done with key %s",
            7,
            secret,
            extra={"run_id": 7, "source": "acme", "counts": {"seen": 3}, "error": f"k={secret}"},
        )
        try:
            raise RuntimeError(f"Bearer {secret}\nsecond line")
        except RuntimeError:
            logger.exception("it broke")
    finally:
        logger.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["level"] == "WARNING" and first["logger"] == "tests.json-log"
    assert first["event"] == "run 7 done with key ***"
    assert (first["run_id"], first["source"], first["counts"]) == (7, "acme", {"seen": 3})
    assert first["error"] == "k=***"
    assert datetime.fromisoformat(first["timestamp"]).tzinfo is not None
    assert "Traceback" in second["event"] and "RuntimeError" in second["event"]
    assert secret not in stream.getvalue()


# ---------------------------------------------------------------- the daemon as a process
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class DaemonProcess:
    """``python -m etl run`` in a subprocess, with its HTTP endpoints and its JSON log."""

    def __init__(self, tmp_path: Path, env: dict[str, str], name: str = "daemon") -> None:
        self.port = free_port()
        self.log_path = tmp_path / f"{name}.log"
        base = {k: v for k, v in os.environ.items() if not k.startswith(CLEAN_PREFIXES)}
        defaults = {
            "SYNC_INTERVAL": "2",
            "SYNC_JITTER": "0",
            "HTTP_HOST": "127.0.0.1",
            "HTTP_PORT": str(self.port),
            "LOG_FORMAT": "json",
            "VSPC_MAX_ATTEMPTS": "2",
            "VSPC_RETRY_BUDGET": "2",
            "VSPC_TIMEOUT": "30",
            "VSPC_CONCURRENCY": "1",
            "PYTHONUNBUFFERED": "1",
        }
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "etl", "run"],
                env=base | defaults | env,
                cwd=tmp_path,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError:
            return 0, ""

    def json(self, path: str) -> tuple[int, dict[str, Any]]:
        status, body = self.get(path)
        return status, json.loads(body) if body else {}

    def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        status, body = self.get("/metrics")
        assert status == 200
        return {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(body)
            for sample in family.samples
        }

    def logs(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line]

    def terminate(self, timeout: float) -> tuple[int, float]:
        """SIGTERM; the exit code and the seconds it took to exit."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        return code, time.monotonic() - started

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., DaemonProcess]]:
    started: list[DaemonProcess] = []

    def start(env: dict[str, str], name: str = "daemon") -> DaemonProcess:
        daemon = DaemonProcess(tmp_path, env, name)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.kill()


def daemon_env(database_url: URL, server: SimulatorServer | None, source: str) -> dict[str, str]:
    env = {
        "DATABASE_URL": database_url.render_as_string(hide_password=False),
        "VSPC_API_KEY": TEST_API_KEY,
        "VSPC_SOURCE": source,
    }
    env["VSPC_URL"] = server.url if server is not None else "http://127.0.0.1:9"
    return env


def run_rows(engine: Engine, source: str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT * FROM vspc.etl_runs WHERE source = :s ORDER BY run_id"), {"s": source}
        ).mappings()
        return [dict(row) for row in rows]


def statuses_of(rows: list[dict[str, Any]]) -> list[str]:
    return [row["status"] for row in rows]


def statuses(engine: Engine, source: str) -> list[str]:
    return statuses_of(run_rows(engine, source))


def job_count(engine: Engine, source: str) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                text(
                    "SELECT count(*) FROM vspc.backup_agent_jobs "
                    "WHERE source = :s AND deleted_at IS NULL"
                ),
                {"s": source},
            ).scalar_one()
        )


def settled(
    daemon: DaemonProcess, engine: Engine, source: str
) -> tuple[list[dict[str, Any]], dict[tuple[str, frozenset[tuple[str, str]]], float]]:
    """etl_runs and /metrics read while no run is going, so they describe the same runs."""
    for _ in range(100):
        before = run_rows(engine, source)
        metrics = daemon.metrics()
        idle = metrics[("vspc_etl_run_in_progress", frozenset())] == 0  # counted, too
        if idle and before == run_rows(engine, source) and "running" not in statuses_of(before):
            return before, metrics
        time.sleep(0.1)
    raise AssertionError("the daemon never stood still between runs")


def assert_metrics_match(
    rows: list[dict[str, Any]], metrics: dict[tuple[str, frozenset[tuple[str, str]]], float]
) -> None:
    source = rows[0]["source"]

    def value(name: str, **labels: str) -> float:
        return metrics.get((name, frozenset(labels.items())), 0.0)

    for status in ("success", "failed", "skipped"):
        expected = sum(r["status"] == status for r in rows)
        assert value("vspc_etl_runs_total", source=source, status=status) == expected, status
    successes = [r for r in rows if r["status"] == "success"]
    for outcome in ("seen", "inserted", "updated", "unchanged", "deleted", "rejected"):
        expected = sum(r[f"jobs_{outcome}"] for r in successes)
        assert value("vspc_etl_jobs_total", source=source, outcome=outcome) == expected, outcome
    finished = [r for r in rows if r["status"] in ("success", "failed")]
    assert value("vspc_etl_run_duration_seconds_count", source=source, status="success") == len(
        successes
    )
    assert value("vspc_etl_run_duration_seconds_count", source=source, status="failed") == (
        len(finished) - len(successes)
    )
    # every page is one answered request; a names read or a token request may add more
    assert value("vspc_etl_vspc_requests_total", outcome="ok") >= sum(r["pages"] or 0 for r in rows)
    last = max(r["finished_at"] for r in successes).timestamp()
    assert abs(value("vspc_etl_last_success_timestamp_seconds", source=source) - last) < 2


def test_daemon_end_to_end(
    spawn: Callable[..., DaemonProcess],
    fresh_db: Engine,
    database_url: URL,
    sim_server: SimulatorServer,
    simulator: Simulator,
) -> None:
    source = "daemon-e2e"
    daemon = spawn(daemon_env(database_url, sim_server, source))
    wait_for(lambda: statuses(fresh_db, source).count("success") >= 3, 20, "three successes")
    simulator.advance(24)  # later runs have something to update
    done = statuses(fresh_db, source).count("success")
    # a run that began before the advance may still end: the one after it reads the new state
    wait_for(lambda: statuses(fresh_db, source).count("success") >= done + 2, 20, "a run after it")
    assert daemon.json("/healthz")[0] == 200
    status, ready = daemon.json("/readyz")
    assert (status, ready["status"], ready["window_s"]) == (200, "ok", 6.0)
    rows, metrics = settled(daemon, fresh_db, source)
    assert_metrics_match(rows, metrics)
    assert job_count(fresh_db, source) == len(simulator.every_job())

    # The console goes away: runs fail and are recorded, the daemon lives on, and once the
    # last success is older than 3 x the interval it is no longer ready.
    sim_server.stop()
    status, ready = wait_for(
        lambda: (lambda r: r if r[0] == 503 else None)(daemon.json("/readyz")), 12, "503"
    )
    assert "more than 3 x the 2 s period" in ready["reason"]
    assert ready["last_success_age_s"] > 6
    assert daemon.json("/healthz")[0] == 200
    assert daemon.proc.poll() is None
    rows, metrics = settled(daemon, fresh_db, source)
    assert rows[-1]["status"] == "failed"
    assert "VSPC kept refusing the connection" in rows[-1]["error"]
    assert_metrics_match(rows, metrics)
    connect = ("vspc_etl_vspc_requests_total", frozenset({("outcome", "connect")}))
    assert metrics[connect] >= 2
    assert metrics[("vspc_etl_vspc_retries_total", frozenset({("reason", "connect")}))] >= 1

    code, took = daemon.terminate(timeout=15)
    assert code == 0 and took < 5
    assert "running" not in statuses(fresh_db, source)
    finished = [e for e in daemon.logs() if e.get("run_id") and e.get("status") == "success"]
    assert len(finished) >= 3
    assert set(finished[0]["counts"]) >= {"seen", "inserted", "updated", "deleted", "rejected"}
    assert all(e["source"] == source for e in finished)
    assert {"timestamp", "level", "logger", "event"} <= set(finished[0])
    assert TEST_API_KEY not in daemon.log_path.read_text()


def test_sigterm_mid_run_rolls_it_back(
    spawn: Callable[..., DaemonProcess],
    fresh_db: Engine,
    database_url: URL,
    sim_server: SimulatorServer,
    simulator: Simulator,
) -> None:
    source = "daemon-cancel"
    simulator.latency = 0.25  # 12 pages of 5: a run takes 3 s
    env = daemon_env(database_url, sim_server, source)
    daemon = spawn(env | {"VSPC_PAGE_SIZE": "5", "SHUTDOWN_GRACE": "1", "SYNC_INTERVAL": "1h"})
    wait_for(lambda: statuses(fresh_db, source) == ["running"], 10, "a run in progress")
    time.sleep(0.5)
    code, took = daemon.terminate(timeout=15)
    assert code == 0
    assert took < 1 + 2, took  # the grace, then the page in hand
    [row] = run_rows(fresh_db, source)
    assert row["status"] == "failed"
    assert row["error"].startswith("cancelled before it finished (the process is shutting down)")
    assert job_count(fresh_db, source) == 0
    with fresh_db.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM vspc.etl_rejects")).scalar_one() == 0


def test_sigterm_lets_a_run_finish_within_the_grace(
    spawn: Callable[..., DaemonProcess],
    fresh_db: Engine,
    database_url: URL,
    sim_server: SimulatorServer,
    simulator: Simulator,
) -> None:
    source = "daemon-grace"
    simulator.latency = 0.1
    # The run's length is the job pages' here: the restore points (84 more pages of 5) are
    # refused, a warning.
    simulator.faults.add("404", path="restore_points", times=None)
    env = daemon_env(database_url, sim_server, source)
    daemon = spawn(env | {"VSPC_PAGE_SIZE": "5", "SHUTDOWN_GRACE": "20", "SYNC_INTERVAL": "1h"})
    wait_for(lambda: statuses(fresh_db, source) == ["running"], 10, "a run in progress")
    code, took = daemon.terminate(timeout=25)
    assert code == 0 and took < 10
    assert statuses(fresh_db, source) == ["success"]
    assert job_count(fresh_db, source) == len(simulator.every_job())


def blocked_statement(engine: Engine) -> str | None:
    """The statement a vspc-etl session of this database is waiting to lock for, if any."""
    with engine.connect() as conn:
        return conn.execute(
            text(
                "SELECT query FROM pg_stat_activity WHERE application_name = 'vspc-etl' "
                "AND datname = current_database() AND wait_event_type = 'Lock'"
            )
        ).scalar()


def test_grace_ending_in_the_merge_cancels_it_on_the_server(
    spawn: Callable[..., DaemonProcess],
    fresh_db: Engine,
    database_url: URL,
    sim_server: SimulatorServer,
    simulator: Simulator,
) -> None:
    source = "daemon-merge"
    simulator.latency = 1.0  # time to lock the run's row while it reads its one page
    env = daemon_env(database_url, sim_server, source)
    holder = create_engine(database_url)
    try:
        with holder.connect() as lock_conn:
            daemon = spawn(env | {"SHUTDOWN_GRACE": "1", "SYNC_INTERVAL": "1h"})
            run_id = wait_for(lambda: run_rows(fresh_db, source), 10, "the run")[0]["run_id"]
            # Holding the run's row blocks the merge transaction on its last statement
            # (setting the run `success`), after every data statement.
            lock_conn.execute(
                text("SELECT 1 FROM vspc.etl_runs WHERE run_id = :id FOR UPDATE"), {"id": run_id}
            )
            query = wait_for(lambda: blocked_statement(fresh_db), 10, "a blocked merge")
            assert "SET status = 'success'" in query
            daemon.proc.send_signal(signal.SIGTERM)
            # After the grace the merge is cancelled on the server; recording the failure
            # then waits for our row lock, which we let go of.
            wait_for(
                lambda: "'failed'" in (blocked_statement(fresh_db) or ""), 10, "the failed row"
            )
            lock_conn.rollback()
    finally:
        holder.dispose()
    assert daemon.proc.wait(timeout=15) == 0
    [row] = run_rows(fresh_db, source)
    assert row["status"] == "failed"
    assert "cancelled before it finished" in row["error"]
    assert "canceling statement due to user request" in row["error"]
    assert job_count(fresh_db, source) == 0
    with fresh_db.connect() as conn:
        snapshots = "SELECT count(*) FROM vspc.backup_agent_job_snapshots"
        assert conn.execute(text(snapshots)).scalar_one() == 0


def test_a_run_stuck_on_the_network_is_abandoned_cleanly(
    spawn: Callable[..., DaemonProcess],
    fresh_db: Engine,
    database_url: URL,
    sim_server: SimulatorServer,
    simulator: Simulator,
) -> None:
    source = "daemon-stuck"
    simulator.faults.add("hang", after=1, times=1, seconds=60)
    env = daemon_env(database_url, sim_server, source)
    daemon = spawn(env | {"VSPC_PAGE_SIZE": "5", "SHUTDOWN_GRACE": "1", "SYNC_INTERVAL": "1h"})
    wait_for(lambda: simulator.faults.pending == 0, 10, "the request that hangs")
    code, took = daemon.terminate(timeout=15)
    assert code == 0
    assert took < 1 + 1 + 2, took  # grace, a second to notice the cancel, then abandoned
    [row] = run_rows(fresh_db, source)
    assert row["status"] == "failed"
    assert "abandoned" in row["error"]
    assert job_count(fresh_db, source) == 0
    with fresh_db.connect() as conn:  # its session, and so its sync lock, is gone
        left = conn.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'vspc-etl' "
                "AND datname = current_database()"
            )
        ).scalar_one()
    assert left == 0


def test_two_daemons_never_sync_a_source_at_once(
    spawn: Callable[..., DaemonProcess],
    fresh_db: Engine,
    database_url: URL,
    sim_server: SimulatorServer,
    simulator: Simulator,
) -> None:
    source = "daemon-twins"
    simulator.latency = 0.05  # 6 pages: about 0.4 s a run, the interval is 1 s
    env = daemon_env(database_url, sim_server, source)
    env |= {"VSPC_PAGE_SIZE": "10", "SYNC_INTERVAL": "1", "SYNC_JITTER": "1"}
    twins = [spawn(env, "twin-a"), spawn(env, "twin-b")]
    wait_for(
        lambda: (
            statuses(fresh_db, source).count("success") >= 6
            and "skipped" in statuses(fresh_db, source)
        ),
        30,
        "six successes and a skip",
    )
    for twin in twins:
        assert twin.terminate(timeout=15)[0] == 0
    rows = run_rows(fresh_db, source)
    assert "running" not in {r["status"] for r in rows}
    successes = sorted(
        (r["started_at"], r["finished_at"]) for r in rows if r["status"] == "success"
    )
    for (_, end), (start, _) in pairwise(successes):
        assert end <= start, "two successful syncs of one source overlapped"
    # Every row was written by one of the two, and both took part.
    logged = [
        {e["run_id"]: e["status"] for e in twin.logs() if e.get("status") and e.get("run_id")}
        for twin in twins
    ]
    assert all(logged), "one daemon never ran"
    assert not set(logged[0]) & set(logged[1])
    assert {**logged[0], **logged[1]} == {r["run_id"]: r["status"] for r in rows}


class TcpProxy:
    """A loopback TCP forwarder to PostgreSQL that can be switched off, connections and all."""

    def __init__(self, upstream: tuple[int, str | tuple[str, int]]) -> None:
        self.family, self.address = upstream
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen()
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._open.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.socket(self.family)
            upstream.connect(self.address)
            with self._lock:
                self._open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


def proxied(database_url: URL) -> tuple[TcpProxy, URL]:
    socket_dir = database_url.query.get("host")
    if isinstance(socket_dir, str) and socket_dir.startswith("/"):  # embedded: a unix socket
        path = f"{socket_dir}/.s.PGSQL.{database_url.port or 5432}"
        proxy = TcpProxy((socket.AF_UNIX, path))
    else:
        host = database_url.host or "127.0.0.1"
        proxy = TcpProxy((socket.AF_INET, (host, database_url.port or 5432)))
    query = {k: v for k, v in database_url.query.items() if k != "host"}
    return proxy, database_url.set(host="127.0.0.1", port=proxy.port, query=query)


def test_database_outages_do_not_kill_the_daemon(
    spawn: Callable[..., DaemonProcess],
    fresh_db: Engine,
    database_url: URL,
    sim_server: SimulatorServer,
) -> None:
    source = "daemon-outage"
    proxy, url = proxied(database_url)
    daemon = spawn(daemon_env(url, sim_server, source) | {"SYNC_INTERVAL": "1"})
    try:
        # Down at start: the daemon stays up, says so, and is alive but not ready.
        wait_for(lambda: daemon.json("/healthz")[0] == 200, 10, "healthz")
        status, ready = daemon.json("/readyz")
        assert status == 503 and ready["reason"].startswith("database not reached yet")
        proxy.start()
        wait_for(lambda: "success" in statuses(fresh_db, source), 10, "a success")
        # Down while running: ticks fail, the daemon lives on, and recovers.
        proxy.stop()
        wait_for(
            lambda: sum("no run recorded" in e["event"] for e in daemon.logs()) >= 2, 10, "misses"
        )
        assert daemon.json("/readyz")[0] == 503
        assert daemon.proc.poll() is None
        done = statuses(fresh_db, source).count("success")
        proxy.start()
        wait_for(lambda: statuses(fresh_db, source).count("success") > done, 10, "recovery")
        assert daemon.json("/readyz")[0] == 200
        unrecorded = ("vspc_etl_unrecorded_runs_total", frozenset({("reason", "database")}))
        assert daemon.metrics()[unrecorded] >= 2
        assert daemon.terminate(timeout=15)[0] == 0
    finally:
        proxy.stop()
    events = [e["event"] for e in daemon.logs()]
    assert any("tries again at the next run" in e for e in events)
    assert "running" not in statuses(fresh_db, source)
