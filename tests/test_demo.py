"""``vspc-etl demo``: a history that ends now, continued later, never in a foreign warehouse.

Real PostgreSQL and the simulator on loopback, through the command line; small consoles and
a few days keep each demo to a couple of seconds.
"""

from __future__ import annotations

import html
import itertools
import json
import re
import shlex
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL

from etl.cli import main
from etl.config import load_settings
from etl.demo import Console, plan_stops, run_demo
from etl.demo.history import rebuild
from etl.demo.run import demo_engine
from etl.pipeline import run_once
from etl.simulator import Simulator, SimulatorServer
from tests.conftest import TEST_API_KEY, create_database, drop_database, make_settings

SOURCE = Console(jobs=40, seed=3).source
DEMO = ["demo", "--jobs", "40", "--seed", "3"]


def env_for(url: URL) -> dict[str, str]:
    return {"DATABASE_URL": url.render_as_string(hide_password=False)}


def invoke(runner: CliRunner, url: URL, *args: str) -> Result:
    return runner.invoke(main, list(args), env=env_for(url))


def runs_of(engine: Engine, source: str = SOURCE) -> list[datetime]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                text("SELECT started_at FROM vspc.etl_runs WHERE source = :s ORDER BY run_id"),
                {"s": source},
            ).scalars()
        )


@pytest.fixture(scope="module")
def demo_db(server_url: URL) -> Iterator[URL]:
    """A database of its own holding a week of demo history (100 jobs, a sync every 6 h):
    enough jobs that some come and go in a week."""
    url = create_database(server_url, "vspc_etl_demo")
    try:
        result = CliRunner().invoke(
            main, ["demo", "--days", "7", "--jobs", "100", "--seed", "2"], env=env_for(url)
        )
        assert result.exit_code == 0, result.output
        yield url
    finally:
        drop_database(server_url, url)


@pytest.fixture(scope="module")
def demo_output(demo_db: URL) -> str:
    """What the demo of ``demo_db`` printed (run again: it has nothing to add, and says so)."""
    result = CliRunner().invoke(main, ["demo"], env=env_for(demo_db))
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.fixture(scope="module")
def demo_db_engine(demo_db: URL) -> Iterator[Engine]:
    engine = create_engine(demo_db)
    yield engine
    engine.dispose()


def test_the_history_covers_the_days_asked_and_ends_now(demo_db_engine: Engine) -> None:
    runs = runs_of(demo_db_engine, Console(100, 2).source)
    now = datetime.now(UTC)
    assert len(runs) == 7 * 4 + 1
    assert timedelta(days=7) <= runs[-1] - runs[0] < timedelta(days=7, minutes=2)
    assert timedelta(0) <= now - runs[-1] < timedelta(minutes=3)
    assert all(b - a == timedelta(hours=6) for a, b in itertools.pairwise(runs[:-1]))
    with demo_db_engine.connect() as conn:
        status, finished = conn.execute(
            text(
                "SELECT array_agg(DISTINCT status), "
                "max(finished_at - started_at) FROM vspc.etl_runs"
            )
        ).one()
        jobs = conn.execute(
            text(
                "SELECT count(*) FILTER (WHERE first_seen_at > min_run), "
                "count(*) FILTER (WHERE deleted_at IS NOT NULL) FROM vspc.backup_agent_jobs, "
                "(SELECT min(started_at) AS min_run FROM vspc.etl_runs) r"
            )
        ).one()
        failed_sessions = conn.execute(
            text("SELECT count(*) FROM vspc.job_runs WHERE status = 'Failed'")
        ).scalar_one()
    assert status == ["success"]
    assert finished < timedelta(minutes=1)  # each run ends its own duration after its start
    # Jobs came or went. Not both for sure: which ones the seeded console adds and deletes
    # in a week depends on the hour the demo ends (its schedules' runs draw from the same
    # stream), and some hours it deletes none (the warehouse then has none deleted either).
    assert jobs[0] + jobs[1] > 0
    assert failed_sessions > 0


