"""Chaos, many times over: kill -9 at random moments, PostgreSQL restarts and killed sessions,
a console that hangs, trickles or resets. After each blow: the old state or the new one, never
a mix; the invariant checker clean (but for the orphan the blow left); the next run (a full
read of the restore points) succeeds and the warehouse equals the console's truth, its live
restore points included.

    python bench/chaos.py [--kills 60] [--restarts 10] [--terminates 10] [--console 9] [--seed 1]
                          [--first-syncs]

Syncs that get killed are ``python -m etl sync`` processes; a kill lands after a random delay
or at a point of the test hook (``VSPC_ETL_TEST_PAUSE``: inside a COPY, inside the merge, just
before COMMIT). Restarts use a private embedded PostgreSQL (pgserver) in a temporary directory,
never the shared server. Prints Markdown (copy it into bench/RESULTS.md); exits 1 on any
violation, mix or lost job. All traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from etl.config import Settings, load_settings  # noqa: E402
from etl.db import make_engine, migrate, normalize_url  # noqa: E402
from etl.pipeline import RunResult, run_once  # noqa: E402
from etl.simulator import Simulator, SimulatorServer  # noqa: E402
from etl.testhook import VARIABLE  # noqa: E402
from etl.verify import check_invariants  # noqa: E402
from tests.conftest import create_database, drop_database  # noqa: E402
from tests.warehouse import (  # noqa: E402
    content,
    lost_jobs,
    lost_points,
    sync_backends,
    wait_for,
)

API_KEY = "chaos-api-key"


@dataclass
class Tally:
    """One scenario's outcomes."""

    blows: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)
    lost: int = 0
    points_lost: int = 0

    def row(self, name: str) -> str:
        outcomes = ", ".join(f"{n} {k}" for k, n in sorted(self.outcomes.items()))
        return (
            f"| {name} | {self.blows} | {outcomes} | {len(self.violations)} | {self.lost} | "
            f"{self.points_lost} |"
        )


def no_sleep(_seconds: float) -> None:
    """Retry waits are skipped: the blows are the subject, not the backoff."""


def settings_for(url: URL, server: SimulatorServer, **extra: str) -> Settings:
    environ = {
        "DATABASE_URL": url.render_as_string(hide_password=False),
        "VSPC_URL": server.url,
        "VSPC_API_KEY": API_KEY,
        "VSPC_SOURCE": "chaos",
        "VSPC_PAGE_SIZE": "20",
        **extra,
    }
    return load_settings(environ=environ, dotenv=False)


def recover(tally: Tally, settings: Settings, engine: Engine, sim: Simulator, what: str) -> None:
    """The next run must succeed and leave a sound warehouse equal to the truth: a full read
    of the restore points too, so that the live points must equal the console's."""
    sim.latency = 0.0
    full = settings.model_copy(update={"vspc_restore_points_full_every": 0})
    result = run_once(full, engine=engine, sleep=no_sleep)
    if result.status != "success" or not result.complete:
        tally.violations.append(f"{what}: the next run was {result.status}: {result.error}")
    tally.violations += [f"{what}, after the next run: {v}" for v in check_invariants(engine)]
    tally.lost += lost_jobs(engine, sim.every_job())
    tally.points_lost += points_lost(result, engine, sim)


def points_lost(result: RunResult, engine: Engine, sim: Simulator) -> int:
    """After a run that read the restore points completely: the console's points the
    warehouse lacks, and after a complete full read also the live points it no longer lists."""
    points = result.points
    if result.status != "success" or points is None or not points.complete:
        return 0
    return lost_points(engine, sim.world.restore_points(), exact=points.gone is not None)


