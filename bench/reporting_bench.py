"""Reporting at scale: dashboard queries over a year of history, and what reporting adds to a sync.

    python bench/reporting_bench.py [--jobs 10000] [--orgs 50] [--days 365] [--repeat 7]

1. Starts ``bench/_reporting_sim.py`` (a process of its own) with ``--jobs`` jobs over ``--orgs``
   organizations, its clock 24 h behind the real one, and makes a throwaway database on
   BENCH_DATABASE_URL (default postgres@127.0.0.1:5432), migrated to head.
2. Generates ``--days`` days of history for those jobs with SQL (generate_series): one snapshot
   version per job and day, each a finished session (4 % Failed, 4 % Warning), the last a day
   before the session the simulator shows first (a job that never ran has none), then derives
   the sessions and the daily numbers from it (what migration 0002 does to an existing
   warehouse). Versions and sessions are stored in time order, as syncs would have written
   them. Restore points: one per successful session, created at its end, kept ``--retention``
   days (then ``gone_at``: retention merged it away), so a job has ~14 points alive at any
   time; and for every 20th job a computer of its own with a daily point (11:00 after the
   job's hour) of no job the console lists. Those computers are not in the agents collection
   (the simulator's agents belong to other organizations than the jobs it is given here:
   their points would add organizations to every day; for the same reason the syncs below find
   the simulator's restore points refused, and what reading points adds to a sync is
   bench/points_bench.py's to measure).
3. Syncs, each in a fresh ETL process (``bench/_reporting_worker.py``) after a CHECKPOINT (as
   in production, where one comes every few minutes): a first (initial) sync; then A/B pairs,
   each on two copies of that warehouse and two identical simulators, with and without the
   reporting layer: what reporting adds = wall with / wall without - 1. The warehouse is
   vacuumed after the first sync and after the hourly pairs' catch-up sync, as autovacuum does
   in the hours between production syncs; the copies start from that state. ``--daily`` pairs of
   one sync after 24 h (every daily job ran), each from fresh copies; ``--hourly`` pairs of
   one sync after 1 h, in a row, after an untimed catch-up sync. Every timed sync's virtual
   time ends at (a few minutes before) the real clock, so it computes the completed days a
   production sync would.
4. Times the queries a dashboard sends (and every query of deploy/grafana's dashboard, last 90
   days, all organizations): one warm-up, then ``--repeat`` runs; median and max, client side,
   all rows fetched. Then a settings change (time zone, RPO policy), which recomputes every day.
Prints Markdown (copy it into bench/RESULTS.md). All traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.engine import URL
from sync_bench import autocommit, checkpoint

from etl.db import migrate, normalize_url
from etl.load.reporting import rebuild
from etl.report import sla_report
from etl.transform import parse_timestamp

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "bench-api-key"

HISTORY = """
INSERT INTO vspc.backup_agent_job_snapshots (instance_uid, source, backup_agent_uid,
  organization_uid, name, status, last_run, last_end_time, last_duration, is_enabled,
  restore_points, backed_up_size, raw, valid_from, valid_to, is_deleted, run_id, system_type)
SELECT j.uid, 'bench', j.agent, j.org, 'Backup Job ' || j.n, o.status, o.started,
  o.started + make_interval(secs => o.seconds), o.seconds, true, 7, 1000000000 + k,
  jsonb_build_object('instanceUid', j.uid, 'status', o.status),
  o.started + interval '4 hours',
  CASE WHEN k < :days THEN o.started + interval '1 day 4 hours' END, false, 0, 'Windows'
FROM bench_jobs j
CROSS JOIN generate_series(1, :days) AS k
CROSS JOIN LATERAL (
  SELECT CASE WHEN h < 4 THEN 'Failed' WHEN h < 8 THEN 'Warning' ELSE 'Success' END AS status,
         j.first_run - make_interval(days => :days + 1 - k) AS started,
         300 + j.n % 3000 AS seconds
  FROM (SELECT abs(hashtext(j.uid::text || k)) % 100 AS h) r
) o
WHERE j.first_run IS NOT NULL  -- a job that has never run has no sessions
ORDER BY o.started  -- rows in the order syncs would have written them (see TIME_ORDER)
"""
# Written with the restore_points triggers off: rebuild() then computes every day once.
POINTS = """
INSERT INTO vspc.restore_points (instance_uid, source, backup_agent_uid, job_uid,
  backed_up_items, destination, size, increment_raw_data_size, source_size, creation_date, raw,
  first_seen_at, last_run_id, gone_at)
