"""TLS (a certificate made by trustme), credential errors, secrets, least-privilege roles."""

from __future__ import annotations

import os
import re
import ssl
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import ProgrammingError

from etl.db import migrate
from etl.pipeline import JOBS_PATH, run_once
from etl.simulator import Simulator, SimulatorServer
from etl.verify import check_invariants
from tests.conftest import (
    TEST_API_KEY,
    TEST_PASSWORD,
    TEST_USER,
    create_database,
    drop_database,
    make_settings,
    no_sleep,
)
from tests.warehouse import lost_jobs, wait_for

ROOT = Path(__file__).resolve().parent.parent


# -- TLS ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_server(simulator: Simulator, ca: trustme.CA) -> Iterator[SimulatorServer]:
    """The simulator over HTTPS with a certificate for 127.0.0.1 signed by a private CA."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    with SimulatorServer(simulator, ssl_context=context) as server:
        yield server


@pytest.fixture
def ca_bundle(ca: trustme.CA, tmp_path: Path) -> Path:
    path = tmp_path / "vspc-ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


def jobs_requests(simulator: Simulator) -> int:
    return simulator.stats.snapshot()["requests"].get("jobs", 0)


def test_tls_verification_is_on_by_default_and_names_vspc_ca_bundle(
    fresh_db: Engine, database_url: URL, tls_server: SimulatorServer, simulator: Simulator
) -> None:
    assert tls_server.url.startswith("https://127.0.0.1:")
    settings = make_settings(database_url, tls_server, VSPC_SOURCE="tls")
    result = run_once(settings, engine=fresh_db, sleep=no_sleep)
    assert result.status == "failed"
    assert result.error is not None
    assert re.fullmatch(
        rf"TLS verification failed for 127\.0\.0\.1:{tls_server.port} \(.*certificate.*\); "
        r"set VSPC_CA_BUNDLE to the console's CA certificate \(PEM\) or, at your own risk, "
        r"VSPC_VERIFY_TLS=false\.",
        result.error,
    )
    assert jobs_requests(simulator) == 0  # refused at the handshake, not retried


def test_the_ca_bundle_makes_it_work(
    fresh_db: Engine,
    database_url: URL,
    tls_server: SimulatorServer,
    simulator: Simulator,
    ca_bundle: Path,
) -> None:
    settings = make_settings(database_url, tls_server, VSPC_SOURCE="tls", VSPC_CA_BUNDLE=ca_bundle)
    simulator.faults.add("202", path="jobs")  # the async Location is https too, same origin
    result = run_once(settings, engine=fresh_db, sleep=no_sleep)
    assert result.status == "success", result.error
    assert lost_jobs(fresh_db, simulator.every_job()) == 0


def cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "etl", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_verify_tls_false_works_and_warns_on_every_run(
    fresh_db: Engine, database_url: URL, tls_server: SimulatorServer, tmp_path: Path
) -> None:
    env = dict(
        os.environ,
        DATABASE_URL=database_url.render_as_string(hide_password=False),
        VSPC_URL=tls_server.url,
        VSPC_API_KEY=TEST_API_KEY,
        VSPC_SOURCE="tls-off",
        VSPC_VERIFY_TLS="false",
        LOG_FORMAT="text",
    )
    warning = "VSPC_VERIFY_TLS=false: the console's TLS certificate is NOT verified"
    for run in (1, 2):
        sync = cli(["sync", "--no-progress"], env, tmp_path)
        assert sync.returncode == 0, sync.stderr
        assert sync.stdout.startswith(f"run {run} success")
        assert sync.stderr.count(warning) == 1

    # The daemon, too, says it at each run, not once at start.
    log = tmp_path / "daemon.log"
    with log.open("w") as out:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "etl", "run"],
            env=env | {"SYNC_INTERVAL": "1", "SYNC_JITTER": "0", "HTTP_PORT": "0"},
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: log.read_text().count(" success in ") >= 2, 30, "two daemon runs")
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
    text_ = log.read_text()
    assert text_.count(warning) >= text_.count(" success in ") >= 2


# -- credentials: one clear sentence each ---------------------------------------------------


@pytest.mark.parametrize(
    ("credentials", "fault", "sentence"),
    [
        (
            {"VSPC_USERNAME": TEST_USER, "VSPC_PASSWORD": "wrong-password-5"},
            None,
            f"The VSPC console refused the login of {TEST_USER!r} (400, invalid_grant); "
            "check VSPC_USERNAME and VSPC_PASSWORD.",
        ),
        (
            {"VSPC_USERNAME": "mfa-user", "VSPC_PASSWORD": "mfa-password-5"},
            None,
            "The VSPC account 'mfa-user' has multi-factor authentication enforced, so the "
            "password grant cannot log in; use an API key (VSPC_API_KEY) or a service account "
            "without MFA.",
        ),
        (
            {"VSPC_API_KEY": TEST_API_KEY},
            "403",
            f"The VSPC console denied access to {JOBS_PATH} (403): the account's role lacks "
            "access to it: Access denied: your role cannot read this resource; give the "
            "account a role that may read it.",
        ),
    ],
    ids=["invalid_grant", "mfa", "403"],
)
def test_credential_problems_get_one_clear_sentence(
    credentials: dict[str, str],
    fault: str | None,
    sentence: str,
    fresh_db: Engine,
    database_url: URL,
    sim_server: SimulatorServer,
    simulator: Simulator,
) -> None:
    if fault:  # on every platform's jobs: a refusal of some only skips those
        for path in ("jobs", "linux_jobs", "mac_jobs"):
            simulator.faults.add(fault, path=path, times=None)
    settings = make_settings(
        database_url, None, VSPC_URL=sim_server.url, VSPC_SOURCE="creds", **credentials
    )
    result = run_once(settings, engine=fresh_db, sleep=no_sleep)
    assert (result.status, result.error) == ("failed", sentence)
    with fresh_db.connect() as conn:
        stored = conn.execute(text("SELECT error FROM vspc.etl_runs")).scalar_one()
    assert stored == sentence
    assert simulator.stats.snapshot()["requests"].get("jobs", 0) <= 1  # no retrying a refusal


# -- least privilege -----------------------------------------------------------------------


def documented_sql(section: str) -> list[str]:
    """The SQL blocks of a section of docs/operations.md, as the reader would paste them."""
    doc = (ROOT / "docs/operations.md").read_text()
    body = doc.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sql\n(.*?)```", body, re.S)


class Roles:
    """The documented roles, renamed for this test (roles are global to the server)."""

    def __init__(self, server_url: URL, database: URL) -> None:
        self.suffix = uuid.uuid4().hex[:8]
        self.server_url, self.database = server_url, database
        self.names = {r: f"{r}_{self.suffix}" for r in ("vspc_owner", "vspc_etl", "vspc_reader")}
        self.passwords = {
            "OWNER-PASSWORD": f"owner-secret-{self.suffix}",
            "ETL-PASSWORD": f"etl-secret-{self.suffix}",
            "READER-PASSWORD": f"reader-secret-{self.suffix}",
        }

    def adapt(self, sql: str) -> str:
        for name, unique in self.names.items():
            sql = re.sub(rf"\b{name}\b", unique, sql)
        for placeholder, password in self.passwords.items():
            sql = sql.replace(placeholder, password)
        return re.sub(r"\bwarehouse\b", f'"{self.database.database}"', sql)

    def url(self, role: str) -> URL:
        password = {"vspc_owner": "OWNER", "vspc_etl": "ETL", "vspc_reader": "READER"}[role]
        return self.database.set(
            username=self.names[role], password=self.passwords[f"{password}-PASSWORD"]
        )


def execute(url: URL, sql: str) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(sql)
    finally:
        engine.dispose()


@pytest.fixture
def roles(server_url: URL) -> Iterator[Roles]:
    database = create_database(server_url, "vspc_roles")
    made = Roles(server_url, database)
    try:
        yield made
    finally:
        drop_database(server_url, database)
        execute(server_url, "".join(f'DROP ROLE IF EXISTS "{n}";' for n in made.names.values()))


def test_the_etl_works_with_only_the_writers_grants(
    roles: Roles, sim_server: SimulatorServer, simulator: Simulator
) -> None:
    admin, owner_grants = documented_sql("Database roles (least privilege)")
    execute(roles.server_url.set(database=roles.database.database), roles.adapt(admin))
    assert migrate(roles.url("vspc_owner")) is not None
    execute(roles.url("vspc_owner"), roles.adapt(owner_grants))

    writer = make_settings(roles.url("vspc_etl"), sim_server, VSPC_SOURCE="least-privilege")
    engine = create_engine(roles.url("vspc_etl"))
    reader = create_engine(roles.url("vspc_reader"))
    try:
        first = run_once(writer, engine=engine, sleep=no_sleep)
        assert first.status == "success", first.error
        simulator.advance(24)
        simulator.delete_job(simulator.every_job()[0]["instanceUid"])
        second = run_once(writer, engine=engine, sleep=no_sleep)
        assert second.status == "success", second.error
        assert second.deleted >= 1  # soft deletion and its tombstone, as the writer
        assert check_invariants(reader) == []  # `vspc-etl verify` needs only the reader
        with reader.connect() as conn:
            live = conn.execute(
                text("SELECT count(*) FROM vspc.backup_agent_jobs WHERE deleted_at IS NULL")
            ).scalar_one()
        assert live == len(simulator.every_job())
        for who, statement in [
            (engine, "DROP TABLE vspc.etl_rejects"),
            (engine, "ALTER TABLE vspc.etl_runs ADD COLUMN x int"),
            (engine, "CREATE TABLE vspc.extra (x int)"),
            (engine, "UPDATE vspc.alembic_version SET version_num = 'x'"),
            (engine, "TRUNCATE vspc.backup_agent_job_snapshots"),
            (reader, "INSERT INTO vspc.etl_runs (source, status) VALUES ('x', 'running')"),
            (reader, "UPDATE vspc.backup_agent_jobs SET name = 'x'"),
            (reader, "CREATE TEMP TABLE t (x int)"),
        ]:
            with who.connect() as conn, pytest.raises(ProgrammingError, match=r"denied|owner"):
                conn.exec_driver_sql(statement)
    finally:
        engine.dispose()
        reader.dispose()


# -- secrets -------------------------------------------------------------------------------


def process_title(pid: int) -> str:
    """What `ps` shows for the process: its command line."""
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


@pytest.mark.parametrize("level", ["DEBUG", "INFO", "WARNING", "ERROR"])
def test_no_secret_anywhere_at_any_log_level(
    level: str, roles: Roles, tmp_path: Path, server_url: URL
) -> None:
    """Password grant with token expiry and a 401 mid-paging, a database password, a run that
    succeeds and one that fails: no secret in stdout, stderr, etl_runs, the process title or
    the database sessions' application names and queries."""
    admin, owner_grants = documented_sql("Database roles (least privilege)")
    execute(roles.server_url.set(database=roles.database.database), roles.adapt(admin))
    migrate(roles.url("vspc_owner"))
    execute(roles.url("vspc_owner"), roles.adapt(owner_grants))
    simulator = Simulator(
        jobs=40, seed=11, users={TEST_USER: TEST_PASSWORD}, api_keys=(), token_ttl=1.0
    )
    simulator.faults.add("401", path="jobs", after=2)
    simulator.faults.add("520", path="jobs", after=4)
    with SimulatorServer(simulator) as server:
        env = dict(
            os.environ,
            DATABASE_URL=roles.url("vspc_etl").render_as_string(hide_password=False),
            VSPC_URL=server.url,
            VSPC_USERNAME=TEST_USER,
            VSPC_PASSWORD=TEST_PASSWORD,
            VSPC_SOURCE="secrets",
            VSPC_PAGE_SIZE="5",
            VSPC_MAX_ATTEMPTS="2",  # the failing run gives up after one short backoff
            LOG_LEVEL=level,
        )
        outputs: list[str] = []
        titles: list[str] = []
        sessions: list[str] = []
        for fail in (False, True):
            if fail:
                simulator.faults.add("520", path="jobs", after=3, times=None)
            simulator.latency = 0.1
            proc = subprocess.Popen(
                [sys.executable, "-m", "etl", "sync", "--no-progress"],
                env=env,
                cwd=tmp_path,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            wait_for(
                lambda: simulator.stats.snapshot()["requests"].get("jobs", 0) > 0, 30, "paging"
            )
            titles.append(process_title(proc.pid))
            sessions += session_texts(server_url)
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == (1 if fail else 0), err
            outputs.append(out + err)
        tokens = simulator.issued_tokens()
    engine = create_engine(roles.database)
    with engine.connect() as conn:
        errors = [e or "" for e in conn.execute(text("SELECT error FROM vspc.etl_runs")).scalars()]
    engine.dispose()
    assert any("gave up after" in e for e in errors)  # the failed run is recorded
    if level == "DEBUG":
        assert "401" in outputs[0]  # the log really was verbose: it shows the re-login
    secrets = [TEST_PASSWORD, roles.passwords["ETL-PASSWORD"], *tokens]
    assert len(tokens) >= 2  # a login, and another after the revocation
    everything = "\n".join([*outputs, *errors, *titles, *sessions])
    for secret in secrets:
        assert secret not in everything


def session_texts(server_url: URL) -> list[str]:
    """application_name and current query of every session of the server."""
    engine = create_engine(server_url)
    try:
        with engine.connect() as conn:
            return [
                f"{name} {query}"
                for name, query in conn.execute(
                    text("SELECT application_name, query FROM pg_stat_activity")
                )
            ]
    finally:
        engine.dispose()


def test_help_shows_no_secret_and_offers_no_secret_flag() -> None:
    env = dict(os.environ, VSPC_API_KEY=TEST_API_KEY, VSPC_PASSWORD=TEST_PASSWORD)
    for command in ([], ["sync"], ["run"], ["migrate"], ["verify"]):
        shown = subprocess.run(
            [sys.executable, "-m", "etl", *command, "--help"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert TEST_API_KEY not in shown and TEST_PASSWORD not in shown
        assert not re.search(r"--(password|api-key|token)\b", shown)