def test_report_by_day_has_every_day_with_runs_and_a_real_rpo(
    runner: CliRunner, demo_db: URL
) -> None:
    result = invoke(runner, demo_db, "report", "--by", "day", "--days", "8", "--format", "json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    today = datetime.now(UTC).date()
    days = [date.fromisoformat(r["day"]) for r in rows]
    # Today is under way: just after midnight it holds a run or two, or none yet.
    completed = [today - timedelta(days=n) for n in range(7, 0, -1)]
    assert days in (completed, [*completed, today])
    for row in rows:
        if date.fromisoformat(row["day"]) == today:
            rates = (row["rpo_compliance"], row["success_rate"])
            assert all(r is None or 0 <= r <= 1 for r in rates), row  # None: no run yet
            continue
        assert row["runs"] > 0, row
        assert 0.2 < row["rpo_compliance"] < 1, row
        assert 0.5 < row["success_rate"] <= 1, row
    assert sum(r["failed_runs"] for r in rows) > 0
    assert len({r["rpo_compliance"] for r in rows}) > 1  # a trend, not one value repeated


def test_the_commands_to_try_next_run(
    runner: CliRunner, demo_db: URL, demo_output: str, tmp_path: Path
) -> None:
    lines = demo_output.splitlines()
    assert lines[1].startswith("nothing to add: the demo's history ends at ")
    commands = [shlex.split(line, comments=True) for line in lines[lines.index("try next:") + 1 :]]
    commands = [c for c in commands if c]
    assert [c[:3] for c in commands] == [
        ["vspc-etl", "report", "--days"],
        ["vspc-etl", "report", "--by"],
        ["vspc-etl", "report", "--by"],
        ["vspc-etl", "report", "--chart"],
        ["vspc-etl", "demo"],
        ["vspc-etl", "report", "--format"],
    ]
    assert commands[0][3] == "8"  # a week and today: the days the demo filled
    results = []
    for command in commands:
        result = invoke(runner, demo_db, *command[1:])
        assert result.exit_code == 0, (command, result.output)
        results.append(result)
    assert commands[2] == ["vspc-etl", "report", "--by", "computer"]
    report, by_day, by_computer, _, again, _ = results
    table = report.stdout.splitlines()
    assert table[0].split()[0] == "organization" and len(table) > 3
    assert len(by_day.stdout.splitlines()) == 2 + 8  # header, rule, a week and today
    engine = create_engine(demo_db)
    with engine.connect() as conn:
        computers = conn.execute(text("SELECT count(*) FROM vspc.computer_sla_current")).scalar()
    engine.dispose()
    assert by_computer.stdout.split()[:2] == ["organization", "computer"]
    assert computers and len(by_computer.stdout.splitlines()) == 2 + computers
    chart = tmp_path / "sla.png"
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and chart.stat().st_size > 20_000
    assert "nothing to add" in again.stdout
    html_command = commands[-1]
    month = html_command[html_command.index("--month") + 1]
    organization = html_command[html_command.index("--organization") + 1]
    page = html.unescape((tmp_path / f"sla-{month}.html").read_text())
    assert organization in page
    assert re.match(r"\d{4}-\d{2}$", month)


def command_key(command: list[str]) -> tuple[str, ...]:
    """A command as the README shows it: without --days, and the values of options other than
    --by (an organization, a month, a file) left out."""
    words = [w for i, w in enumerate(command) if "--days" not in command[max(i - 1, 0) : i + 1]]
    return tuple(words[:2] + (words[2:4] if words[2:3] == ["--by"] else words[2:3]))


def test_the_readme_shows_the_commands_the_demo_prints(demo_output: str) -> None:
    lines = demo_output.splitlines()
    printed = [shlex.split(line, comments=True) for line in lines[lines.index("try next:") + 1 :]]
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    block = readme.split("The demo ends by printing what to try next", 1)[1]
    block = block.split("```sh\n", 1)[1].split("```", 1)[0]
    shown = [shlex.split(line, comments=True) for line in block.splitlines()]
    assert sorted(command_key(c) for c in shown if c) == sorted(
        command_key(c) for c in printed if c
    )


def test_demo_runs_the_whole_job(runner: CliRunner, fresh_db: Engine, database_url: URL) -> None:
    result = invoke(runner, database_url, "demo", "--days", "2", "--jobs", "30")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("migrating postgresql+psycopg://")
    assert lines[1].startswith(
        "history built (30 jobs at first): 9 syncs of a simulated console of 30 jobs every 6h, "
    )
    assert re.search(r"in \d+\.\d s: \d+ jobs added, \d+ deleted, 0 failed runs$", lines[1])
    with fresh_db.connect() as conn:
        live = conn.execute(
            text("SELECT count(*) FROM vspc.backup_agent_jobs WHERE deleted_at IS NULL")
        ).scalar_one()
        inserted = conn.execute(
            text("SELECT jobs_inserted FROM vspc.etl_runs ORDER BY run_id")
        ).scalars()
        assert next(inserted) == 30
        points = conn.execute(text("SELECT count(*) FROM vspc.restore_points")).scalar_one()
    assert f"warehouse: {live} live jobs" in result.stdout
    assert f"history, {points} restore points, " in result.stdout
    assert len(runs_of(fresh_db, Console(30, 1).source)) == 9


def test_a_second_demo_continues_the_history(
    runner: CliRunner, fresh_db: Engine, database_url: URL
) -> None:
    # The first demo runs a day ago (its clock held back); the second one, now, goes on.
    a_day_ago = datetime.now(UTC) - timedelta(days=1)
    settings = load_settings(environ=env_for(database_url), dotenv=False)
    printed: list[str] = []
    failed = run_demo(
        settings,
        days=2,
        every=timedelta(hours=6),
        jobs=40,
        seed=3,
        force=False,
        echo=printed.append,
        clock=lambda: a_day_ago,
    )
    assert failed == 0, printed
    before = runs_of(fresh_db)
    assert len(before) == 9
    result = invoke(runner, database_url, "demo", "--days", "2")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1].startswith(
        "history continued: 4 syncs of a simulated console of 40 jobs every 6h"
    )
    after = runs_of(fresh_db)
    assert after[: len(before)] == before
    added = after[len(before) :]
    assert len(added) == 4
    assert min(added) > max(before)
    assert max(added) <= datetime.now(UTC)
    assert datetime.now(UTC) - max(added) < timedelta(minutes=2)
    # The console was rebuilt as it was: its first sync on finds the same jobs, not new ones.
    with fresh_db.connect() as conn:
        first = conn.execute(
            text("SELECT jobs_inserted, jobs_deleted FROM vspc.etl_runs WHERE started_at = :t"),
            {"t": added[0]},
        ).one()
    assert first.jobs_inserted <= 3 and first.jobs_deleted <= 3, first
    verified = invoke(runner, database_url, "verify")
    assert verified.exit_code == 0, verified.output


