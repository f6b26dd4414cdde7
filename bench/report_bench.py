"""The customer SLA report of a past month: one organization, and every organization at once.

    python bench/report_bench.py [--jobs 200] [--days 40] [--month YYYY-MM] [--repeat 3]

1. Makes a throwaway database on BENCH_DATABASE_URL (default postgres@127.0.0.1:5432), or
   reuses it with ``--keep`` (then it is left in place), and fills it with the demo:
   ``vspc-etl demo --days DAYS --jobs JOBS`` (a sync every 6 simulated hours, ending now; the
   simulator makes one organization per 20 jobs: 200 jobs, the demo's default, give 10
   organizations, 1,000 give 50). If the warehouse holds no restore points, adds the console's:
   one at the end of every successful session, one an hour after the start of every other
   failed session (a retry no sync saw: it saves the job that day), and one a day per
   computer without a job; those older than five days are merged away, as retention does.
2. Times, each in a fresh ``vspc-etl`` process as a user runs it, ``report --format html
   --month MONTH`` (default: the month before this one, complete in the history) with
   ``--organization`` (the organization with the most jobs) and with ``--all-organizations
   --out DIR``: one warm-up, then ``--repeat`` runs; median and max of the wall time, which
   includes starting Python (about 0.7 s of imports), and the median CPU time (user + system)
   of the ``vspc-etl`` process, which does not count PostgreSQL's work nor waits for a core on
   a busy machine (the load average is printed with the table).
3. Counts, in this process, the days of the month the fast query got wrong and asked of
   ``job_sla_at`` (all organizations' month).
Prints a Markdown table (copy it into bench/RESULTS.md). All traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from sqlalchemy import Connection, create_engine, text
from sqlalchemy.engine import URL, make_url

from etl.report import missed, month_window, monthly_reports

ROOT = Path(__file__).resolve().parent.parent


def previous_month(today: date) -> str:
    return f"{today.replace(day=1) - timedelta(days=1):%Y-%m}"


def server_url() -> URL:
    url = os.environ.get(
        "BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    return make_url(url)


def ensure_database(server: URL, name: str, keep: bool) -> tuple[URL, bool]:
    """The benchmark database's URL, and whether it must be filled (it did not exist)."""
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        exists = conn.execute(
            text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
        ).scalar()
        if exists and not keep:
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        if not exists or not keep:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return server.set(database=name), not (exists and keep)


def drop_database(server: URL, name: str) -> None:
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


# The points a console would list for the demo's sessions (see the module's docstring).
_POINTS = """
INSERT INTO vspc.restore_points (instance_uid, source, backup_agent_uid, job_uid,
  creation_date, raw, first_seen_at, gone_at)
SELECT gen_random_uuid(), p.source, p.agent, p.job, p.created, '{}', p.created,
  CASE WHEN p.created < now() - interval '5 days' THEN p.created + interval '5 days' END
FROM (
  SELECT f.source, f.backup_agent_uid AS agent, f.instance_uid AS job, f.ended_at AS created
  FROM vspc.job_run_facts f
  WHERE f.status IN ('Success', 'Warning') AND f.ended_at IS NOT NULL
  UNION ALL
  SELECT f.source, f.backup_agent_uid, f.instance_uid, f.started_at + interval '1 hour'
  FROM vspc.job_run_facts f
  WHERE f.status = 'Failed' AND hashtext(f.instance_uid::text || f.started_at::text) % 2 = 0
    AND f.started_at + interval '1 hour' <= now()
  UNION ALL
  SELECT a.source, a.instance_uid, NULL, g.day + interval '3 hours'
  FROM vspc.backup_agents a
  CROSS JOIN generate_series(
    (SELECT date_trunc('day', min(started_at)) FROM vspc.job_run_facts),
    now() - interval '1 day', interval '1 day') g (day)
) p
WHERE p.agent IS NOT NULL AND NOT EXISTS (SELECT 1 FROM vspc.restore_points)
"""


