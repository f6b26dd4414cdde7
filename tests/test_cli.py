"""The ``vspc-etl`` command: exit codes, messages, help, and no secret in any output."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, text
from sqlalchemy.engine import URL

from etl.cli import main
from etl.simulator import Simulator, SimulatorServer
from tests.conftest import TEST_API_KEY, TEST_PASSWORD, TEST_USER

ROOT = Path(__file__).resolve().parent.parent


def env_for(
    database_url: URL, server: SimulatorServer | None = None, **extra: str
) -> dict[str, str]:
    env = {"DATABASE_URL": database_url.render_as_string(hide_password=False)}
    if server is not None:
        env |= {"VSPC_URL": server.url, "VSPC_API_KEY": TEST_API_KEY, "VSPC_SOURCE": "cli"}
    return env | extra


def test_every_command_has_help_and_is_documented(runner: CliRunner) -> None:
    readme = (ROOT / "README.md").read_text()
    for name, command in main.commands.items():
        result = runner.invoke(main, [name, "--help"])
        assert result.exit_code == 0, name
        assert (command.help or "").strip(), name
        assert f"vspc-etl {name}" in readme, name


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "error: VSPC_URL is not set: give the console's base URL"),
        ({"VSPC_URL": "https://h"}, "error: no VSPC credentials"),
        ({"VSPC_URL": "h:1280", "VSPC_API_KEY": "k1234"}, "error: VSPC_URL 'h:1280' is not"),
        ({"VSPC_URL": "https://h", "VSPC_API_KEY": "k", "VSPC_USERNAME": "u"}, "error: both"),
        (
            {"VSPC_URL": "https://h", "VSPC_API_KEY": "k", "VSPC_CA_BUNDLE": "/no/ca.pem"},
            "error: VSPC_CA_BUNDLE '/no/ca.pem' does not exist",
        ),
        ({"VSPC_PAGE_SIZE": "lots"}, "error: VSPC_PAGE_SIZE: Input should be a valid integer"),
    ],
)
def test_configuration_errors_exit_2_with_one_sentence(
    runner: CliRunner, database_url: URL, env: dict[str, str], message: str
) -> None:
    result = runner.invoke(main, ["sync"], env=env_for(database_url) | env)
    assert result.exit_code == 2
    assert result.stderr.startswith(message)
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output


def test_sync_prints_a_summary(
    runner: CliRunner, fresh_db: Engine, database_url: URL, sim_server: SimulatorServer
) -> None:
    result = runner.invoke(main, ["sync", "--no-progress"], env=env_for(database_url, sim_server))
    assert result.exit_code == 0, result.output
    assert re.fullmatch(
        r"run 1 success in \d+\.\ds: 4 pages, 60 jobs seen, 60 inserted, 0 updated, "
        r"0 unchanged, 0 deleted, 0 rejected; restore points \(full read\): (\d+) seen, "
        r"\1 new, 0 gone, 0 rejected\n",
        result.stdout,
    )


def test_failed_run_exits_1(
    runner: CliRunner,
    fresh_db: Engine,
    database_url: URL,
    sim_server: SimulatorServer,
    simulator: Simulator,
) -> None:
    """The console fails for good from page 3 on: exit 1, nothing loaded, run failed."""
    simulator.faults.add("520", after=2, times=None)
    env = env_for(database_url, sim_server, VSPC_PAGE_SIZE="10", VSPC_MAX_ATTEMPTS="2")
    result = runner.invoke(main, ["sync"], env=env)
    assert result.exit_code == 1
    assert result.stdout.startswith("run 1 failed in ")
    assert "HTTP 520" in result.stdout
    assert "Traceback" not in result.output
    with fresh_db.connect() as conn:
        status, error, pages = conn.execute(
            text("SELECT status, error, pages FROM vspc.etl_runs")
        ).one()
        jobs = conn.execute(text("SELECT count(*) FROM vspc.backup_agent_jobs")).scalar_one()
        versions = conn.execute(
            text("SELECT count(*) FROM vspc.backup_agent_job_snapshots")
        ).scalar_one()
    assert status == "failed"
    assert "gave up after 2 attempts" in error
    # the Linux and Mac pages read before the Windows collection gave up count; nothing kept
    assert (jobs, versions) == (0, 0) and pages >= 2


def test_unreachable_database_exits_1(runner: CliRunner, sim_server: SimulatorServer) -> None:
    env = {
        "DATABASE_URL": "postgresql://nobody:pw-0000@127.0.0.1:1/none",
        "VSPC_URL": sim_server.url,
        "VSPC_API_KEY": TEST_API_KEY,
    }
    result = runner.invoke(main, ["sync"], env=env)
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1].startswith("error: cannot connect to the database")
    assert "pw-0000" not in result.output


def test_migrate_reports_revision(runner: CliRunner, database_url: URL) -> None:
    result = runner.invoke(main, ["migrate"], env=env_for(database_url))
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().endswith("is at revision 0012")


@pytest.mark.parametrize("auth", ["password", "api-key"])
def test_no_secret_in_any_output_at_debug(
    fresh_db: Engine, database_url: URL, tmp_path: Path, auth: str
) -> None:
    simulator = Simulator(
        jobs=30,
        seed=5,
        users={TEST_USER: TEST_PASSWORD},
        api_keys=(TEST_API_KEY,),
        token_ttl=1.0,
    )
    simulator.faults.add("401", after=2, times=1)
    credentials = (
        {"VSPC_USERNAME": TEST_USER, "VSPC_PASSWORD": TEST_PASSWORD}
        if auth == "password"
        else {"VSPC_API_KEY": TEST_API_KEY}
    )
    with SimulatorServer(simulator, host="127.0.0.1", port=0) as server:
        env = dict(
            os.environ,
            DATABASE_URL=database_url.render_as_string(hide_password=False),
            VSPC_URL=server.url,
            VSPC_PAGE_SIZE="4",
            LOG_LEVEL="DEBUG",
            **credentials,
        )
        proc = subprocess.run(
            [sys.executable, "-m", "etl", "sync"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        tokens = simulator.issued_tokens()
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "DEBUG" in output  # the debug log really was on
    assert "401" in output  # the re-authentication happened and was logged
    if auth == "password":
        assert len(tokens) >= 2
    for secret in [TEST_PASSWORD, TEST_API_KEY, *tokens]:
        assert secret not in output


def test_mfa_account_gets_a_clear_sentence(
    runner: CliRunner, fresh_db: Engine, database_url: URL, sim_server: SimulatorServer
) -> None:
    env = env_for(database_url) | {
        "VSPC_URL": sim_server.url,
        "VSPC_USERNAME": "mfa-user",
        "VSPC_PASSWORD": "whatever-9",
    }
    result = runner.invoke(main, ["sync"], env=env)
    assert result.exit_code == 1
    assert "multi-factor" in result.stdout
    assert "VSPC_API_KEY" in result.stdout
    assert "whatever-9" not in result.output


def test_bad_password_gets_a_clear_sentence(
    runner: CliRunner, fresh_db: Engine, database_url: URL, sim_server: SimulatorServer
) -> None:
    env = env_for(database_url) | {
        "VSPC_URL": sim_server.url,
        "VSPC_USERNAME": TEST_USER,
        "VSPC_PASSWORD": "wrong-password-7",
    }
    result = runner.invoke(main, ["sync"], env=env)
    assert result.exit_code == 1
    assert "invalid_grant" in result.stdout
    assert "check VSPC_USERNAME and VSPC_PASSWORD" in result.stdout
    assert "wrong-password-7" not in result.output
