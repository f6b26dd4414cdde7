"""Shared fixtures: a real PostgreSQL per test session, a simulator on loopback.

PostgreSQL: ``TEST_DATABASE_URL`` if set, else the server on 127.0.0.1:5432 (user postgres),
else an embedded one (pgserver) in a temporary directory. Each session creates a throwaway
database, migrates it to head once, and drops it at the end.
"""

from __future__ import annotations

import gc
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import OperationalError

from etl.config import Settings, load_settings
from etl.db import migrate, normalize_url
from etl.simulator import Simulator, SimulatorServer

DEFAULT_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
TEST_API_KEY = "test-api-key-5f1c9e"
TEST_USER, TEST_PASSWORD = "etl-user", "test-password-a8d2"


def _reachable(url: URL) -> bool:
    engine = create_engine(url, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except OperationalError:
        return False
    finally:
        engine.dispose()


@pytest.fixture(autouse=True)
def _collector_as_found() -> Iterator[None]:
    """A command run in-process (``vspc-etl sync`` through CliRunner) freezes the objects
    alive then (``etl.alloc.tune_gc``) for the whole process: undone after each test."""
    yield
    gc.unfreeze()


@pytest.fixture(scope="session")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[URL]:
    """A maintenance URL of a running PostgreSQL server (real or embedded)."""
    url = normalize_url(os.environ.get("TEST_DATABASE_URL", DEFAULT_SERVER))
    if _reachable(url):
        yield url
        return
    import pgserver

    pgdata = tmp_path_factory.mktemp("pgdata")
    server = pgserver.get_server(pgdata, cleanup_mode="delete")
    try:
        yield normalize_url(server.get_uri())
    finally:
        server.cleanup()


def create_database(server_url: URL, prefix: str) -> URL:
    """Create an empty database on the server and return its URL."""
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return server_url.set(database=name)


def drop_database(server_url: URL, url: URL) -> None:
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def database_url(server_url: URL) -> Iterator[URL]:
    """A throwaway database for this test session, migrated to head."""
    url = create_database(server_url, "vspc_etl_test")
    migrate(url)
    yield url
    drop_database(server_url, url)


@pytest.fixture(scope="session")
def engine(database_url: URL) -> Iterator[Engine]:
    engine = create_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def fresh_db(engine: Engine) -> Engine:
    """The session database with every vspc table emptied."""
    empty_warehouse(engine)
    return engine


def empty_warehouse(engine: Engine) -> None:
    """Empty every vspc table; reporting settings back to their defaults."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "TRUNCATE vspc.backup_agent_jobs, vspc.backup_agent_job_snapshots, "
                "vspc.etl_runs, vspc.etl_rejects, vspc.job_run_facts, vspc.sla_daily_counts, "
                "vspc.organizations, vspc.backup_agents, vspc.management_agents, "
                "vspc.etl_job_fingerprints, "
                "vspc.etl_name_pages, vspc.restore_points RESTART IDENTITY"
            )
        )
        # Reporting settings back to the defaults 0002 seeded (each fires a cheap refresh).
        conn.execute(text("DELETE FROM vspc.sla_policy WHERE organization_uid IS NOT NULL"))
        conn.execute(text("UPDATE vspc.sla_policy SET rpo_hours = 24"))
        conn.execute(text("UPDATE vspc.report_settings SET time_zone = 'UTC'"))


@pytest.fixture
def simulator() -> Simulator:
    """A small deterministic console."""
    return Simulator(
        jobs=60,
        seed=7,
        api_keys=(TEST_API_KEY,),
        users={TEST_USER: TEST_PASSWORD},
        mfa_users=("mfa-user",),
    )


@pytest.fixture
def sim_server(simulator: Simulator) -> Iterator[SimulatorServer]:
    """The simulator serving HTTP on 127.0.0.1 (a random free port)."""
    with SimulatorServer(simulator, host="127.0.0.1", port=0) as server:
        yield server


def make_settings(database_url: URL, server: SimulatorServer | None = None, **env: Any) -> Settings:
    """Settings as a user would give them, from environment variables only."""
    environ = {"DATABASE_URL": database_url.render_as_string(hide_password=False)}
    if server is not None:
        environ.update({"VSPC_URL": server.url, "VSPC_API_KEY": TEST_API_KEY})
    environ.update({k: str(v) for k, v in env.items() if v is not None})
    for key in [k for k, v in env.items() if v is None]:
        environ.pop(key, None)
    return load_settings(environ=environ, dotenv=False)


@pytest.fixture
def settings(database_url: URL, sim_server: SimulatorServer) -> Settings:
    """Settings pointing at the session database and the simulator, API-key auth."""
    return make_settings(database_url, sim_server, VSPC_SOURCE="test-console")


def no_sleep(seconds: float) -> None:
    """Retry sleeps in tests are instant."""


@pytest.fixture(scope="session")
def seed_jobs() -> list[dict[str, Any]]:
    """The two example jobs of the vendor's page, backslashes escaped as a real server sends."""
    path = Path(__file__).parent / "data" / "seed_response.json"
    return list(json.loads(path.read_text(encoding="utf-8"))["data"])


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """A CLI runner in an empty directory (no stray .env) with a clean environment
    (a module that needs another cleaning defines its own)."""
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith(("VSPC_", "DATABASE_URL", "LOG_LEVEL")):
            monkeypatch.delenv(name)
    return CliRunner()
