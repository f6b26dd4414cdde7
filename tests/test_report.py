"""``vspc-etl report`` and ``vspc-etl grant`` over the hand-built history of tests/history.py."""

from __future__ import annotations

import csv
import io
import json
import sys
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import Connection, Engine, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import ProgrammingError

from etl.cli import main
from etl.load.reporting import rebuild
from etl.report import Window, sla_report, trend
from tests.conftest import create_database, drop_database
from tests.history import (
    AGENT,
    ORG_A,
    ORG_B,
    ORG_C,
    Seen,
    at,
    day,
    insert,
    job,
    sla_history,
    versions,
)

DAYS = "21"  # day 0 of the history is twenty days ago: 21 days reach it, today included


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
        current_jobs(conn)
        rebuild(conn)
    return {"DATABASE_URL": database_url.render_as_string(hide_password=False)}


def current_jobs(conn: Connection) -> None:
    """``backup_agent_jobs`` from the snapshots, as the syncs would have left it."""
    conn.execute(
        text(
            "INSERT INTO vspc.backup_agent_jobs (instance_uid, source, backup_agent_uid, "
            "organization_uid, name, status, is_enabled, raw, first_seen_at, updated_at, "
            "deleted_at, system_type) SELECT DISTINCT ON (instance_uid) instance_uid, source, "
            "backup_agent_uid, organization_uid, name, status, is_enabled, raw, "
            "min(valid_from) OVER (PARTITION BY instance_uid), valid_from, "
            "CASE WHEN is_deleted THEN valid_from END, system_type "
            "FROM vspc.backup_agent_job_snapshots "
            "ORDER BY instance_uid, valid_from DESC"
        )
    )


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
    # Names lead (an unnamed organization shows its uid's start); uids stay in CSV and JSON.
    assert report(runner, history).splitlines() == [
        "organization      protected  meeting RPO  RPO compliance  runs  success  warning  "
        "failed  success rate",
        "----------------  ---------  -----------  --------------  ----  -------  -------  "
        "------  ------------",
        "cccccccc…                 1            0            4.8%     1        1        0       "
        "0        100.0%",
        "Acme Corp                 2            0           11.9%     9        4        1       "
        "4         55.6%",
        "Büro Müller GmbH          0            0          100.0%     2        2        0       "
        "0        100.0%",
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
        result = trend(conn, window=Window(day(0), day(20)), worst=5)
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


def test_organization_filter_by_name_uid_and_uid_start(
    runner: CliRunner, history: dict[str, str]
) -> None:
    def organizations(*args: str) -> list[tuple[str, str, str]]:
        rows = csv.DictReader(io.StringIO(report(runner, history, "--format", "csv", *args)))
        return [(r["organization_uid"], r["runs"], r["rpo_compliance"]) for r in rows]

    acme = [(str(ORG_A), "9", "0.119")]
    assert organizations("--organization", "acme corp") == acme  # any case
    assert organizations("--organization", str(ORG_A)) == acme
    assert organizations("--organization", "cccccccc") == [(str(ORG_C), "1", "0.0476")]
    jobs = json.loads(
        report(runner, history, "--by", "job", "--format", "json", "--organization", "Acme Corp")
    )
    assert sorted(j["instance_uid"] for j in jobs) == [str(job(2)), str(job(3))]
    days = json.loads(
        report(runner, history, "--by", "day", "--format", "json", "--organization", "Acme Corp")
    )
    # A alone: J2 and J3 on day 1 (J3 met, J2 failed); sessions J2 Failed, J3 Success
    assert (days[1]["jobs_protected"], days[1]["jobs_meeting_rpo"], days[1]["runs"]) == (2, 1, 2)


def test_organization_filter_errors_name_the_flag(
    runner: CliRunner, history: dict[str, str]
) -> None:
    typo = runner.invoke(main, ["report", "--organization", "Acme Crop"], env=history)
    assert typo.exit_code == 2
    assert typo.stderr == (
        "error: --organization 'Acme Crop': no organization has that name or uid; "
        "did you mean 'Acme Corp'? (`vspc-etl report` lists them)\n"
    )
    elsewhere = runner.invoke(
        main, ["report", "--organization", "Acme Corp", "--source", "other"], env=history
    )
    assert elsewhere.exit_code == 2
    assert "no organization of source 'other' has that name" in elsewhere.stderr


def test_source_filter(runner: CliRunner, history: dict[str, str]) -> None:
    rows = list(
        csv.DictReader(io.StringIO(report(runner, history, "--format", "csv", "--source", "hand")))
    )
    assert [r["organization_uid"] for r in rows] == [str(ORG_C), str(ORG_A), str(ORG_B)]
    other = runner.invoke(
        main, ["report", "--days", DAYS, "--source", "other", "--by", "job"], env=history
    )
    assert other.exit_code == 0, other.output
    assert other.stdout == ""
    assert other.stderr == (
        f"no session started in {day(0)}..{day(20)} (UTC) for source 'other', and none is "
        "recorded: run `vspc-etl sync` (or `vspc-etl demo`) first\n"
    )


def test_empty_window_names_the_newest_session(runner: CliRunner, history: dict[str, str]) -> None:
    result = runner.invoke(main, ["report", "--days", "10"], env=history)
    assert result.exit_code == 0, result.output
    # J2's session of day 4, 01:00, is the newest; today is day 20: 17 days reach it
    newest = at(4, 1).strftime("%Y-%m-%d %H:%M")
    assert result.stderr == (
        f"no session started in {day(11)}..{day(20)} (UTC); the newest one started "
        f"{newest} UTC: try --days 17\n"
    )
    assert result.stdout.splitlines()[2].split() == ["Acme", "Corp", "2", "0", "0.0%"] + ["0"] * 4


def test_tables_fit_120_columns_and_shorten_long_names(
    runner: CliRunner, history: dict[str, str], fresh_db: Engine
) -> None:
    long = "Very Long Organization Name " * 5
    with fresh_db.begin() as conn:
        conn.execute(
            text("UPDATE vspc.organizations SET name = :n WHERE instance_uid = :a"),
            {"n": long.strip(), "a": ORG_A},
        )
        conn.execute(
            text(
                "INSERT INTO vspc.backup_agents (instance_uid, source, computer_name, "
                "organization_uid, first_seen_at, updated_at) "
                "VALUES (:agent, 'hand', :name, :a, now(), now())"
            ),
            {"agent": AGENT, "name": "WORKSTATION-" + "X" * 80, "a": ORG_A},
        )
    for by in ("organization", "day", "job"):
        lines = report(runner, history, "--by", by).splitlines()
        assert max(len(line) for line in lines) <= 120, by
    organization = report(runner, history).splitlines()
    acme = next(line for line in organization if line.startswith("Very Long"))
    assert acme.split("  ")[0].endswith("…")
    assert len(organization[0]) == 120  # the name takes what the numbers leave
    rows = json.loads(report(runner, history, "--format", "json"))
    assert rows[1]["organization_name"] == long.strip()  # JSON keeps the whole name and uid
    assert rows[1]["organization_uid"] == str(ORG_A)


def test_chart_spans_exactly_the_window(history: dict[str, str], fresh_db: Engine) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import dates, pyplot

    from etl.report.chart import _draw

    window = Window(day(-9), day(20))  # 30 days, the first nine before any history
    with fresh_db.connect() as conn:
        result = trend(conn, window=window)
    assert result.days == [day(n) for n in range(-9, 21)]
    assert result.overall.rpo_compliance[:9] == [None] * 9
    assert round(result.overall.rpo_compliance[10] or 0, 4) == 0.5  # day 1: 2 of 4
    fig, (rpo, success) = pyplot.subplots(2, 1, sharex=True)
    try:
        _draw(fig, rpo, success, result, "t")
        low, high = (dates.num2date(x) for x in rpo.get_xlim())
        legend = rpo.get_legend()
        assert legend is not None
        title = legend.get_title().get_text()
    finally:
        pyplot.close(fig)
    assert (low.date(), low.hour) == (day(-10), 12)  # half a day before the first day
    assert (high.date(), high.hour) == (day(20), 12)
    assert title == "worst 2 by RPO compliance (ties: more failed runs)"


ORG_D = uuid.UUID("dddddddd-0000-4000-8000-000000000004")
ORG_E = uuid.UUID("eeeeeeee-0000-4000-8000-000000000005")


def test_worst_organizations_ties_go_to_more_failed_runs(fresh_db: Engine) -> None:
    with fresh_db.begin() as conn:
        insert(
            conn,
            [
                # Alpha: never ran, 0 % compliance, no failed run
                *versions(job(31), ORG_D, Seen(at(0, 6), "None")),
                # Zeta: failed twice, 0 % compliance too
                *versions(
                    job(41),
                    ORG_E,
                    Seen(at(0, 6), "Failed", at(0, 1), at(0, 2)),
                    Seen(at(1, 6), "Failed", at(1, 1), at(1, 2)),
                ),
            ],
        )
        conn.execute(
            text(
                "INSERT INTO vspc.organizations VALUES (:d, 'hand', 'Alpha Ltd', 'a', 'Company', "
                "now(), now()), (:e, 'hand', 'Zeta Ltd', 'z', 'Company', now(), now())"
            ),
            {"d": ORG_D, "e": ORG_E},
        )
        rebuild(conn)
    with fresh_db.connect() as conn:
        result = trend(conn, window=Window(day(0), day(20)))
    assert [s.label for s in result.worst] == ["Zeta Ltd", "Alpha Ltd"]
    assert result.worst[0].rpo_compliance == [0.0] * 21


def test_chart_to_a_path_that_cannot_be_written(runner: CliRunner, tmp_path: Path) -> None:
    # No database at all: the path is checked before any query.
    env = {"DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:1/none"}
    (tmp_path / "a-file").write_text("x")
    cases = {
        "/proc/sla.png": "error: --chart '/proc/sla.png': cannot write in '/proc' "
        "(No such file or directory); choose another path\n",
        "a-file/sla.png": f"error: --chart 'a-file/sla.png': '{tmp_path / 'a-file'}' is a file, "
        "not a directory; choose another path\n",
    }
    for target, message in cases.items():
        result = runner.invoke(main, ["report", "--chart", target], env=env)
        assert (result.exit_code, result.stderr) == (2, message)


def test_chart_without_matplotlib_says_what_to_install(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    env = {"DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:1/none"}
    result = runner.invoke(main, ["report", "--chart", "sla.png"], env=env)
    assert (result.exit_code, result.stderr) == (
        2,
        "error: --chart needs matplotlib, which is not installed: pip install 'vspc-etl[chart]'\n",
    )


def test_sla_report_of_the_last_days_is_that_window(
    history: dict[str, str], fresh_db: Engine
) -> None:
    with fresh_db.connect() as conn:
        by_days = sla_report(conn, by="day", days=21)
        by_window = sla_report(conn, by="day", window=Window(day(0), day(20)))
    assert by_days == by_window
    assert [r[0] for r in by_days.rows] == [day(n) for n in range(21)]


def test_platform_filter_selects_the_per_job_report(
    runner: CliRunner, history: dict[str, str], fresh_db: Engine
) -> None:
    every = json.loads(report(runner, history, "--by", "job", "--format", "json"))
    linux = every[0]["instance_uid"]
    with fresh_db.begin() as conn:  # one job of the hand-built history is a Linux job
        for table in ("backup_agent_jobs", "backup_agent_job_snapshots"):
            conn.execute(
                text(f"UPDATE vspc.{table} SET system_type = 'Linux' WHERE instance_uid = :u"),
                {"u": linux},
            )
    only = json.loads(
        report(runner, history, "--by", "job", "--format", "json", "--platform", "LINUX")
    )
    assert only == [every[0]]
    windows = report(runner, history, "--by", "job", "--format", "json", "--platform", "windows")
    assert json.loads(windows) == every[1:]
    assert (
        json.loads(report(runner, history, "--by", "job", "--format", "json", "--platform", "mac"))
        == []
    )


@pytest.mark.parametrize("args", [("--by", "organization"), ("--by", "day"), ("--format", "html")])
def test_platform_filter_is_refused_where_platforms_are_counted_together(
    runner: CliRunner, history: dict[str, str], args: tuple[str, ...]
) -> None:
    result = runner.invoke(main, ["report", *args, "--platform", "linux"], env=history)
    assert result.exit_code == 2, result.output
    assert result.stderr == (
        "error: --platform applies to the per-job and per-computer reports only (--by job or "
        "computer, table, csv or json, no --chart): the daily and per-organization numbers "
        "count every platform together\n"
    )
