"""The Grafana dashboard and its provisioning (deploy/grafana, compose profile bi).

No Grafana here: the JSON must parse, and every SQL query in it runs against the test
database as the read-only role the compose file creates, with Grafana's macros replaced by
literal values, and answers what the hand-built history says.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL

from etl.cli import main
from etl.load.reporting import rebuild
from tests.history import AGENT, ORG_A, ORG_B, ORG_C, at, insert, job, sla_history

ROOT = Path(__file__).resolve().parent.parent
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "vspc-sla.json"
READER = "grafana_reader"


def dashboard() -> dict[str, Any]:
    loaded = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def queries() -> dict[str, str]:
    """Every SQL text of the dashboard: panel title (or variable name) -> SQL."""
    board = dashboard()
    found = {v["name"]: v["query"] for v in board["templating"]["list"] if v["type"] == "query"}
    for panel in board["panels"]:
        for target in panel["targets"]:
            found[panel["title"]] = target["rawSql"]
    return found


def expand(sql: str, *, start: datetime, end: datetime, organizations: list[str]) -> str:
    """Grafana's macros and the $organization variable as Grafana would fill them in."""
    head = "$__timeFilter("
    while head in sql:
        at_ = sql.index(head)
        depth, i = 1, at_ + len(head)
        while depth:
            depth += {"(": 1, ")": -1}.get(sql[i], 0)
            i += 1
        column = sql[at_ + len(head) : i - 1]
        between = f"{column} BETWEEN '{start.isoformat()}' AND '{end.isoformat()}'"
        sql = sql[:at_] + between + sql[i:]
    sql = sql.replace("$__timeFrom()", f"'{start.isoformat()}'")
    sql = sql.replace("$__timeTo()", f"'{end.isoformat()}'")
    sql = sql.replace("$organization", ", ".join(f"'{o}'" for o in organizations))
    sql = sql.replace("$platform", "'Windows', 'Linux', 'Mac'")
    assert "$" not in sql, sql
    return sql


def psql() -> str:
    found = shutil.which("psql")
    if found:
        return found
    import pgserver  # the embedded PostgreSQL the tests fall back to ships psql

    return str(Path(pgserver.__file__).parent / "pginstall" / "bin" / "psql")


@pytest.fixture
def reader_url(fresh_db: Engine, database_url: URL) -> Iterator[URL]:
    """The hand-built history, and grafana_reader made and granted as compose does it."""
    with fresh_db.begin() as conn:
        insert(conn, sla_history())
        conn.execute(
            text(
                "INSERT INTO vspc.organizations VALUES (:a, 'hand', 'Acme Corp', 'acme', "
                "'Company', now(), now())"
            ),
            {"a": ORG_A},
        )
        rebuild(conn)
        conn.execute(  # the jobs the warehouse knows, as the syncs would have left them
            text(
                "INSERT INTO vspc.backup_agent_jobs (instance_uid, source, status, raw, "
                "first_seen_at, updated_at, system_type) SELECT DISTINCT ON (instance_uid) "
                "instance_uid, source, status, raw, valid_from, valid_from, system_type "
                "FROM vspc.backup_agent_job_snapshots ORDER BY instance_uid, valid_from DESC"
            )
        )
        # points at the ends of J2's and J3's successful sessions (no answer moves), and one
        # of K1 on the day it vanished (not counted)
        conn.execute(
            text(
                "INSERT INTO vspc.restore_points (instance_uid, source, backup_agent_uid, "
                "job_uid, creation_date, raw, first_seen_at) SELECT gen_random_uuid(), 'hand', "
                ":agent, p.job, p.created, '{}', now() "
                "FROM unnest(CAST(:jobs AS uuid[]), CAST(:times AS timestamptz[])) "
                "AS p (job, created)"
            ),
            {
                "agent": AGENT,
                "jobs": [job(2), job(3), job(2), job(11)],
                "times": [at(0, 2), at(0, 22, 30), at(4, 3, 30), at(2, 3)],
            },
        )
    url = database_url.set(drivername="postgresql")
    script = GRAFANA / "create-reader.sql"
    for _ in range(2):  # idempotent: compose runs it on every `up`
        subprocess.run(
            [
                psql(),
                url.render_as_string(hide_password=False),
                "--no-psqlrc",
                "-v",
                "ON_ERROR_STOP=1",
                "-v",
                "pw=reader-secret",
                "--file",
                str(script),
            ],
            check=True,
            capture_output=True,
            env={**os.environ, "PGCONNECT_TIMEOUT": "10"},
            timeout=60,
        )
    env = {"DATABASE_URL": database_url.render_as_string(hide_password=False)}
    granted = CliRunner().invoke(main, ["grant", READER], env=env)
    assert granted.exit_code == 0, granted.output
    try:
        yield database_url.set(username=READER, password="reader-secret")
    finally:
        with fresh_db.begin() as conn:
            conn.execute(text(f"DROP OWNED BY {READER}"))
            conn.execute(text(f"DROP ROLE {READER}"))