def forget(engine: Engine) -> None:
    """Empty what the syncs wrote (their runs aside): the next sync is a first sync again."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "TRUNCATE vspc.backup_agent_jobs, vspc.backup_agent_job_snapshots, "
                "vspc.etl_rejects, vspc.job_run_facts, vspc.sla_daily_counts, "
                "vspc.organizations, vspc.backup_agents, vspc.etl_job_fingerprints, "
                "vspc.etl_name_pages, vspc.restore_points"
            )
        )


def run_status(engine: Engine, run_id: int) -> str | None:
    with engine.connect() as conn:
        return conn.execute(
            text("SELECT status FROM vspc.etl_runs WHERE run_id = :r"), {"r": run_id}
        ).scalar()


def last_run_id(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(text("SELECT coalesce(max(run_id), 0) FROM vspc.etl_runs")).scalar()
        )


def kills(
    count: int,
    rng: random.Random,
    url: URL,
    sim: Simulator,
    server: SimulatorServer,
    first: bool = False,
) -> Tally:
    tally = Tally()
    settings = settings_for(url, server)
    engine = create_engine(url)
    workdir = Path(tempfile.mkdtemp(prefix="chaos-kill-"))
    env = dict(
        os.environ,
        DATABASE_URL=url.render_as_string(hide_password=False),
        VSPC_URL=server.url,
        VSPC_API_KEY=API_KEY,
        VSPC_SOURCE="chaos",
        VSPC_PAGE_SIZE="20",
        LOG_LEVEL="WARNING",
    )
    try:
        run_once(settings, engine=engine, sleep=no_sleep)
        for number in range(count):
            sim.advance(rng.choice([6, 24]))
            if first:
                forget(engine)
            old, before = content(engine), last_run_id(engine)
            point = rng.choice(["moment", "moment", "copy", "merge", "commit"])
            marker = workdir / f"{number}.paused"
            extra = {VARIABLE: f"{point}:{marker}"} if point != "moment" else {}
            sim.latency = rng.choice([0.05, 0.1, 0.2])  # 15 pages, 4 at a time
            proc = subprocess.Popen(
                [sys.executable, "-m", "etl", "sync", "--no-progress"],
                env=env | extra,
                cwd=workdir,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if point == "moment":
                time.sleep(rng.uniform(0.5, 2.0))  # the process needs ~0.7 s to start
            else:
                wait_for(marker.exists, 60, f"the sync to reach {point}")
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            tally.blows += 1
            wait_for(lambda: sync_backends(engine) == 0, 30, "the killed session to end")
            status = run_status(engine, before + 1)
            state = content(engine)
            where = point if point != "moment" else "a random moment"
            violations = check_invariants(engine)
            if status == "success":
                kind = f"at {where}, after its commit: new state"
                tally.lost += lost_jobs(engine, sim.every_job())  # the new state is the truth
            elif state != old:
                kind = f"at {where}: MIXED STATE"
                tally.violations.append(f"kill {number} at {where}: a mix of old and new")
            elif status == "running":
                kind = f"at {where}, mid-run: old state"
                # the orphan the kill left is expected (the checker must see it), and is the
                # next run's to mark failed
                orphan = [v for v in violations if v.subject == f"run {before + 1}"]
                if len(orphan) != 1:
                    tally.violations.append(f"kill {number}: the checker missed the orphan")
                violations = [v for v in violations if v not in orphan]
            else:
                kind = f"at {where}, before its run began: old state"
            tally.outcomes[kind] += 1
            tally.violations += [f"kill {number}: {v}" for v in violations]
            recover(tally, settings, engine, sim, f"kill {number}")
    finally:
        engine.dispose()
    return tally


def in_background(settings: Settings, engine: Engine) -> tuple[threading.Thread, list[RunResult]]:
    results: list[RunResult] = []
    thread = threading.Thread(
        target=lambda: results.append(run_once(settings, engine=engine, sleep=no_sleep))
    )
    thread.start()
    return thread, results


def database_blows(
    count: int,
    rng: random.Random,
    url: URL,
    sim: Simulator,
    server: SimulatorServer,
    blow: Any,
    first: bool = False,
) -> Tally:
    """``blow(engine)`` strikes at a random moment of a run in progress; it must fail cleanly."""
    tally = Tally()
    settings = settings_for(url, server)
    engine = make_engine(settings)
    try:
        run_once(settings, engine=engine, sleep=no_sleep)
        for number in range(count):
            sim.advance(24)
            if first:
                forget(engine)
            old = content(engine)
            sim.latency = 0.05
            start = sim.stats.snapshot()["requests"].get("jobs", 0)
            thread, results = in_background(settings, engine)
            target = start + rng.randint(1, 8)
            wait_for(
                lambda target=target: sim.stats.snapshot()["requests"].get("jobs", 0) >= target,
                60,
                "paging",
            )
            blow(engine)
            thread.join(120)
            tally.blows += 1
            result = results[0]
            if result.status == "failed" and content(engine) == old:
                tally.outcomes["failed cleanly: old state"] += 1
            elif result.status == "success":
                tally.outcomes["finished before the blow: new state"] += 1
            else:
                tally.violations.append(f"blow {number}: {result.status} and the state changed")
            tally.violations += [
                f"blow {number}: {v}"
                for v in check_invariants(engine)
                if v.invariant != "run_finished"
            ]
            recover(tally, settings, engine, sim, f"blow {number}")
    finally:
        engine.dispose()
    return tally


def console_blows(count: int, url: URL, sim: Simulator, server: SimulatorServer) -> Tally:
    """A console that hangs, trickles beyond the timeout, or resets, for good: bounded, clear."""
    tally = Tally()
    settings = settings_for(url, server, VSPC_TIMEOUT="0.5", VSPC_MAX_ATTEMPTS="3")
    engine = create_engine(url)
    kinds = [("hang", {"seconds": 30.0}), ("slow", {"seconds": 30.0}), ("reset", {})]
    try:
        for number in range(count):
            kind, params = kinds[number % len(kinds)]
            old = content(engine)
            start = sim.stats.snapshot()["requests"].get("jobs", 0)
            sim.faults.add(kind, path="jobs", times=None, **params)
            result = run_once(settings, engine=engine, sleep=no_sleep)
            sim.faults.clear()
            tally.blows += 1
            asked = sim.stats.snapshot()["requests"].get("jobs", 0) - start
            if (
                result.status == "failed"
                and asked == 3
                and result.error
                and "gave up after 3 attempts" in result.error
                and content(engine) == old
            ):
                tally.outcomes[f"{kind}: failed after 3 requests, readable error"] += 1
            else:
                tally.violations.append(
                    f"{kind}: {result.status}, {asked} requests: {result.error}"
                )
            tally.violations += [f"{kind}: {v}" for v in check_invariants(engine)]
            recover(tally, settings, engine, sim, kind)
    finally:
        engine.dispose()
    return tally


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=60)
    parser.add_argument("--restarts", type=int, default=10)
    parser.add_argument("--terminates", type=int, default=10)
    parser.add_argument("--console", type=int, default=9)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--first-syncs",
        action="store_true",
        help="empty the warehouse before each kill and each terminated session: every blow "
        "strikes a first sync (whose new jobs are merged while the pages are read)",
    )
    args = parser.parse_args()
    rng = random.Random(args.seed)
    started = time.monotonic()
    shared = normalize_url(
        os.environ.get(
            "BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
        )
    )
    rows: list[str] = []
    clean = True
    first = ", first syncs" if args.first_syncs else ""
    sim = Simulator(jobs=300, seed=args.seed, api_keys=(API_KEY,))
    with SimulatorServer(sim) as server:
        url = create_database(shared, "vspc_chaos")
        try:
            migrate(url)
            tallies = {
                f"kill -9 of `vspc-etl sync` ({args.kills}{first})": kills(
                    args.kills, rng, url, sim, server, args.first_syncs
                ),
                f"pg_terminate_backend mid-run ({args.terminates}{first})": database_blows(
                    args.terminates, rng, url, sim, server, terminate, args.first_syncs
                ),
                f"console hangs / trickles / resets ({args.console})": console_blows(
                    args.console, url, sim, server
                ),
            }
        finally:
            drop_database(shared, url)
        tallies[f"PostgreSQL restarted mid-run ({args.restarts})"] = restarts(
            args.restarts, rng, sim, server
        )
    rows += [tally.row(name) for name, tally in tallies.items()]
    print("| scenario | blows | outcomes | invariant violations | jobs lost | points lost |")
    print("|---|---:|---|---:|---:|---:|")
    print("\n".join(rows))
    print(f"\n{time.monotonic() - started:.0f} s, seed {args.seed}")
    for tally in tallies.values():
        clean = clean and not tally.violations and tally.lost == 0 and tally.points_lost == 0
        for violation in tally.violations[:10]:
            print(f"- {violation}")
    return 0 if clean else 1


def terminate(engine: Engine) -> None:
    """End the sync's session, as an operator's pg_terminate_backend would."""
    from etl.load.runs import SYNC_LOCK_CLASS

    with engine.connect() as conn:
        conn.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' "
                "AND classid = CAST(:c AS bigint)::oid AND objid = hashtext('chaos')::oid "
                "AND objsubid = 2 AND granted"
            ),
            {"c": SYNC_LOCK_CLASS},
        )


def restarts(count: int, rng: random.Random, sim: Simulator, server: SimulatorServer) -> Tally:
    import pgserver
    from pgserver._commands import pg_ctl

    pgdata = Path(tempfile.mkdtemp(prefix="chaos-pgdata-"))
    pg = pgserver.get_server(pgdata, cleanup_mode="delete")
    try:
        url = create_database(normalize_url(pg.get_uri()), "chaos")
        migrate(url)

        def restart(_engine: Engine) -> None:
            pg_ctl(["-w", "-m", "fast", "restart"], pgdata=pg.pgdata, user=pg.system_user)

        return database_blows(count, rng, url, sim, server, restart)
    finally:
        pg.cleanup()


if __name__ == "__main__":
    sys.exit(main())
