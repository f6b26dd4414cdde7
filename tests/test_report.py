"""``vspc-etl report`` and ``vspc-etl grant`` over the hand-built history of tests/history.py."""

from __future__ import annotations

import csv
import io
import json
import os
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import ProgrammingError

from etl.cli import main
from etl.load.reporting import rebuild
from etl.report import trend
from tests.conftest import create_database, drop_database
from tests.history import ORG_A, ORG_B, ORG_C, at, day, insert, job, sla_history

DAYS = "21"  # day 0 of the history is twenty days ago: 21 days reach it, today included


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith(("VSPC_", "DATABASE_URL", "LOG_LEVEL")):
            monkeypatch.delenv(name)
    return CliRunner()


@pytest.fixture
def history(fresh_db: Engine, database_url: URL) -> dict[str, str]:
    """The hand-built history with names for A and B (C stays unnamed); the CLI's env."""
    with fresh_db.begin() as conn:
        insert(conn, sla_history())
        conn.execute(
            text(
                "INSERT INTO vspc.organizations VALUES (:a, 'hand', 'Acme Corp', 'acme', "
                "'Company', now(), now()), (:b, 'hand', 'Büro Müller GmbH', 'bm', 'Company', "
                "now(), now())"
            ),
            {"a": ORG_A, "b": ORG_B},
        )
        rebuild(conn)
    return {"DATABASE_URL": database_url.render_as_string(hide_password=False)}


def report(runner: CliRunner, env: dict[str, str], *args: str) -> str:
    result = runner.invoke(main, ["report", "--days", DAYS, *args], env=env)
    assert result.exit_code == 0, result.output
    return result.stdout


# (protected, meeting, rpo_compliance, runs, success, warning, failed, success_rate), counted
# from the history's docstring: A+B+C per day.
BY_DAY = {
    0: (4, 4, 1.0, 4, 4, 0, 0, 1.0),
    1: (4, 2, 0.5, 3, 2, 0, 1, 0.6667),
    2: (3, 1, 0.3333, 2, 0, 1, 1, 0.5),
    3: (3, 0, 0.0, 2, 0, 0, 2, 0.0),
    4: (3, 1, 0.3333, 1, 1, 0, 0, 1.0),
    **{n: (3, 0, 0.0, 0, 0, 0, 0, None) for n in range(5, 21)},
}
DAY_KEYS = (
    "jobs_protected",
    "jobs_meeting_rpo",
    "rpo_compliance",
    "runs",
    "success_runs",
    "warning_runs",
    "failed_runs",
    "success_rate",
)


def test_by_day_json_is_the_hand_count_and_the_view(
    runner: CliRunner, history: dict[str, str], fresh_db: Engine
) -> None:
    records = json.loads(report(runner, history, "--by", "day", "--format", "json"))
    assert [r["day"] for r in records] == [day(n).isoformat() for n in range(21)]
    assert {n: tuple(r[k] for k in DAY_KEYS) for n, r in enumerate(records)} == BY_DAY
    # ... and the same numbers summed straight from the view
    with fresh_db.connect() as conn:
        view = conn.execute(text("SELECT * FROM vspc.sla_daily")).mappings().all()
    for r in records:
        rows = [v for v in view if v["day"].isoformat() == r["day"]]
        assert r["runs"] == sum(v["runs"] for v in rows)
        assert r["jobs_protected"] == sum(v["jobs_protected"] for v in rows)
        assert r["jobs_meeting_rpo"] == sum(v["jobs_meeting_rpo"] for v in rows)


def test_by_organization_csv(runner: CliRunner, history: dict[str, str]) -> None:
    rows = list(csv.DictReader(io.StringIO(report(runner, history, "--format", "csv"))))
    got = [
        (
            r["organization_uid"],
            r["organization_name"],
            r["jobs_protected"],
            r["jobs_meeting_rpo"],
            r["rpo_compliance"],
            r["runs"],
            r["success_runs"],
            r["warning_runs"],
            r["failed_runs"],
            r["success_rate"],
        )
        for r in rows
    ]
    # Worst RPO compliance first. A: 5 of 42 protected job-days met; C: 1 of 21; B: 2 of 2.
    assert got == [
        (str(ORG_C), "", "1", "0", "0.0476", "1", "1", "0", "0", "1.0"),
        (str(ORG_A), "Acme Corp", "2", "0", "0.119", "9", "4", "1", "4", "0.5556"),
        (str(ORG_B), "Büro Müller GmbH", "0", "0", "1.0", "2", "2", "0", "0", "1.0"),
    ]


def test_by_organization_table(runner: CliRunner, history: dict[str, str]) -> None:
    assert report(runner, history).splitlines() == [
        "organization_uid                      organization_name  jobs_protected  "
        "jobs_meeting_rpo  rpo_compliance  runs  success_runs  warning_runs  failed_runs  "
        "success_rate",
        "------------------------------------  -----------------  --------------  "
        "----------------  --------------  ----  ------------  ------------  -----------  "
        "------------",
        "cccccccc-0000-4000-8000-000000000003                                  1                 "
        "0            4.8%     1             1             0            0        100.0%",
        "aaaaaaaa-0000-4000-8000-000000000001  Acme Corp                       2                 "
        "0           11.9%     9             4             1            4         55.6%",
        "bbbbbbbb-0000-4000-8000-000000000002  Büro Müller GmbH                0                 "
        "0          100.0%     2             2             0            0        100.0%",
    ]