def test_dashboard_shows_the_three_things_asked_for() -> None:
    board = dashboard()
    assert board["uid"] == "vspc-sla"
    titles = [p["title"] for p in board["panels"]]
    for wanted in (
        "RPO compliance trend",
        "Failing jobs",
        "Success rate by organization",
        "Restore points created per day",
        "Computers outside their RPO",
    ):
        assert any(t.startswith(wanted) for t in titles), wanted
    uids = {p["datasource"]["uid"] for p in board["panels"]}
    uids |= {t["datasource"]["uid"] for p in board["panels"] for t in p["targets"]}
    assert uids == {"vspc-postgres"}
    assert len({p["id"] for p in board["panels"]}) == len(titles)


def test_every_dashboard_query_runs_as_the_reader(reader_url: URL) -> None:
    start, end = at(0), at(21)
    orgs = [str(ORG_A), str(ORG_B), str(ORG_C)]
    engine = create_engine(reader_url)
    results: dict[str, list[Any]] = {}
    try:
        with engine.connect() as conn:
            user = conn.execute(text("SELECT current_user")).scalar_one()
            assert user == READER
            for title, sql in queries().items():
                sql = expand(sql, start=start, end=end, organizations=orgs)
                results[title] = [tuple(r) for r in conn.execute(text(sql))]
    finally:
        engine.dispose()
    assert len(results) == len(dashboard()["panels"]) + 1
    assert sorted(results["organization"]) == sorted(
        [("Acme Corp", str(ORG_A)), (str(ORG_B), str(ORG_B)), (str(ORG_C), str(ORG_C))]
    )
    trend = results["RPO compliance trend"]
    assert len(trend) == 21
    # day 1: 2 of 4 protected jobs met the RPO; 2 of 3 sessions succeeded (tests/test_report)
    assert (round(trend[1][1], 4), round(trend[1][2], 4)) == (0.5, 0.6667)
    # J3 (a failure since its last success), then J2 and M1 by hours since success
    failing = [(r[0], r[3], r[4], r[6] > 300) for r in results["Failing jobs"]]
    assert failing == [
        ("Acme Corp", "Failed", 1, True),
        (None, "Success", 0, True),
        ("Acme Corp", "Success", 0, True),
    ]
    by_org = results["Success rate by organization (time range)"]
    assert [(name, round(rate, 4)) for name, rate in by_org] == [
        ("Acme Corp", 0.5556),
        (str(ORG_B), 1.0),
        (str(ORG_C), 1.0),
    ]
    worst = {metric for _, metric, _ in results["RPO compliance of the worst organizations"]}
    assert worst == {"Acme Corp", str(ORG_B), str(ORG_C)}
    assert results["Jobs missing their RPO"] == [(3,)]  # K2 is disabled: not counted
    points = results["Restore points created per day"]
    assert len(points) == 21
    assert {t: n for t, n in points if n} == {at(0): 2, at(4): 1}  # K1 had vanished
    # the history's one computer (no name read): its newest evidence is J2's point of day 4;
    # live jobs J2, J3, K2, M1, of which J3 failed since its last success
    [computer] = results["Computers outside their RPO"]
    assert computer[:4] == ("Acme Corp", str(AGENT), "Windows", at(4, 3, 30))
    assert computer[4] > 300 and computer[5:] == (24, 4, 1, None, None)


def test_provisioning_matches_the_dashboard_and_compose() -> None:
    datasources = yaml.safe_load((GRAFANA / "provisioning/datasources/vspc.yaml").read_text())
    [source] = datasources["datasources"]
    assert (source["uid"], source["type"]) == ("vspc-postgres", "grafana-postgresql-datasource")
    providers = yaml.safe_load((GRAFANA / "provisioning/dashboards/vspc.yaml").read_text())
    [provider] = providers["providers"]

    services = compose()["services"]
    grafana = services["grafana"]
    assert grafana["profiles"] == ["bi"]
    mounts = dict(v.rsplit(":", 1)[0].split(":", 1) for v in grafana["volumes"])
    assert mounts == {
        "./deploy/grafana/provisioning": "/etc/grafana/provisioning",
        "./deploy/grafana/dashboards": "/var/lib/grafana/dashboards",
    }
    for host in mounts:
        assert (ROOT / host).is_dir()
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    # every ${VAR} the datasource file uses is set in the grafana service
    used = {
        word[2:-1]
        for word in yaml.safe_dump(source).split()
        if word.startswith("${") and word.endswith("}")
    }
    assert used == {
        "VSPC_DB_HOST",
        "VSPC_DB_NAME",
        "VSPC_DB_SSLMODE",
        "GRAFANA_DB_USER",
        "GRAFANA_DB_PASSWORD",
    }
    assert used <= set(grafana["environment"])
    assert grafana["environment"]["GRAFANA_DB_USER"] == READER
    assert services["bi-grant"]["command"] == ["grant", READER]
    grant = main.commands["grant"].make_context("grant", services["bi-grant"]["command"][1:])
    assert grant.params == {"role": READER}  # a command line our CLI accepts
    assert services["bi-grant"]["profiles"] == services["bi-reader"]["profiles"] == ["bi"]
    assert grafana["depends_on"] == {"bi-grant": {"condition": "service_completed_successfully"}}
    mounted_sql = services["bi-reader"]["volumes"][0].split(":")[0]
    assert (ROOT / mounted_sql).resolve() == (GRAFANA / "create-reader.sql").resolve()
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"/var/lib/grafana/dashboards/{DASHBOARD.name}"