SELECT gen_random_uuid(), 'bench', p.agent, p.job, 'C:\\', 'Repository 1', 2000000000,
  50000000, 80000000000, p.created,
  jsonb_build_object('backupAgentUid', p.agent, 'jobUid', p.job, 'creationDate', p.created),
  p.created + interval '10 minutes', 0,
  CASE WHEN p.created + make_interval(days => :retention) < :start
       THEN p.created + make_interval(days => :retention) END
FROM (
  SELECT s.backup_agent_uid AS agent, s.instance_uid AS job, s.last_end_time AS created
  FROM vspc.backup_agent_job_snapshots s WHERE s.status IN ('Success', 'Warning')
  UNION ALL
  SELECT md5(j.uid::text || '/own')::uuid, NULL,
    j.first_run - make_interval(days => :days + 1 - k) + interval '11 hours'
  FROM bench_jobs j CROSS JOIN generate_series(1, :days) AS k
  WHERE j.first_run IS NOT NULL AND j.n % 20 = 0
) p
ORDER BY p.created
"""
TRIGGERS = "ALTER TABLE vspc.restore_points {} TRIGGER USER"

# The history ends a day before the session the simulator shows first (its lastRun at the
# start), as a warehouse that has been syncing all along would: the first sync then appends
# every job's session instead of finding one older than the stored ones, which would make the
# triggers recompute those jobs from all their sessions (a console does that only when it moves
# a job's lastRun backwards) and leave thousands of dead rows behind for the timed syncs.

# A warehouse fills in time order, one sync after another: a day's versions and sessions sit
# together. Sessions derived from a generated history come out in job order instead, which
# would make every read of a few days (a sync computing yesterday, a dashboard's 30 days)
# fetch pages from all over the table.
TIME_ORDER = "CLUSTER vspc.job_run_facts USING pk_job_run_facts"


FIRST_SESSIONS = """
SELECT count(*), count(*) FILTER (WHERE EXISTS (
  SELECT 1 FROM vspc.job_run_facts h
  WHERE h.instance_uid = f.instance_uid AND h.run_id = 0 AND h.started_at > f.started_at))
FROM vspc.job_run_facts f WHERE f.run_id <> 0
"""
"""Sessions the first sync recorded, and how many of them are older than the generated history."""


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def simulator(jobs: int, orgs: int, start: datetime) -> Iterator[str]:
    port = free_port()
    cmd = [sys.executable, str(ROOT / "bench" / "_reporting_sim.py"), "--port", str(port)]
    cmd += ["--jobs", str(jobs), "--orgs", str(orgs), "--start", start.isoformat()]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise SystemExit("the simulator did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=60)


@contextmanager
def database() -> Iterator[URL]:
    admin = normalize_url(
        os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    )
    name = f"vspc_etl_rbench_{uuid.uuid4().hex[:8]}"
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin.set(database=name)
    try:
        migrate(url)
        yield url
    finally:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


@contextmanager
def clone(db: URL, suffix: str) -> Iterator[URL]:
    """A copy of database ``db`` (CREATE DATABASE … TEMPLATE), dropped afterwards."""
    admin = create_engine(db.set(database="postgres"), isolation_level="AUTOCOMMIT")
    copy = db.set(database=f"{db.database}_{suffix}")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{copy.database}" TEMPLATE "{db.database}"'))
    try:
        yield copy
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{copy.database}" WITH (FORCE)'))
        admin.dispose()


def vacuum(db: URL) -> None:
    """What autovacuum does in the hours between production syncs: a daily sync updates most
    rows of ``backup_agent_jobs`` and ``job_sla_state``, far past its thresholds (20 %)."""
    autocommit(db, "VACUUM ANALYZE")


SIDES = {"with": (), "without": ("--without-reporting",)}
"""The two sides of an A/B pair: the worker's flags for each."""


def sync(db: URL, vspc_url: str, *flags: str) -> dict[str, Any]:
    checkpoint(db)
    env = dict(
        os.environ,
        DATABASE_URL=db.render_as_string(hide_password=False),
        VSPC_URL=vspc_url,
        VSPC_API_KEY=API_KEY,
        VSPC_SOURCE="bench",
        LOG_LEVEL="WARNING",
    )
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "_reporting_worker.py"), *flags],
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"sync failed: {proc.stdout}{proc.stderr}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def timed(step: Callable[[], Any]) -> float:
    started = time.perf_counter()
    step()
    return time.perf_counter() - started


