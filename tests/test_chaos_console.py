"""Chaos on the console side: it hangs, answers slowly, or closes mid-body.

Timeouts are real (a fraction of a second) and retry waits are skipped; the assertions are on
what happened (requests, outcome, message), never on how long it took.
"""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine

from etl.pipeline import run_once
from etl.simulator import Simulator, SimulatorServer
from tests.conftest import make_settings, no_sleep
from tests.warehouse import assert_sound, content, lost_jobs, statuses

JOBS = "/api/v3/infrastructure/backupAgents/windows/jobs"
ATTEMPTS = 3


@pytest.fixture
def impatient(database_url: Any, sim_server: SimulatorServer) -> Any:
    """Settings with a half-second timeout and three attempts per request."""
    return make_settings(
        database_url,
        sim_server,
        VSPC_SOURCE="impatient",
        VSPC_PAGE_SIZE=20,
        VSPC_TIMEOUT=0.5,
        VSPC_MAX_ATTEMPTS=ATTEMPTS,
    )


def jobs_requests(simulator: Simulator) -> int:
    return simulator.stats.snapshot()["requests"].get("jobs", 0)


@pytest.mark.parametrize(
    ("fault", "params", "doing"),
    [
        ("hang", {"seconds": 30.0}, "VSPC was timing out"),  # accepts, never answers in time
        ("slow", {"seconds": 30.0}, "VSPC was timing out"),  # 3 s between two chunks
        ("reset", {}, "VSPC was breaking off the answer"),  # half the body, then a TCP reset
    ],
)
def test_console_failing_for_good_ends_the_run_with_a_readable_error(
    fault: str,
    params: dict[str, Any],
    doing: str,
    fresh_db: Engine,
    impatient: Any,
    simulator: Simulator,
) -> None:
    assert run_once(impatient, engine=fresh_db, sleep=no_sleep).status == "success"
    old = content(fresh_db)
    before = jobs_requests(simulator)
    simulator.faults.add(fault, path="jobs", times=None, **params)

    result = run_once(impatient, engine=fresh_db, sleep=no_sleep)

    assert result.status == "failed"
    assert jobs_requests(simulator) - before == ATTEMPTS  # bounded: the budget, then stop
    assert result.error is not None
    kept = doing.replace("VSPC was", "VSPC kept")
    assert result.error.startswith(f"{kept} (")
    assert f"for {JOBS}; gave up after {ATTEMPTS} attempts in " in result.error
    assert "\n" not in result.error
    assert content(fresh_db) == old
    assert statuses(fresh_db, "impatient") == ["success", "failed"]
    assert_sound(fresh_db)


@pytest.mark.parametrize(
    ("fault", "params"),
    [
        ("slow", {"seconds": 0.5}),  # 50 ms between chunks: slow, within the timeout
        ("hang", {"seconds": 1.0}),  # twice the timeout, on every other request
        ("reset", {}),
    ],
)
def test_console_failing_now_and_then_loads_everything(
    fault: str,
    params: dict[str, Any],
    fresh_db: Engine,
    impatient: Any,
    simulator: Simulator,
) -> None:
    simulator.faults.add(fault, path="jobs", after=1, times=2, **params)
    result = run_once(impatient, engine=fresh_db, sleep=no_sleep)
    assert result.status == "success", result.error
    assert result.complete
    assert lost_jobs(fresh_db, simulator.every_job()) == 0
    assert_sound(fresh_db)


@pytest.fixture
def silent_console() -> Iterator[str]:
    """A listener that accepts connections and never reads or answers a byte."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    listener.close()


def test_console_that_accepts_and_never_answers(
    fresh_db: Engine, database_url: Any, silent_console: str
) -> None:
    settings = make_settings(
        database_url,
        None,
        VSPC_URL=silent_console,
        VSPC_API_KEY="k-123456",
        VSPC_SOURCE="silent",
        VSPC_TIMEOUT=0.3,
        VSPC_MAX_ATTEMPTS=ATTEMPTS,
    )
    result = run_once(settings, engine=fresh_db, sleep=no_sleep)
    assert result.status == "failed"
    assert result.error is not None
    assert re.fullmatch(
        rf"VSPC kept timing out \(ReadTimeout: timed out\) for {JOBS}; "
        rf"gave up after {ATTEMPTS} attempts in \d+ s\.",
        result.error,
    )
    assert statuses(fresh_db, "silent") == ["failed"]
