"""Dockerfile, .dockerignore and docker-compose.yml, checked without a Docker engine.

The compose file is validated against the Compose Specification's JSON schema (the copy of
compose-spec/compose-spec ``schema/compose-spec.json`` that the check-jsonschema package ships);
every ``vspc-etl`` command line in the Dockerfile and the compose file is parsed by our click
CLI; and the compose services' commands are run natively against the simulator and the test
database, as the containers would run them.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from importlib.metadata import requires
from importlib.resources import files
from pathlib import Path
from typing import Any

import click
import jsonschema
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL, make_url

from etl.cli import main
from etl.config import SECRET_VARIABLES, Settings, load_settings
from tests.conftest import create_database, drop_database

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- reading the files
@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def compose_schema() -> dict[str, Any]:
    text_ = files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json")
    schema = json.loads(text_.read_text())
    assert isinstance(schema, dict)
    return schema


def image_services(compose: dict[str, Any]) -> list[str]:
    """The services that run our image (and so a `vspc-etl` command)."""
    image = compose["x-vspc-etl-image"]["image"]
    return [name for name, s in compose["services"].items() if s.get("image") == image]


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in joined.splitlines()]
    pairs = [tuple(line.split(None, 1)) for line in lines if line and not line.startswith("#")]
    return [(word.upper(), rest) for word, rest in pairs]


def stages() -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for instruction, args in dockerfile():
        if instruction == "FROM":
            found.append([])
        if found:
            found[-1].append((instruction, args))
    return found


def interpolate(value: str, env: dict[str, str] | None = None) -> str:
    """Compose's ``${VAR:-default}`` and ``${VAR}`` with the given environment."""
    env = env or {}

    def one(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(3) or ""
        return env.get(name) or default

    return re.sub(r"\$\{(\w+)(:-([^}]*))?\}", one, value)


# ---------------------------------------------------------------- compose file
def test_compose_file_follows_the_compose_specification(
    compose: dict[str, Any], compose_schema: dict[str, Any]
) -> None:
    validator = jsonschema.validators.validator_for(compose_schema)(compose_schema)
    assert [e.message for e in validator.iter_errors(compose)] == []
    # The schema does bite: a misspelt key or a wrong depends_on condition is refused.
    broken = copy.deepcopy(compose)
    broken["services"]["etl"]["restarts"] = "always"
    broken["services"]["migrate"]["depends_on"]["postgres"]["condition"] = "service_ready"
    refused = " ".join(e.message for e in validator.iter_errors(broken))
    assert "'restarts' was unexpected" in refused
    assert "service_ready" in refused


def test_compose_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    bi = {"bi-reader", "bi-grant", "grafana"}  # profile bi: tests/test_grafana.py
    assert set(services) == {"postgres", "migrate", "etl", "vspc-sim"} | bi
    postgres = services["postgres"]
    assert postgres["image"] == "postgres:16"
    [volume] = postgres["volumes"]
    assert volume.split(":")[0] in compose["volumes"]  # a named volume, not a bind mount
    assert "pg_isready" in postgres["healthcheck"]["test"]

    migrate = services["migrate"]
    assert migrate["command"] == ["migrate"]
    assert migrate["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert migrate["restart"] == "no"

    etl = services["etl"]
    assert etl["command"] == ["run"]
    assert etl["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
    assert etl["restart"] in ("unless-stopped", "always", "on-failure")
    assert "profiles" not in etl

    sim = services["vspc-sim"]
    assert sim["profiles"] == ["demo"]
    assert sim["command"][0] == "simulate"
    assert etl["depends_on"]["vspc-sim"] == {"condition": "service_healthy", "required": False}
    # `services` is the file's last key, so a service block (grafana, profile bi) can be
    # appended at the end.
    assert list(compose)[-1] == "services"


def test_compose_gives_secrets_as_files_only(compose: dict[str, Any]) -> None:
    declared = compose["secrets"]
    for name in image_services(compose):
        env = compose["services"][name].get("environment", {})
        granted = set(compose["services"][name].get("secrets", []))
        for variable in SECRET_VARIABLES:
            assert variable not in env, f"{name} has {variable} in plain text"
            if f"{variable}_FILE" in env:
                path = env[f"{variable}_FILE"]
                assert path.startswith("/run/secrets/")
                secret = path.removeprefix("/run/secrets/")
                assert secret in granted and secret in declared
    postgres = compose["services"]["postgres"]
    assert "POSTGRES_PASSWORD" not in postgres["environment"]
    assert postgres["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"


def test_demo_secrets_fit_together(compose: dict[str, Any]) -> None:
    def secret(name: str) -> str:
        return (ROOT / interpolate(compose["secrets"][name]["file"])).read_text().strip()

    url = make_url(secret("database_url"))
    postgres = compose["services"]["postgres"]["environment"]
    assert (url.host, url.port, url.username, url.database) == (
        "postgres",
        5432,
        postgres["POSTGRES_USER"],
        postgres["POSTGRES_DB"],
    )
    assert url.password == secret("postgres_password")
    sim = compose["services"]["vspc-sim"]["command"]
    assert sim[sim.index("--api-key") + 1] == secret("vspc_api_key")
    vspc_url = interpolate(compose["services"]["etl"]["environment"]["VSPC_URL"])
    assert vspc_url == f"http://vspc-sim:{sim[sim.index('--port') + 1]}"


def test_compose_environment_names_are_settings(compose: dict[str, Any]) -> None:
    known = {name.upper() for name in Settings.model_fields}
    known |= {f"{name}_FILE" for name in SECRET_VARIABLES}
    for name in image_services(compose):
        env = compose["services"][name].get("environment", {})
        assert set(env) <= known, f"{name}: {set(env) - known}"
        values = {key: interpolate(str(value)) for key, value in env.items()}
        values = {k: v for k, v in values.items() if not k.endswith("_FILE")}
        load_settings(environ=values, dotenv=False)  # each value is valid as written


def test_shutdown_fits_in_the_stop_grace_period(compose: dict[str, Any]) -> None:
    etl = compose["services"]["etl"]
    grace = float(etl["environment"]["SHUTDOWN_GRACE"])
    period = re.fullmatch(r"(\d+)s", etl["stop_grace_period"])
    assert period is not None
    assert int(period.group(1)) >= grace + 10  # docker sends SIGKILL after this


# ---------------------------------------------------------------- the CLI behind both files
def parse_cli(argv: list[str]) -> tuple[str, dict[str, Any]]:
    """Parse a vspc-etl command line with our click CLI; UsageError if it would not run."""
    index = next(i for i, arg in enumerate(argv) if arg in main.commands)
    parent = main.make_context("vspc-etl", argv[: index + 1])
    command = main.commands[argv[index]]
    ctx = command.make_context(argv[index], argv[index + 1 :], parent=parent)
    return argv[index], ctx.params


def command_lines(compose: dict[str, Any]) -> list[list[str]]:
    entrypoint = json.loads(next(args for ins, args in dockerfile() if ins == "ENTRYPOINT"))
    default = json.loads(next(args for ins, args in dockerfile() if ins == "CMD"))
    lines = [[*entrypoint[1:], *default]]
    for name in image_services(compose):
        service = compose["services"][name]
        assert "entrypoint" not in service
        lines.append([*entrypoint[1:], *service.get("command", default)])
    return lines


def test_every_command_line_is_a_real_vspc_etl_command(compose: dict[str, Any]) -> None:
    lines = command_lines(compose)
    names = [parse_cli(line)[0] for line in lines]
    assert names[:4] == ["run", "migrate", "run", "simulate"]  # CMD, then the services
    _, sim = parse_cli(lines[3])
    assert (sim["host"], sim["port"], sim["jobs"]) == ("0.0.0.0", 1280, 500)
    # The check bites: an option that does not exist, or a bad value, is refused.
    with pytest.raises(click.NoSuchOption):
        parse_cli(["simulate", "--listen", "0.0.0.0"])
    with pytest.raises(click.BadParameter):
        parse_cli(["simulate", "--port", "http"])
    with pytest.raises(StopIteration):
        parse_cli(["serve"])


# ---------------------------------------------------------------- Dockerfile
def test_dockerfile_is_multi_stage_slim_and_non_root() -> None:
    found = stages()
    assert len(found) >= 2
    for stage in found:
        image = stage[0][1].split()[0]
        assert re.fullmatch(r"python:\$\{PYTHON_VERSION\}-slim|python:3\.\d+-slim", image)
    final = dict(found[-1])
    assert "--from=build" in final["COPY"]
    user = final["USER"].split(":")[0]
    assert user.isdigit() and int(user) != 0
    assert json.loads(final["ENTRYPOINT"]) == ["vspc-etl"]
    assert json.loads(final["CMD"]) == ["run"]
    assert final["EXPOSE"] == str(load_settings(environ={}, dotenv=False).http_port)
    check = final["HEALTHCHECK"]
    assert "/healthz" in check and " CMD " in f" {check} "


def test_dockerfile_installs_the_package_and_its_migrations() -> None:
    build = stages()[0]
    copied = [args.split()[0] for ins, args in build if ins == "COPY"]
    assert {"etl", "migrations", "pyproject.toml"} <= set(copied)
    packages = {  # what setuptools' packages.find sees: folders with an __init__.py
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("etl", "migrations")
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert {"etl", "migrations", "migrations.versions"} <= packages
    configured = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert configured["packages"]["find"]["include"] == ["etl*", "migrations*"]


# Left out of the image on purpose: the embedded PostgreSQL and what only it needs.
NOT_IN_THE_IMAGE = {"pgserver", "fasteners", "platformdirs", "psutil"}


def locked(text_: str) -> dict[str, tuple[str, list[str]]]:
    """requirements.lock as {name: (version, hashes)}; ValueError for a line that is no pin."""
    pins: dict[str, tuple[str, list[str]]] = {}
    joined = re.sub(r"\\\n", " ", text_)
    for line in joined.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        requirement, *hashes = (part.strip() for part in line.split("--hash="))
        parsed = Requirement(requirement)
        [spec] = parsed.specifier
        if spec.operator != "==" or parsed.extras or parsed.marker is not None:
            raise ValueError(f"requirements.lock: {line!r} is not a plain pin")
        pins[canonicalize_name(parsed.name)] = (spec.version, hashes)
    return pins


def uncovered(pins: dict[str, tuple[str, list[str]]], dependencies: list[str]) -> list[str]:
    """The runtime dependencies (and extras' requirements) the lock misses or pins outside
    their specifier, pgserver excepted."""
    missing: list[str] = []
    for dependency in dependencies:
        req = Requirement(dependency)
        name = canonicalize_name(req.name)
        if name in NOT_IN_THE_IMAGE:
            continue
        if name not in pins:
            missing.append(f"{name}: not in the lock")
        elif not req.specifier.contains(pins[name][0], prereleases=True):
            missing.append(f"{name}: {pins[name][0]} is not {req.specifier}")
        for extra in req.extras:  # psycopg[binary]: psycopg-binary too
            for needed in map(Requirement, requires(req.name) or []):
                wanted = needed.marker is not None and needed.marker.evaluate({"extra": extra})
                if wanted and canonicalize_name(needed.name) not in pins:
                    missing.append(f"{needed.name}: not in the lock ({req.name}[{extra}])")
    return missing


@pytest.fixture(scope="module")
def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def lock_text() -> str:
    return (ROOT / "requirements.lock").read_text()


def test_the_lock_covers_every_runtime_dependency(
    pyproject: dict[str, Any], lock_text: str
) -> None:
    pins = locked(lock_text)
    dependencies = pyproject["project"]["dependencies"]
    assert uncovered(pins, dependencies) == []
    # Every pin carries the hashes pip checks (--require-hashes), sha256 each.
    assert all(
        hashes and all(h.startswith("sha256:") for h in hashes) for _, hashes in pins.values()
    )
    # What the image leaves out is out of the lock: the embedded PostgreSQL, the chart extra.
    assert set(pins).isdisjoint(NOT_IN_THE_IMAGE | {"matplotlib", "numpy"})
    assert any(d.startswith("pgserver") for d in dependencies)
    assert pyproject["project"]["optional-dependencies"]["chart"] == ["matplotlib>=3.8"]
    # The header says how it was made, from pyproject.toml, with hashes.
    command = re.search(r"^#    (pip-compile .*)$", lock_text, re.MULTILINE)
    assert command is not None
    assert "--generate-hashes" in command.group(1)
    assert command.group(1).endswith(" pyproject.toml")
    for left_out in sorted(NOT_IN_THE_IMAGE):
        assert f"--unsafe-package={left_out}" in command.group(1)


def test_the_lock_check_bites(pyproject: dict[str, Any], lock_text: str) -> None:
    dependencies = pyproject["project"]["dependencies"]
    pins = locked(lock_text)
    without_httpx = {k: v for k, v in pins.items() if k != "httpx"}
    assert uncovered(without_httpx, dependencies) == ["httpx: not in the lock"]
    without_binary = {k: v for k, v in pins.items() if k != "psycopg-binary"}
    assert uncovered(without_binary, dependencies) == [
        "psycopg-binary: not in the lock (psycopg[binary])"
    ]
    too_new = pins | {"sqlalchemy": ("2.2.0", pins["sqlalchemy"][1])}
    assert uncovered(too_new, dependencies) == ["sqlalchemy: 2.2.0 is not <2.2,>=2.0.30"]
    with pytest.raises(ValueError, match="is not a plain pin"):
        locked("httpx>=0.27 --hash=sha256:00\n")


def test_the_image_installs_the_lock_and_leaves_pgserver_out() -> None:
    build = stages()[0]
    runs = [args for ins, args in build if ins == "RUN"]
    # Nothing reads pyproject.toml by hand: the lock is the image's list of dependencies.
    assert not any("tomllib" in run or "pyproject" in run for run in runs)
    [lock_install] = [run for run in runs if "requirements.lock" in run]
    assert shlex.split(lock_install)[1:] == [
        "install",
        "--require-hashes",
        "--only-binary=:all:",
        "-r",
        "requirements.lock",
    ]
    [package_install] = [run for run in runs if "install --no-deps ." in run]
    # The lock's layer comes before the code is copied, so a code change keeps it.
    order = [f"{ins} {args}" for ins, args in build]
    assert order.index(f"RUN {lock_install}") < order.index("COPY etl ./etl")
    assert order.index("COPY requirements.lock ./") < order.index(f"RUN {lock_install}")
    assert order.index("COPY etl ./etl") < order.index(f"RUN {package_install}")
    # Its check, run here against the installed package: imports, migrations, SQL files.
    check = shlex.split(package_install.split("&&", 1)[1])
    assert check[0] == "/opt/vspc-etl/bin/python"
    subprocess.run([sys.executable, *check[1:]], cwd=ROOT, check=True)


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether Docker leaves ``path`` out of the build context (last matching rule wins)."""
    parts = path.split("/")
    verdict = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        rule = pattern.lstrip("!").rstrip("/")
        if rule.startswith("**/"):
            hit = any(fnmatch.fnmatch(part, rule[3:]) for part in parts)
        else:
            hit = any(fnmatch.fnmatch("/".join(parts[:n]), rule) for n in range(1, len(parts) + 1))
        if hit:
            verdict = not negate
    return verdict


def test_dockerignore_sends_only_what_the_build_needs() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    for kept in (
        "pyproject.toml",
        "requirements.lock",
        "README.md",
        "etl/cli.py",
        "etl/sql/views/job_runs.sql",
        "migrations/versions/__init__.py",
    ):
        assert not ignored(kept, patterns), kept
    for left_out in (
        ".env",
        ".git/config",
        ".venv/bin/python",
        ".vspc-etl/pgdata/PG_VERSION",
        "compose/demo/database_url",
        "tests/conftest.py",
        "etl/__pycache__/cli.cpython-311.pyc",
    ):
        assert ignored(left_out, patterns), left_out


# ---------------------------------------------------------------- the same commands, natively
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def scratch_db(server_url: URL) -> Iterator[URL]:
    url = create_database(server_url, "vspc_etl_compose")
    yield url
    drop_database(server_url, url)


def clean_env() -> dict[str, str]:
    prefixes = ("VSPC_", "DATABASE_URL", "SYNC_", "SHUTDOWN_", "HTTP_", "LOG_")
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}


def replace_option(argv: list[str], option: str, value: str) -> list[str]:
    out = list(argv)
    out[out.index(option) + 1] = value
    return out


def test_compose_commands_run_natively(
    compose: dict[str, Any], scratch_db: URL, tmp_path: Path
) -> None:
    services = compose["services"]
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "database_url").write_text(scratch_db.render_as_string(hide_password=False))
    demo_key = (ROOT / interpolate(compose["secrets"]["vspc_api_key"]["file"])).read_text()
    (secrets / "vspc_api_key").write_text(demo_key)

    def environment(service: str, **overrides: str) -> dict[str, str]:
        env = {k: interpolate(str(v)) for k, v in services[service].get("environment", {}).items()}
        env = {k: v.replace("/run/secrets", str(secrets)) for k, v in env.items()}
        return clean_env() | env | overrides

    vspc = [sys.executable, "-m", "etl"]
    # migrate: the one-shot service
    done = subprocess.run(
        [*vspc, *services["migrate"]["command"]],
        env=environment("migrate"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert re.search(r"is at revision \w+", done.stdout)

    # vspc-sim: its command, listening on loopback and a free port instead of 0.0.0.0:1280
    sim_port = free_port()
    sim_cmd = replace_option(services["vspc-sim"]["command"], "--host", "127.0.0.1")
    sim_cmd = replace_option(sim_cmd, "--port", str(sim_port))
    check = services["vspc-sim"]["healthcheck"]["test"][1:]
    check = [part.replace(":1280/", f":{sim_port}/") for part in check]
    engine: Engine = create_engine(scratch_db)
    sim = subprocess.Popen([*vspc, *sim_cmd], env=clean_env(), stdout=subprocess.DEVNULL)
    etl: subprocess.Popen[bytes] | None = None
    try:
        wait_for_exit_0([sys.executable if check[0] == "python" else check[0], *check[1:]])
        # etl: its command and environment, with the simulator's address and a free port
        http_port = free_port()
        env = environment(
            "etl",
            VSPC_URL=f"http://127.0.0.1:{sim_port}",
            HTTP_HOST="127.0.0.1",
            HTTP_PORT=str(http_port),
            SYNC_JITTER="0",
        )
        etl = subprocess.Popen([*vspc, *services["etl"]["command"]], env=env, cwd=tmp_path)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                done_runs = conn.execute(
                    text("SELECT status FROM vspc.etl_runs WHERE status <> 'running'")
                ).scalars()
                statuses = list(done_runs)
            if statuses:
                break
            time.sleep(0.1)
        assert statuses == ["success"]
        # the image's HEALTHCHECK command, as Docker would run it inside the container
        health = json.loads(dict(stages()[-1])["HEALTHCHECK"].split(" CMD ", 1)[1])
        health[0] = sys.executable
        probe = subprocess.run(health, env=clean_env() | {"HTTP_PORT": str(http_port)}, check=False)
        assert probe.returncode == 0
        etl.send_signal(signal.SIGTERM)
        assert etl.wait(timeout=30) == 0
    finally:
        for proc in (etl, sim):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)
        engine.dispose()


def wait_for_exit_0(command: list[str], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while subprocess.run(command, capture_output=True, check=False).returncode != 0:
        assert time.monotonic() < deadline, f"{command} never succeeded"
        time.sleep(0.2)