def generate(
    conn: Connection, jobs: list[dict[str, Any]], start: datetime, days: int, retention: int
) -> None:
    conn.execute(text("SET work_mem = '256MB'"))
    conn.execute(
        text(
            "CREATE TEMP TABLE bench_jobs "
            "(uid uuid, org uuid, agent uuid, n int, first_run timestamptz)"
        )
    )
    conn.execute(
        text("INSERT INTO bench_jobs VALUES (:uid, :org, :agent, :n, :first_run)"),
        [
            {
                "uid": j["instanceUid"],
                "org": j["organizationUid"],
                "agent": j["backupAgentUid"],
                "n": n,
                "first_run": j["lastRun"] and parse_timestamp(j["lastRun"]),
            }
            for n, j in enumerate(jobs)
        ],
    )
    conn.execute(text(HISTORY), {"start": start, "days": days})
    conn.execute(text(TRIGGERS.format("DISABLE")))
    conn.execute(text(POINTS), {"start": start, "days": days, "retention": retention})
    conn.execute(text(TRIGGERS.format("ENABLE")))


def dashboard_queries(last_day_end: datetime, organizations: list[str]) -> dict[str, str]:
    board = json.loads((ROOT / "deploy/grafana/dashboards/vspc-sla.json").read_text())
    start = (last_day_end - timedelta(days=90)).isoformat()
    end = last_day_end.isoformat()
    found: dict[str, str] = {}
    sources = [(v["name"], v["query"]) for v in board["templating"]["list"] if v["type"] == "query"]
    sources += [(p["title"], t["rawSql"]) for p in board["panels"] for t in p["targets"]]
    for title, sql in sources:
        head = "$__timeFilter("
        while head in sql:
            at = sql.index(head)
            depth, i = 1, at + len(head)
            while depth:
                depth += {"(": 1, ")": -1}.get(sql[i], 0)
                i += 1
            column = sql[at + len(head) : i - 1]
            sql = f"{sql[:at]}{column} BETWEEN '{start}' AND '{end}'{sql[i:]}"
        # "All" organizations, as Grafana expands it: every value of the variable, quoted
        sql = sql.replace("$organization", ", ".join(f"'{o}'" for o in organizations))
        sql = sql.replace("$platform", "'Windows', 'Linux', 'Mac'")
        found[f"dashboard: {title}"] = sql
    return found