def test_by_job_json(runner: CliRunner, history: dict[str, str], fresh_db: Engine) -> None:
    records = json.loads(report(runner, history, "--by", "job", "--format", "json"))
    got = [
        (
            r["instance_uid"],
            r["organization_name"],
            r["is_enabled"],
            r["last_status"],
            r["last_success_at"],
            r["rpo_met"],
            r["consecutive_failures"],
            r["runs"],
            r["success_runs"],
            r["warning_runs"],
            r["failed_runs"],
            r["success_rate"],
        )
        for r in records
    ]
    # Nobody meets the RPO today; J3 first (a failure since its last success), then by name.
    assert got == [
        (
            str(job(3)),
            "Acme Corp",
            True,
            "Failed",
            at(2, 22, 30).isoformat(),
            False,
            1,
            4,
            2,
            1,
            1,
            0.75,
        ),
        (
            str(job(2)),
            "Acme Corp",
            True,
            "Success",
            at(4, 3, 30).isoformat(),
            False,
            0,
            5,
            2,
            0,
            3,
            0.4,
        ),
        (str(job(12)), "Büro Müller GmbH", False, "None", None, False, 0, 0, 0, 0, 0, None),
        (str(job(21)), None, True, "Success", at(0, 23, 50).isoformat(), False, 0, 1, 1, 0, 0, 1.0),
    ]
    with fresh_db.connect() as conn:
        hours = dict(
            conn.execute(
                text("SELECT instance_uid::text, hours_since_success FROM vspc.job_sla_current")
            ).all()
        )
    # the view is read in another transaction, a moment later: within a minute
    assert all(
        r["hours_since_success"] is None
        or abs(r["hours_since_success"] - float(hours[r["instance_uid"]])) <= 0.02
        for r in records
    )


def test_report_chart_png_and_svg(
    runner: CliRunner, history: dict[str, str], tmp_path: Path
) -> None:
    png, svg = tmp_path / "sla.png", tmp_path / "out" / "sla.svg"
    for target in (png, svg):
        result = runner.invoke(
            main, ["report", "--days", DAYS, "--chart", str(target)], env=history
        )
        assert result.exit_code == 0, result.output
        assert result.stderr.strip() == f"chart written to {target}"
    from PIL import Image

    with Image.open(png) as image:
        image.verify()
        assert (image.format, image.size) == ("PNG", (1100, 700))
    root = ET.parse(svg).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    texts = " ".join(root.itertext())
    for label in ("RPO compliance", "success rate", "all organizations", "Acme Corp", str(ORG_C)):
        assert label in texts
    assert "Büro Müller GmbH" not in texts  # met its RPO on every protected day


def test_trend_overall_matches_by_day(history: dict[str, str], fresh_db: Engine) -> None:
    with fresh_db.connect() as conn:
        result = trend(conn, days=21, worst=5)
    assert result.days == [day(n) for n in range(21)]
    assert [None if v is None else round(v, 4) for v in result.overall.rpo_compliance] == [
        BY_DAY[n][2] for n in range(21)
    ]
    assert [s.label for s in result.worst] == [str(ORG_C), "Acme Corp"]


def test_report_errors(runner: CliRunner, history: dict[str, str], server_url: URL) -> None:
    bad = runner.invoke(main, ["report", "--chart", "sla.pdf"], env=history)
    assert bad.exit_code == 2
    assert bad.stderr == "error: --chart 'sla.pdf': the file name must end in .png or .svg\n"
    empty = create_database(server_url, "vspc_etl_unmigrated")
    try:
        env = {"DATABASE_URL": empty.render_as_string(hide_password=False)}
        result = runner.invoke(main, ["report"], env=env)
    finally:
        drop_database(server_url, empty)
    assert result.exit_code == 2
    assert result.stderr == "error: schema vspc is missing: run `vspc-etl migrate`\n"


@pytest.fixture
def reader(engine: Engine) -> Iterator[str]:
    """A role of its own (roles are cluster-wide), dropped with its privileges afterwards."""
    name = f'bi "reader" {uuid.uuid4().hex[:6]}'
    quoted = '"' + name.replace('"', '""') + '"'
    with engine.begin() as conn:
        conn.execute(text(f"CREATE ROLE {quoted} NOLOGIN"))
    yield name
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS vspc.later_object"))
        conn.execute(text(f"DROP OWNED BY {quoted}"))
        conn.execute(text(f"DROP ROLE {quoted}"))


def test_grant_gives_read_only_access_now_and_later(
    runner: CliRunner, history: dict[str, str], reader: str, engine: Engine
) -> None:
    result = runner.invoke(main, ["grant", reader], env=history)
    assert result.exit_code == 0, result.output
    assert (
        result.stdout
        == f"granted {reader} read-only access to schema vspc (now and future objects)\n"
    )
    quoted = '"' + reader.replace('"', '""') + '"'
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE vspc.later_object (x int)"))  # a later migration
        conn.execute(text("COMMENT ON TABLE vspc.later_object IS 'test'"))
        conn.execute(text("COMMENT ON COLUMN vspc.later_object.x IS 'test'"))
    with engine.connect() as conn:
        conn.execute(text(f"SET ROLE {quoted}"))
        for view in ("sla_daily", "job_sla_current", "job_runs", "later_object"):
            conn.execute(text(f"SELECT count(*) FROM vspc.{view}")).scalar_one()
        assert conn.execute(text("SELECT count(*) FROM vspc.job_sla_current")).scalar() == 4
        with pytest.raises(ProgrammingError, match="permission denied"):
            conn.execute(text("UPDATE vspc.report_settings SET time_zone = 'UTC'"))
        conn.rollback()
    missing = runner.invoke(main, ["grant", "no_such_role_x"], env=history)
    assert missing.exit_code == 2
    assert missing.stderr.startswith("error: role 'no_such_role_x' does not exist")
