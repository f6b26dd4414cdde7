"""Errors a newcomer meets, each found the way a newcomer finds it: one sentence, no traceback.

Each command runs as a user runs it (CliRunner in an empty directory, settings from the
environment only) against a real PostgreSQL: a database nobody migrated, one migrated to an
old revision, and the session database at head.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from click.testing import CliRunner
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL

from etl.cli import main
from etl.daemon import Daemon
from etl.db import check_schema, head_revision, known_revisions, migrate
from etl.errors import SchemaMismatch
from etl.health import HealthServer
from etl.simulator import SimulatorServer
from tests.conftest import TEST_API_KEY, create_database, drop_database, make_settings

MISSING = "schema vspc is missing: run `vspc-etl migrate`"
BEHIND = "schema vspc is at 0003, this version needs 0012: run `vspc-etl migrate`"
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
        "schema vspc is at 0099, a revision this version does not know (it needs 0012): "
        "upgrade vspc-etl to the version that migrated it"
    )
    check_schema(engine)  # the session database itself is at head


@pytest.fixture(scope="module")
def newer_schema_db(server_url: URL) -> Iterator[URL]:
    """A database a newer version of vspc-etl migrated, to a revision this one lacks."""
    url = create_database(server_url, "vspc_etl_newer")
    migrate(url)
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE vspc.alembic_version SET version_num = '0099'"))
    engine.dispose()
    yield url
    drop_database(server_url, url)


@pytest.mark.parametrize("args", [["migrate"], ["migrate", "0003"], ["sync"], ["run"]])
def test_a_command_on_a_newer_schema_says_upgrade(
    runner: CliRunner, newer_schema_db: URL, args: list[str]
) -> None:
    result = runner.invoke(main, args, env=env_for(newer_schema_db))
    assert_one_sentence(
        result,
        2,
        "schema vspc is at 0099, a revision this version does not know (it needs 0012): "
        "upgrade vspc-etl to the version that migrated it",
    )


def test_the_revision_needed_is_the_last_migration() -> None:
    assert known_revisions() == [f"{n:04d}" for n in range(1, 13)]
    assert head_revision() == "0012"


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
        "0001, 0002, 0003, 0004, 0005, 0006, 0007, 0008, 0009, 0010, 0011, 0012, head or base",
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
        f"database {where}: migrated from revision 0003; it is at revision 0012\n",
        f"database {where}: nothing to migrate; it is at revision 0012\n",
    ]


# -- flags and settings --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "sentence"),
    [
        (
            ["sync", "--page-size", "abc"],
            "Invalid value for '--page-size': 'abc' is not a valid integer "
            "(see `vspc-etl sync --help`)",
        ),
        (
            ["sync", "--page-size", "0"],
            "--page-size: Input should be greater than or equal to 1 (got 0)",
        ),
        (
            ["sync", "--vspc-url", "vspc.example.com"],
            "--vspc-url 'vspc.example.com' is not an http(s) URL with a host, "
            "e.g. https://vspc.example.com:1280",
        ),
        (
            ["run", "--interval", "soon"],
            "--interval: Value error, must be a duration such as 900, 15m or 1h "
            "(units d, h, m, s) (got 'soon')",
        ),
        (
            ["run", "--cron", "0 0 30 2 *"],
            "--cron: the expression fires at most once; give a recurring one",
        ),
        (
            ["run", "--http-port", "70000"],
            "Invalid value for '--http-port': 70000 is not in the range 0<=x<=65535 "
            "(see `vspc-etl run --help`)",
        ),
        (
            ["--log-level", "LOUD", "verify"],
            "--log-level: Value error, must be one of DEBUG, "
            "INFO, WARNING, ERROR, CRITICAL (got 'LOUD')",
        ),
        (["sycn"], "No such command 'sycn'. Did you mean 'sync'? (see `vspc-etl --help`)"),
    ],
)
def test_a_flag_error_names_the_flag_in_one_sentence(
    runner: CliRunner, database_url: URL, args: list[str], sentence: str
) -> None:
    result = runner.invoke(main, args, env=env_for(database_url), prog_name="vspc-etl")
    assert_one_sentence(result, 2, sentence)


def test_a_bare_command_still_shows_the_help(runner: CliRunner) -> None:
    result = runner.invoke(main, [], prog_name="vspc-etl")
    assert result.stderr.startswith("Usage: vspc-etl [OPTIONS] COMMAND [ARGS]...")
    assert "  sync  " in result.stderr and "error:" not in result.stderr
    assert result.exit_code == 2


def test_an_unknown_variable_gets_a_did_you_mean_and_the_command_goes_on(
    runner: CliRunner, fresh_db: Engine, database_url: URL
) -> None:
    Path(".env").write_text("SYNC_INTERVALL=5m\n")
    env = env_for(database_url, VSPC_PAGESIZE="10", LOG_FORMAT="text")
    result = runner.invoke(main, ["verify"], env=env)
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "ok: 0 jobs, 0 versions, 0 restore points, 0 runs; every invariant holds\n"
    )
    warnings = [line.split(" ", 1)[1] for line in result.stderr.splitlines()]
    assert warnings == [
        "WARNING etl.config: SYNC_INTERVALL in the env file '.env' is not a vspc-etl setting "
        "and is ignored: did you mean SYNC_INTERVAL?",
        "WARNING etl.config: VSPC_PAGESIZE in the environment is not a vspc-etl setting "
        "and is ignored: did you mean VSPC_PAGE_SIZE?",
    ]


# -- the console cannot be reached as configured -------------------------------------------


@pytest.fixture
def self_signed_console(tmp_path: Path) -> Iterator[tuple[int, list[str]]]:
    """A real TLS server on loopback whose certificate is self-signed (trusted by nobody):
    its port, and a list that gets one entry per TCP connection it accepts."""
    ca = trustme.CA()  # a CA certificate is self-signed: the server presents it as its own
    cert, key = tmp_path / "self-signed.pem", tmp_path / "self-signed.key"
    ca.cert_pem.write_to_path(str(cert))
    ca.private_key_pem.write_to_path(str(key))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    accepted: list[str] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            accepted.append("connection")
            with conn, contextlib.suppress(OSError):  # the client refuses the certificate
                conn.settimeout(5)
                context.wrap_socket(conn, server_side=True).close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1], accepted
    stop.set()
    thread.join(5)
    listener.close()


@pytest.fixture
def unknown_host(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """``no-such-host.invalid`` (RFC 2606) does not resolve, answered here so that no query
    leaves the machine whatever its resolver; the list gets one entry per lookup of it."""
    lookups: list[str] = []
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "no-such-host.invalid":
            lookups.append(host)
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return lookups


UNKNOWN_HOST = (
    "The host 'no-such-host.invalid' of VSPC_URL is unknown (Name or service not known): "
    "check the host name in VSPC_URL."
)


def self_signed(port: int) -> str:
    return (
        f"TLS verification failed for 127.0.0.1:{port} (self-signed certificate); set "
        "VSPC_CA_BUNDLE to the console's CA certificate (PEM) or, at your own risk, "
        "VSPC_VERIFY_TLS=false."
    )


def test_a_certificate_nobody_trusts_is_named_at_once(
    runner: CliRunner, fresh_db: Engine, database_url: URL, self_signed_console: Any
) -> None:
    port, accepted = self_signed_console
    env = env_for(
        database_url, VSPC_URL=f"https://127.0.0.1:{port}", VSPC_SOURCE="tls", LOG_FORMAT="text"
    )
    result = runner.invoke(main, ["sync", "--no-progress"], env=env)
    assert_misconfigured(result, fresh_db, "tls", self_signed(port))
    assert accepted == ["connection"]  # one attempt, not eight


def test_https_to_the_simulators_plain_http_port_is_named_at_once(
    runner: CliRunner, fresh_db: Engine, database_url: URL, sim_server: SimulatorServer
) -> None:
    port = sim_server.url.rsplit(":", 1)[1].rstrip("/")
    env = env_for(
        database_url, VSPC_URL=f"https://127.0.0.1:{port}", VSPC_SOURCE="tls", LOG_FORMAT="text"
    )
    result = runner.invoke(main, ["sync", "--no-progress"], env=env)
    sentence = (
        f"The TLS handshake with 127.0.0.1:{port} failed (wrong version number): the server "
        "there speaks plain HTTP, so VSPC_URL should start with http:// (or name the "
        "console's HTTPS port)."
    )
    assert_misconfigured(result, fresh_db, "tls", sentence)


def test_an_unknown_host_is_named_at_once(
    runner: CliRunner, fresh_db: Engine, database_url: URL, unknown_host: list[str]
) -> None:
    env = env_for(
        database_url, VSPC_URL="https://no-such-host.invalid", VSPC_SOURCE="dns", LOG_FORMAT="text"
    )
    result = runner.invoke(main, ["sync", "--no-progress"], env=env)
    assert_misconfigured(result, fresh_db, "dns", UNKNOWN_HOST)
    assert unknown_host == ["no-such-host.invalid"]  # looked up once, not eight times


def assert_misconfigured(result: Any, engine: Engine, source: str, sentence: str) -> None:
    """Exit 2 with ``error: <sentence>`` as the one line on stderr besides the run's own two
    log records; no retry, no traceback; the run is recorded failed with the sentence."""
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert lines[-1] == f"error: {sentence}"
    logged = [line.split(" ", 1)[1] for line in lines[:-1]]  # LOG_FORMAT=text: time first
    assert logged == [
        f"INFO    etl.pipeline: run 1 started for {source}",
        f"ERROR   etl.pipeline: run 1 failed: {sentence}",
    ]
    with engine.connect() as conn:
        status, error = conn.execute(text("SELECT status, error FROM vspc.etl_runs")).one()
    assert (status, error) == ("failed", sentence)


def test_the_daemon_names_an_unknown_host_at_each_turn_and_readyz_gives_it(
    fresh_db: Engine, database_url: URL, unknown_host: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(
        database_url,
        VSPC_URL="https://no-such-host.invalid",
        VSPC_API_KEY=TEST_API_KEY,
        VSPC_SOURCE="dns",
    )
    daemon = Daemon(settings)
    http = HealthServer(
        "127.0.0.1", 0, health=daemon.health, ready=daemon.ready, metrics=daemon.metrics.render
    ).start()
    try:
        with caplog.at_level("ERROR"):
            daemon.tick()
            daemon.tick()
        said = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
        assert said == [f"run 1 failed: {UNKNOWN_HOST}", f"run 2 failed: {UNKNOWN_HOST}"]
        assert unknown_host == ["no-such-host.invalid"] * 2  # once a turn
        with pytest.raises(urllib.request.HTTPError) as answer:
            urllib.request.urlopen(f"http://127.0.0.1:{http.port}/readyz", timeout=5)
        assert answer.value.code == 503
        assert json.loads(answer.value.read())["reason"] == UNKNOWN_HOST
    finally:
        http.stop()
        if daemon._engine is not None:
            daemon._engine.dispose()
    with fresh_db.connect() as conn:
        rows = conn.execute(text("SELECT status, error FROM vspc.etl_runs ORDER BY run_id"))
        assert rows.all() == [("failed", UNKNOWN_HOST)] * 2


# -- quiet by default ----------------------------------------------------------------------


def test_embedded_postgresql_imports_without_third_party_warnings(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "XDG_RUNTIME_DIR"}

    def stderr_of(code: str) -> str:
        return subprocess.run(
            [sys.executable, "-W", "default", "-c", code],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stderr

    assert "XDG_RUNTIME_DIR is not set" in stderr_of("import pgserver")  # what users saw
    assert stderr_of("from etl.db import _pgserver; _pgserver()") == ""


def test_a_sync_says_plain_http_once_and_nothing_else_but_its_run(
    fresh_db: Engine, database_url: URL, sim_server: SimulatorServer, tmp_path: Path
) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("VSPC_", "DATABASE_"))}
    env = base | env_for(database_url, VSPC_URL=sim_server.url, LOG_FORMAT="text")
    proc = subprocess.run(
        [sys.executable, "-W", "default", "-m", "etl", "sync", "--no-progress"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    said = [line.split(" ", 1)[1] for line in proc.stderr.splitlines()]
    assert said[0].startswith("WARNING etl.config: VSPC_URL uses plain http")
    assert [line.split(":", 1)[0] for line in said[1:]] == ["INFO    etl.pipeline"] * 2
    assert said[1].endswith("run 1 started for 127.0.0.1")