def test_a_demo_right_after_another_has_nothing_to_add(
    runner: CliRunner, fresh_db: Engine, database_url: URL
) -> None:
    first = invoke(runner, database_url, *DEMO, "--days", "1")
    assert first.exit_code == 0, first.output
    runs = runs_of(fresh_db)
    again = invoke(runner, database_url, "demo", "--days", "1")
    assert again.exit_code == 0, again.output
    newest = runs[-1].strftime("%Y-%m-%d %H:%M")
    assert again.stdout.splitlines()[1] == (
        f"nothing to add: the demo's history ends at {newest} UTC, less than one step (6h) ago"
    )
    assert "try next:" in again.stdout
    assert runs_of(fresh_db) == runs


def test_a_continued_demo_keeps_its_console(
    runner: CliRunner, fresh_db: Engine, database_url: URL
) -> None:
    assert invoke(runner, database_url, *DEMO, "--days", "1").exit_code == 0
    result = invoke(runner, database_url, "demo", "--jobs", "41")
    assert result.exit_code == 2
    assert result.stderr == (
        "error: this database holds the demo of a console of 40 jobs, seed 3: run demo without "
        "--jobs and --seed to continue it, or point DATABASE_URL at another database for "
        "another console\n"
    )


@pytest.fixture
def foreign_source(fresh_db: Engine, database_url: URL) -> str:
    """A warehouse that holds a real console's data: one sync of another simulator."""
    simulator = Simulator(jobs=5, seed=9, api_keys=(TEST_API_KEY,))
    with SimulatorServer(simulator, host="127.0.0.1", port=0) as server:
        settings = make_settings(database_url, server, VSPC_SOURCE="acme-vspc")
        assert run_once(settings, engine=fresh_db).status == "success"
    return "acme-vspc"


def test_a_warehouse_with_another_source_is_refused(
    runner: CliRunner, fresh_db: Engine, database_url: URL, foreign_source: str
) -> None:
    result = invoke(runner, database_url, *DEMO, "--days", "1")
    assert result.exit_code == 2
    assert result.stderr == (
        "error: this database holds data of 'acme-vspc', not only the demo's: the demo does "
        "not write into a real warehouse; point DATABASE_URL at another database, or give "
        "--force to add the demo beside that data\n"
    )
    assert "Traceback" not in result.output
    assert runs_of(fresh_db) == []