def add_points(conn: Connection) -> int:
    """The points of the module's docstring, if the warehouse has none; how many it holds."""
    conn.execute(text(_POINTS))
    return int(conn.execute(text("SELECT count(*) FROM vspc.restore_points")).scalar_one())


def fallen_back(conn: Connection, month: str) -> int:
    """The days of ``month`` the fast query asked of ``job_sla_at``, all organizations."""
    asked: list[date] = []
    defined = missed._defined

    def counting(c: Connection, days: list[date], *rest: object) -> list[missed.MissedRow]:
        asked.extend(days)
        return defined(c, days, *rest)  # type: ignore[arg-type]

    missed._defined = counting  # type: ignore[assignment]
    try:
        monthly_reports(conn, month_window(month))
    finally:
        missed._defined = defined  # type: ignore[assignment]
    return len(asked)


def cli(env: dict[str, str], *args: str) -> tuple[float, float]:
    """Run ``vspc-etl ARGS``; its wall time and its CPU time (user + system) in seconds."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "etl", *args],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def timed(env: dict[str, str], repeat: int, *args: str) -> list[tuple[float, float]]:
    cli(env, *args)  # warm-up: the database's caches, Python's bytecode
    return [cli(env, *args) for _ in range(repeat)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--days", type=int, default=40)
    parser.add_argument("--month", default=previous_month(datetime.now(UTC).date()))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="reuse and keep the database")
    args = parser.parse_args()

    server = server_url()
    name = f"vspc_etl_report_bench_{args.jobs}"
    url, fill = ensure_database(server, name, args.keep)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VSPC_", "DATABASE_"))}
    env |= {"DATABASE_URL": url.render_as_string(hide_password=False), "LOG_LEVEL": "WARNING"}
    try:
        if fill:
            cli(env, "migrate")
            built, _ = cli(env, "demo", "--days", str(args.days), "--jobs", str(args.jobs))
            print(f"demo of {args.jobs} jobs over {args.days} days built in {built:.0f} s")
        engine = create_engine(url)
        with engine.begin() as conn:
            points = add_points(conn)
        with engine.connect() as conn:
            organizations = conn.execute(
                text("SELECT count(*) FROM vspc.organizations")
            ).scalar_one()
            biggest = conn.execute(
                text(
                    "SELECT o.name FROM vspc.backup_agent_jobs j "
                    "JOIN vspc.organizations o ON o.instance_uid = j.organization_uid "
                    "GROUP BY o.name ORDER BY count(*) DESC, o.name LIMIT 1"
                )
            ).scalar_one()
        engine.dispose()
        with tempfile.TemporaryDirectory() as tmp:
            html = ["report", "--format", "html", "--month", args.month]
            one = timed(
                env,
                args.repeat,
                *html,
                "--organization",
                biggest,
                "--out",
                str(Path(tmp) / "one.html"),
            )
            every = timed(
                env, args.repeat, *html, "--all-organizations", "--out", str(Path(tmp) / "all")
            )
            written = len(list((Path(tmp) / "all").glob("*.html")))
        with engine.connect() as conn:
            fell_back = fallen_back(conn, args.month)
        engine.dispose()
    finally:
        if not args.keep:
            drop_database(server, name)

    load = os.getloadavg()[0]
    print()
    print(f"| jobs | organizations | report of {args.month} | wall s median | wall s max | CPU s |")
    print("|---:|---:|---|---:|---:|---:|")
    cases = (
        (f"`--organization` ({biggest})", one),
        (f"`--all-organizations` ({written} files)", every),
    )
    for case, times in cases:
        walls = [wall for wall, _ in times]
        cpu = statistics.median(cpu for _, cpu in times)
        print(
            f"| {args.jobs:,} | {organizations} | {case} | "
            f"{statistics.median(walls):.2f} | {max(walls):.2f} | {cpu:.2f} |"
        )
    print(f"\nrestore points: {points:,}; days asked of job_sla_at: {fell_back}")
    print(f"load average (1 min) at the end: {load:.1f}")


if __name__ == "__main__":
    main()