def measure(
    conn: Connection, sql: str, params: dict[str, Any], repeat: int
) -> tuple[float, float, int]:
    rows = len(conn.execute(text(sql), params).all())  # warm-up
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        conn.execute(text(sql), params).all()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), max(times), rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--orgs", type=int, default=50)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument(
        "--retention", type=int, default=14, help="days a restore point is kept (gone_at after)"
    )
    parser.add_argument("--daily", type=int, default=4, help="A/B pairs of a sync after 24 h")
    parser.add_argument("--hourly", type=int, default=6, help="A/B pairs of a sync after 1 h")
    args = parser.parse_args()

    # The history ends, and the first sync runs, 24 h of virtual time before the real clock:
    # every timed sync then ends its virtual day at (a few minutes before) the real now, and
    # sees sessions as recent as a sync in production would. That matters: the database's
    # now() decides which completed days the sync computes (in production a daily sync
    # computes yesterday, an hourly one nothing, the first after midnight yesterday).
    start = datetime.now(UTC) - timedelta(hours=24)
    lines: list[str] = []
    out = lines.append
    # The hourly syncs run one virtual hour apart up to the real now: those before midnight
    # (UTC, the report time zone) would add sessions to a day the database counts as
    # completed, and recompute it every hour, which production does once a day.
    hours_today = int((start + timedelta(hours=24)).hour)
    if args.hourly > hours_today:
        out(
            f"(--hourly {args.hourly} reduced to {hours_today}: only {hours_today} whole "
            "hours of today have passed, UTC)\n"
        )
        args.hourly = hours_today
    with simulator(args.jobs, args.orgs, start) as url, database() as db:
        jobs = httpx.get(f"{url}/_sim/jobs", timeout=120).json()["data"]
        ran = sum(1 for j in jobs if j["lastRun"])
        engine = create_engine(db)
        with engine.begin() as conn:
            t_generate = timed(lambda: generate(conn, jobs, start, args.days, args.retention))
        with engine.begin() as conn:
            conn.execute(text("SET work_mem = '256MB'"))
            t_derive = timed(lambda: rebuild(conn))
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            t_derive += timed(lambda: conn.execute(text(TIME_ORDER)))
            conn.execute(text("VACUUM ANALYZE"))
            sizes = conn.execute(
                text(
                    "SELECT (SELECT count(*) FROM vspc.backup_agent_job_snapshots), "
                    "(SELECT count(*) FROM vspc.job_run_facts), "
                    "(SELECT count(*) FROM vspc.sla_daily_counts), "
                    "pg_size_pretty(pg_total_relation_size('vspc.job_run_facts')), "
                    "pg_size_pretty(pg_total_relation_size('vspc.backup_agent_job_snapshots')), "
                    "(SELECT count(*) FROM vspc.restore_points), "
                    "(SELECT count(*) FROM vspc.restore_points WHERE gone_at IS NULL), "
                    "(SELECT count(*) FROM vspc.restore_points WHERE job_uid IS NULL), "
                    "pg_size_pretty(pg_total_relation_size('vspc.restore_points'))"
                )
            ).one()
        out(
            f"History: {args.jobs:,} jobs over {args.orgs} organizations ({ran:,} of them have "
            f"run), {args.days} days: "
            f"{sizes[0]:,} snapshot versions ({sizes[4]}), {sizes[1]:,} sessions in job_run_facts "
            f"({sizes[3]}), {sizes[2]:,} rows in sla_daily_counts, {sizes[5]:,} restore "
            f"points ({sizes[8]}; {sizes[6]:,} still listed, {sizes[7]:,} of no job). "
            "Generating it took "
            f"{t_generate:.0f} s; deriving sessions and days from it (what migration 0002 does "
            f"to an existing warehouse) and putting the sessions in time order {t_derive:.0f} s."
        )
        out("")
        first = sync(db, url)
        vacuum(db)
        with engine.connect() as conn:
            recorded, late = conn.execute(text(FIRST_SESSIONS)).one()
        out(
            f"First sync (initial load of {first['inserted']:,} jobs onto that history): "
            f"{first['wall_s']:.2f} s, of which the reporting step "
            f"{first['timings'].get('reporting', 0):.2f} s (its {recorded:,} sessions reach "
            f"back up to two months, and every day since is computed once; {late:,} of them "
            "older than a stored session of their job)."
        )
        out("")
        # A/B: every pair starts from copies of the warehouse as the first sync left it and
        # two identical simulators, and syncs both, with and without the reporting layer, one
        # right after the other (which goes first alternates), each after a CHECKPOINT.
        engine.dispose()
        out(
            "| sync | jobs changed | sessions | wall s with reporting | wall s without "
            "| added | names s | reporting step s |"
        )
        out("|---|---:|---:|---:|---:|---:|---:|---:|")
        walls: dict[float, list[tuple[float, float]]] = {24.0: [], 1.0: []}  # (with, without)
        share: dict[float, list[float]] = {24.0: [], 1.0: []}
        step = 0

        def pair(label: str, hours: float, sides: dict[str, tuple[URL, str]]) -> None:
            nonlocal step
            for _, target in sides.values():
                httpx.post(f"{target}/_sim/advance", params={"hours": hours}, timeout=300)
            with_db = sides["with"][0]
            count = "SELECT count(*) FROM vspc.job_run_facts"
            probe = create_engine(with_db)
            with probe.connect() as conn:
                before = conn.execute(text(count)).scalar()
            order = ["with", "without"] if step % 2 == 0 else ["without", "with"]
            step += 1
            runs = {side: sync(*sides[side], *SIDES[side]) for side in order}
            with probe.connect() as conn:
                after = conn.execute(text(count)).scalar()
            probe.dispose()
            r, plain = runs["with"], runs["without"]
            t = r["timings"]
            walls[hours].append((r["wall_s"], plain["wall_s"]))
            step_s = t.get("reporting", 0.0)
            share[hours].append(step_s / (r["wall_s"] - step_s))
            out(
                f"| {label} | {r['inserted'] + r['updated']:,} | +{after - before:,} | "
                f"{r['wall_s']:.2f} | {plain['wall_s']:.2f} | "
                f"{r['wall_s'] / plain['wall_s'] - 1:+.1%} | {t.get('names', 0):.2f} | "
                f"{step_s:.2f} |"
            )

        @contextmanager
        def copies(tag: str) -> Iterator[dict[str, tuple[URL, str]]]:
            """Per side, a copy of the warehouse as the first sync left it and a simulator."""
            with ExitStack() as stack:
                yield {
                    side: (
                        stack.enter_context(clone(db, f"{tag}_{side}")),
                        stack.enter_context(simulator(args.jobs, args.orgs, start)),
                    )
                    for side in SIDES
                }

        for n in range(args.daily):
            with copies(f"d{n}") as sides:
                pair("after 24 h (all jobs ran)", 24.0, sides)
        if args.hourly:
            with copies("h") as sides:
                # Catch up untimed to `hourly` hours before the real now, then one hour at a time.
                for side, (side_db, side_url) in sides.items():
                    httpx.post(
                        f"{side_url}/_sim/advance",
                        params={"hours": 24 - args.hourly},
                        timeout=300,
                    )
                    sync(side_db, side_url, *SIDES[side])
                    vacuum(side_db)
                for _ in range(args.hourly):
                    pair("after 1 h", 1.0, sides)
        out("")
        for hours, label in ((24.0, "daily (all jobs ran)"), (1.0, "hourly")):
            if walls[hours]:
                added = [with_s / without_s - 1 for with_s, without_s in walls[hours]]
                with_all, without_all = (sum(side) for side in zip(*walls[hours], strict=True))
                means = with_all / without_all - 1
                out(
                    f"- {label}, {len(added)} A/B pairs: added median "
                    f"{statistics.median(added):+.1%} (range "
                    f"{min(added):+.1%} to {max(added):+.1%}; mean wall with / "
                    f"mean wall without {means:+.1%}); the reporting "
                    f"step is {statistics.median(share[hours]):.1%} of the rest of the sync "
                    "(median)"
                )
        out("")
        engine = create_engine(db)
        out(f"Queries (median and max of {args.repeat} runs after one warm-up, all rows fetched):")
        out("")
        out("| query | median ms | max ms | rows |")
        out("|---|---:|---:|---:|")
        with engine.connect() as conn:
            org = jobs[0]["organizationUid"]
            last_day = conn.execute(text("SELECT max(day) FROM vspc.sla_daily")).scalar_one()
            tz_end = datetime(last_day.year, last_day.month, last_day.day, tzinfo=UTC) + timedelta(
                days=1
            )
            queries: dict[str, tuple[str, dict[str, Any]]] = {
                "sla_daily, last 90 days, all organizations": (
                    "SELECT * FROM vspc.sla_daily WHERE day > "
                    "(SELECT max(day) FROM vspc.sla_daily) - 90",
                    {},
                ),
                "job_sla_current, all jobs": ("SELECT * FROM vspc.job_sla_current", {}),
                "computer_sla_current, all computers": (
                    "SELECT * FROM vspc.computer_sla_current",
                    {},
                ),
                "job_sla_at, all jobs, 36 h ago": (
                    "SELECT * FROM vspc.job_sla_at(now() - interval '36 hours')",
                    {},
                ),
                "job_runs, one organization, 30 days": (
                    "SELECT * FROM vspc.job_runs WHERE organization_uid = :org "
                    "AND started_at >= now() - interval '30 days'",
                    {"org": org},
                ),
            }
            organizations = [
                str(o)
                for o in conn.execute(
                    text("SELECT DISTINCT organization_uid FROM vspc.sla_daily_counts")
                ).scalars()
            ]
            for name, sql in dashboard_queries(tz_end, organizations).items():
                queries[name] = (sql, {})
            for name, (sql, params) in queries.items():
                median, worst, rows = measure(conn, sql, params, args.repeat)
                out(f"| {name} | {median:.1f} | {worst:.1f} | {rows:,} |")
            for by in ("organization", "day", "job", "computer"):
                times = []
                for _ in range(args.repeat + 1):
                    started = time.perf_counter()
                    report = sla_report(conn, by=by, days=30)
                    times.append((time.perf_counter() - started) * 1000)
                out(
                    f"| `vspc-etl report --by {by}` (30 days) | {statistics.median(times[1:]):.1f} "
                    f"| {max(times[1:]):.1f} | {len(report.rows):,} |"
                )
        out("")
        out("Settings changes (each recomputes every day of sla_daily_counts, in the UPDATE):")
        out("")
        out("| statement | s |")
        out("|---|---:|")
        for statement in (
            "UPDATE vspc.report_settings SET time_zone = 'Europe/Moscow'",
            "UPDATE vspc.report_settings SET time_zone = 'UTC'",
            "UPDATE vspc.sla_policy SET rpo_hours = 48 WHERE organization_uid IS NULL",
            "UPDATE vspc.sla_policy SET rpo_hours = 24 WHERE organization_uid IS NULL",
        ):
            with engine.begin() as conn:
                seconds = timed(lambda s=statement: conn.execute(text(s)))
            out(f"| `{statement}` | {seconds:.1f} |")
        engine.dispose()
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