def test_force_adds_the_demo_beside_another_source(
    runner: CliRunner, fresh_db: Engine, database_url: URL, foreign_source: str
) -> None:
    with fresh_db.connect() as conn:
        acme = conn.execute(
            text("SELECT count(*) FROM vspc.backup_agent_jobs WHERE source = 'acme-vspc'")
        ).scalar_one()
    result = invoke(runner, database_url, *DEMO, "--days", "1", "--force")
    assert result.exit_code == 0, result.output
    assert len(runs_of(fresh_db)) == 5
    with fresh_db.connect() as conn:
        still = conn.execute(
            text(
                "SELECT count(*) FROM vspc.backup_agent_jobs "
                "WHERE source = 'acme-vspc' AND deleted_at IS NULL"
            )
        ).scalar_one()
    assert still == acme == 5


def test_one_demo_at_a_time(runner: CliRunner, fresh_db: Engine, database_url: URL) -> None:
    with fresh_db.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(1145392463, 0)"))  # "DEMO"
        try:
            result = invoke(runner, database_url, *DEMO, "--days", "1")
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(1145392463, 0)"))
    assert result.exit_code == 1
    assert result.stderr == (
        "error: another demo is running against this database: let it finish\n"
    )
    assert runs_of(fresh_db) == []


@pytest.mark.parametrize(
    ("every", "message"),
    [
        ("soon", "--every: must be a duration such as 900, 15m or 1h"),
        ("30s", "--every: '30s' must be between 1m and the --days (1d)"),
        ("2d", "--every: '2d' must be between 1m and the --days (1d)"),
    ],
)
def test_a_bad_step_names_the_flag(runner: CliRunner, every: str, message: str) -> None:
    result = runner.invoke(main, ["demo", "--days", "1", "--every", every])
    assert result.exit_code == 2
    assert message in result.stderr


END = datetime(2026, 12, 6, 18, 0, 5, tzinfo=UTC)
H6 = timedelta(hours=6)


@pytest.mark.parametrize(
    ("last", "days", "expected"),
    [
        # a new history: from days back, every step, to the end
        (None, 1, [END - 4 * H6, END - 3 * H6, END - 2 * H6, END - H6, END]),
        # continued: one step after the last, then to the end
        (END - 2 * H6, 30, [END - H6, END]),
        # a last step shorter than half a step joins the one before it
        (END - 2 * H6 - timedelta(hours=1), 30, [END - H6 - timedelta(hours=1), END]),
        (END - H6 - timedelta(hours=1), 30, [END]),
        # less than a step since the last sync: nothing to add
        (END - timedelta(hours=5), 30, []),
        # a gap longer than the days asked is crossed in one step
        (END - timedelta(days=9), 1, [END - 4 * H6, END - 3 * H6, END - 2 * H6, END - H6, END]),
    ],
)
def test_plan_stops(last: datetime | None, days: int, expected: list[datetime]) -> None:
    assert plan_stops(last=last, end=END, days=days, every=H6) == expected


def test_a_rebuilt_console_is_the_one_that_lived_through_the_same_instants() -> None:
    start = datetime(2026, 11, 1, 0, 0, 7, tzinfo=UTC)
    instants = [start + n * H6 for n in range(9)] + [start + 8 * H6 + timedelta(seconds=4321)]
    lived = Simulator(jobs=30, seed=4, start=start, api_keys=("k",))
    now = start
    for instant in instants[1:]:
        now = lived.advance((instant - now).total_seconds() / 3600).now
        assert now == instant
    rebuilt = rebuild(Console(30, 4), instants, "k")
    assert rebuilt.jobs() == lived.jobs()
    other = rebuild(Console(30, 5), instants, "k")
    assert {j["instanceUid"] for j in other.jobs()}.isdisjoint(
        {j["instanceUid"] for j in lived.jobs()}
    )


def test_the_demo_commits_without_waiting_for_the_disk(database_url: URL) -> None:
    settings = load_settings(environ=env_for(database_url), dotenv=False)
    engine = demo_engine(settings)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SHOW synchronous_commit")).scalar_one() == "off"
    finally:
        engine.dispose()
