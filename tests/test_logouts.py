"""Logouts by another application on the same account, end to end: the simulator on
loopback ends every session after two requests (and each login or refresh ends the session
before it), four pages are in flight, faults come on top; a real PostgreSQL takes the runs.

Retry waits are skipped (``no_sleep``); the assertions are on what was stored and said.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.engine import URL

from etl.pipeline import run_once
from etl.simulator import Request, Response, Simulator, SimulatorServer
from tests.conftest import TEST_PASSWORD, TEST_USER, make_settings, no_sleep
from tests.warehouse import assert_sound, content, live_raw, statuses, truth

SYNCS = 20


def password_settings(database_url: URL, server: SimulatorServer, **env: Any) -> Any:
    defaults: dict[str, Any] = {
        "VSPC_API_KEY": None,
        "VSPC_USERNAME": TEST_USER,
        "VSPC_PASSWORD": TEST_PASSWORD,
        "VSPC_PAGE_SIZE": 5,
        "VSPC_CONCURRENCY": 4,
        "VSPC_SOURCE": "logouts",
    }
    return make_settings(database_url, server, **(defaults | env))


def short_sessions(jobs: int = 120) -> Simulator:
    """A console whose sessions answer two requests each, one session per user at a time."""
    return Simulator(
        jobs=jobs,
        seed=17,
        api_keys=(),
        users={TEST_USER: TEST_PASSWORD},
        token_uses=2,
        one_session_per_user=True,
    )


def test_every_sync_succeeds_while_sessions_end_every_two_requests(
    fresh_db: Engine, database_url: URL
) -> None:
    simulator = short_sessions()
    simulator.faults.random(0.1, ("429", "520", "503", "reset", "401"), seed=5, path="any")
    with SimulatorServer(simulator, host="127.0.0.1", port=0) as server:
        settings = password_settings(database_url, server)
        results = []
        for _ in range(SYNCS):
            simulator.advance(6)  # jobs run, come and go between two syncs
            result = run_once(settings, engine=fresh_db, sleep=no_sleep)
            results.append((result.status, result.complete, result.error))
            assert result.seen == len(simulator.every_job())
            assert live_raw(fresh_db, "logouts") == truth(simulator.every_job())
    assert results == [("success", True, None)] * SYNCS
    assert statuses(fresh_db, "logouts") == ["success"] * SYNCS
    assert_sound(fresh_db)
    requests, faults = simulator.stats.snapshot().values()
    # Sessions really ended all along: about one renewal per two requests, faults on top.
    pages = sum(
        requests.get(endpoint, 0)
        for endpoint in ("jobs", "linux_jobs", "mac_jobs", "backup_agents", "management_agents")
    )
    assert requests["token"] > pages // 4
    assert {"401", "429", "520", "503", "reset"} <= set(faults)


def test_a_wrong_password_fails_at_once_with_its_sentence(
    fresh_db: Engine, database_url: URL
) -> None:
    simulator = short_sessions(jobs=20)
    with SimulatorServer(simulator, host="127.0.0.1", port=0) as server:
        settings = password_settings(database_url, server, VSPC_PASSWORD="wrong-password-3")
        before = content(fresh_db)
        result = run_once(settings, engine=fresh_db, sleep=no_sleep)
    assert (result.status, result.error) == (
        "failed",
        f"The VSPC console refused the login of {TEST_USER!r} (400, invalid_grant); "
        "check VSPC_USERNAME and VSPC_PASSWORD.",
    )
    assert simulator.stats.snapshot()["requests"] == {"token": 1}  # one login, no retry
    assert content(fresh_db) == before


class PasswordChangedMidRun(Simulator):
    """After ``after`` job pages an administrator changes the account's password: every
    session and refresh token is void, and the old password no longer logs in."""

    def __init__(self, after: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.after = after

    def handle(self, request: Request) -> Response:
        if "/jobs" in request.path and self.stats.snapshot()["requests"].get("jobs") == self.after:
            self.users[TEST_USER] = "changed-by-an-administrator"
            self.revoke_tokens(refresh=True)
        return super().handle(request)


@pytest.mark.parametrize("concurrency", [1, 4])
def test_a_refused_refresh_logs_in_once_more_then_fails_clearly(
    fresh_db: Engine, database_url: URL, concurrency: int
) -> None:
    simulator = PasswordChangedMidRun(
        after=3, jobs=60, seed=4, api_keys=(), users={TEST_USER: TEST_PASSWORD}
    )
    with SimulatorServer(simulator, host="127.0.0.1", port=0) as server:
        settings = password_settings(database_url, server, VSPC_CONCURRENCY=concurrency)
        before = content(fresh_db)
        result = run_once(settings, engine=fresh_db, sleep=no_sleep)
        grants = simulator.stats.snapshot()["requests"]["token"]
    assert (result.status, result.error) == (
        "failed",
        f"The VSPC console refused the login of {TEST_USER!r} (400, invalid_grant); "
        "check VSPC_USERNAME and VSPC_PASSWORD.",
    )
    assert grants == 3  # the login, then one refused refresh and one refused login
    assert content(fresh_db) == before
