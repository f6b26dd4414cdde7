"""``run_once(at=...)``: a run recorded at a given instant (the demo's simulated time)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import URL

from etl.pipeline import run_once
from etl.simulator import Simulator, SimulatorServer
from tests.conftest import TEST_API_KEY, make_settings

START = (datetime.now(UTC) - timedelta(days=5)).replace(microsecond=0)


@pytest.fixture
def past_console() -> Iterator[tuple[Simulator, SimulatorServer]]:
    """A console whose clock stands five days back."""
    simulator = Simulator(
        jobs=40, seed=5, start=START, api_keys=(TEST_API_KEY,), delete_rate=0.2, add_rate=0.2
    )
    with SimulatorServer(simulator, host="127.0.0.1", port=0) as server:
        yield simulator, server


def test_every_instant_of_a_run_is_the_one_given(
    fresh_db: Engine, database_url: URL, past_console: tuple[Simulator, SimulatorServer]
) -> None:
    simulator, server = past_console
    settings = make_settings(database_url, server, VSPC_SOURCE="past")
    first = run_once(settings, engine=fresh_db, at=START)
    simulator.advance(24)
    second_at = START + timedelta(hours=24)
    second = run_once(settings, engine=fresh_db, at=second_at)
    assert (first.status, second.status) == ("success", "success")
    assert second.deleted > 0 and second.inserted > 0
    with fresh_db.connect() as conn:
        started = conn.execute(
            text("SELECT started_at FROM vspc.etl_runs ORDER BY run_id")
        ).scalars()
        assert list(started) == [START, second_at]
        stamps = conn.execute(
            text(
                "SELECT array_agg(DISTINCT first_seen_at), array_agg(DISTINCT updated_at), "
                "array_agg(DISTINCT deleted_at) FILTER (WHERE deleted_at IS NOT NULL) "
                "FROM vspc.backup_agent_jobs"
            )
        ).one()
        versions = conn.execute(
            text(
                "SELECT array_agg(DISTINCT valid_from), "
                "array_agg(DISTINCT valid_to) FILTER (WHERE valid_to IS NOT NULL) "
                "FROM vspc.backup_agent_job_snapshots"
            )
        ).one()
        protected = dict(
            conn.execute(
                text("SELECT day, sum(jobs_protected) FROM vspc.sla_daily GROUP BY day")
            ).all()
        )
    assert sorted(stamps[0]) == [START, second_at]
    assert sorted(stamps[1]) == [START, second_at]
    assert stamps[2] == [second_at]
    assert sorted(versions[0]) == [START, second_at]
    assert versions[1] == [second_at]
    # Jobs are protected from the day of the first run on, not from the day the test ran.
    assert protected[START.date()] > 0
    assert all(n == 0 for day, n in protected.items() if day < START.date())
    assert max(protected) == datetime.now(UTC).date()


def test_without_an_instant_a_run_takes_the_database_clock(
    fresh_db: Engine, database_url: URL, past_console: tuple[Simulator, SimulatorServer]
) -> None:
    _, server = past_console
    before = datetime.now(UTC)
    result = run_once(make_settings(database_url, server, VSPC_SOURCE="now"), engine=fresh_db)
    assert result.status == "success"
    with fresh_db.connect() as conn:
        started = conn.execute(text("SELECT started_at FROM vspc.etl_runs")).scalar_one()
        first_seen = conn.execute(
            text("SELECT DISTINCT first_seen_at FROM vspc.backup_agent_jobs")
        ).scalar_one()
    assert before - timedelta(seconds=5) < started < datetime.now(UTC)
    assert first_seen == started
