"""Errors a newcomer meets, each found the way a newcomer finds it: one sentence, no traceback.

Each command runs as a user runs it (CliRunner in an empty directory, settings from the
environment only) against a real PostgreSQL: a database nobody migrated, one migrated to an
old revision, and the session database at head.
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL

from etl.cli import main
from etl.daemon import Daemon
from etl.db import check_schema, head_revision, known_revisions, migrate
from etl.errors import SchemaMismatch
from etl.health import HealthServer
from tests.conftest import TEST_API_KEY, create_database, drop_database, make_settings

MISSING = "schema vspc is missing: run `vspc-etl migrate`"
BEHIND = "schema vspc is at 0003, this version needs 0007: run `vspc-etl migrate`"
# Nothing is sent to this console: every command here fails before it would be.
NO_CONSOLE = "https://127.0.0.1:9"


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """A CLI runner in an empty directory (no stray .env) with no vspc-etl settings."""
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith(("VSPC_", "DATABASE_", "SYNC_", "HTTP_", "LOG_", "SHUTDOWN_")):
            monkeypatch.delenv(name)
    return CliRunner()


@pytest.fixture(scope="module")
def unmigrated_db(server_url: URL) -> Iterator[URL]:
    """A database where nobody ran `vspc-etl migrate` yet."""
    url = create_database(server_url, "vspc_etl_unmigrated")
    yield url
    drop_database(server_url, url)


@pytest.fixture(scope="module")
def old_schema_db(server_url: URL) -> Iterator[URL]:
    """A database migrated by an older version of vspc-etl, to revision 0003."""
    url = create_database(server_url, "vspc_etl_old")
    migrate(url, "0003")
    yield url
    drop_database(server_url, url)


def env_for(url: URL, **extra: str) -> dict[str, str]:
    return {
        "DATABASE_URL": url.render_as_string(hide_password=False),
        "VSPC_URL": NO_CONSOLE,
        "VSPC_API_KEY": TEST_API_KEY,
        "HTTP_PORT": "0",
    } | extra


def assert_one_sentence(result: object, code: int, sentence: str) -> None:
    """Exit ``code``, and stderr is exactly ``error: <sentence>`` on one line."""
    exit_code, stderr, output = (getattr(result, n) for n in ("exit_code", "stderr", "output"))
    assert exit_code == code, output
    assert stderr == f"error: {sentence}\n"
    assert "Traceback" not in output


# -- schema vspc missing or behind ---------------------------------------------------------


COMMANDS = [["sync"], ["verify"], ["report"], ["grant", "postgres"], ["run"]]


@pytest.mark.parametrize("args", COMMANDS, ids=lambda args: args[0])
def test_a_command_before_migrate_says_run_migrate(
    runner: CliRunner, unmigrated_db: URL, args: list[str]
) -> None:
    result = runner.invoke(main, args, env=env_for(unmigrated_db))
    assert_one_sentence(result, 2, MISSING)


@pytest.mark.parametrize("args", COMMANDS, ids=lambda args: args[0])
def test_a_command_on_an_old_schema_says_run_migrate(
    runner: CliRunner, old_schema_db: URL, args: list[str]
) -> None:
    result = runner.invoke(main, args, env=env_for(old_schema_db))
    assert_one_sentence(result, 2, BEHIND)
    with create_engine(old_schema_db).connect() as conn:  # nothing was written
        assert conn.execute(text("SELECT count(*) FROM vspc.etl_runs")).scalar_one() == 0


def test_a_schema_newer_than_this_version_says_upgrade(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(text("UPDATE vspc.alembic_version SET version_num = '0099'"))
        with pytest.raises(SchemaMismatch) as caught:
            check_schema(conn)
        conn.rollback()
    assert str(caught.value) == (
        "schema vspc is at 0099, a revision this version does not know (it needs 0007): "
        "upgrade vspc-etl to the version that migrated it"
    )
    check_schema(engine)  # the session database itself is at head


def test_the_revision_needed_is_the_last_migration() -> None:
    assert known_revisions() == ["0001", "0002", "0003", "0004", "0005", "0006", "0007"]
    assert head_revision() == "0007"


def test_the_daemon_says_it_at_each_turn_and_readyz_gives_it(
    unmigrated_db: URL, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(unmigrated_db, VSPC_URL=NO_CONSOLE, VSPC_API_KEY=TEST_API_KEY)
    daemon = Daemon(settings)
    http = HealthServer(
        "127.0.0.1", 0, health=daemon.health, ready=daemon.ready, metrics=daemon.metrics.render
    ).start()
    try:
        with caplog.at_level("ERROR", logger="etl.daemon"):
            daemon.tick()
            daemon.tick()
        said = [r.getMessage() for r in caplog.records if r.name == "etl.daemon"]
        assert said == [f"{MISSING}; no run until then (checked again at the next run)"] * 2
        with pytest.raises(urllib.request.HTTPError) as answer:
            urllib.request.urlopen(f"http://127.0.0.1:{http.port}/readyz", timeout=5)
        assert answer.value.code == 503
        assert json.loads(answer.value.read()) == {"status": "fail", "reason": MISSING}
        unrecorded = daemon.metrics.render()[0].decode()
        assert 'vspc_etl_unrecorded_runs_total{reason="schema"} 2.0' in unrecorded
    finally:
        http.stop()
        if daemon._engine is not None:
            daemon._engine.dispose()


# -- migrate -------------------------------------------------------------------------------


def test_migrate_to_an_unknown_revision_names_the_known_ones(
    runner: CliRunner, unmigrated_db: URL
) -> None:
    result = runner.invoke(main, ["migrate", "9999"], env=env_for(unmigrated_db))
    assert_one_sentence(
        result,
        2,
        "unknown migration revision '9999': give one of "
        "0001, 0002, 0003, 0004, 0005, 0006, 0007, head or base",
    )


def test_migrate_says_what_it_did_and_nothing_else(runner: CliRunner, server_url: URL) -> None:
    url = create_database(server_url, "vspc_etl_migrate")
    where = url.render_as_string(hide_password=True)
    try:
        said = []
        for revision in ("0003", "head", "head"):
            result = runner.invoke(main, ["migrate", revision], env=env_for(url))
            assert result.exit_code == 0, result.output
            assert result.stderr == ""  # no alembic context lines, no third-party warnings
            said.append(result.stdout)
    finally:
        drop_database(server_url, url)
    assert said == [
        f"database {where}: schema vspc created; it is at revision 0003\n",
        f"database {where}: migrated from revision 0003; it is at revision 0007\n",
        f"database {where}: nothing to migrate; it is at revision 0007\n",
    ]
