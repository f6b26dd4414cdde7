"""Sync throughput and memory: the simulator and PostgreSQL on loopback, one ETL process per run.

    python bench/sync_bench.py --jobs 10000 100000 1000000 [--latency 0.1] [--concurrency 4]
                               [--repeat N] [--baseline DIR] [--start now|ISO]

For each size it starts ``vspc-etl simulate`` in a process of its own, creates a throwaway
database on the PostgreSQL named by BENCH_DATABASE_URL (default postgres@127.0.0.1:5432, else an
embedded one), and runs, each in a fresh ETL process (``bench/_sync_worker.py``):
  first     - first sync into an empty warehouse
  changed   - re-sync after 10 % of the jobs changed
  unchanged - re-sync with nothing changed
  latency   - (with --latency) a first sync against a second simulator adding that many seconds
              to every request (three platforms' jobs, the name collections and the restore
              points), compared with
              1.3 x (all pages of all collections x latency / concurrency) + the first sync's
              wall time without latency
With ``--baseline DIR`` (a checkout of an earlier commit, e.g. ``git worktree add DIR REV``)
every case runs with both ETLs, each on a simulator and database of its own, the two sides
alternating who goes first: the note compares them within one run, on one machine (wall time,
and the CPU time of the whole ETL process, start and imports included).
Both sides then do the same work: the Windows jobs and the organizations, what the loader's
baseline (``0ce179c``) read. The simulators serve the Windows platform only and refuse (404) the
collections the baseline did not read (``LIKE_BASELINE_REFUSED``) and the backup agents, which
the two sides read from different endpoints (the baseline ``/backupAgents/windows``, without
computer names; this code ``/backupAgents``, four times the bytes per agent); this side syncs
with ``VSPC_PLATFORMS=windows``. Each side asks once for each refused collection and skips it.
Each sync starts after a CHECKPOINT, as a production sync does (see :func:`checkpoint`).
With ``--repeat N`` each size's three cases run N times, each time on a new database, and a
last table gives each case's median and range (one run of a case scatters by 10-20 % here).
Prints a Markdown table (copy it into bench/RESULTS.md). All traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL

from etl.db import migrate, normalize_url
from etl.simulator.data import DEFAULT_START

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "bench-api-key"
# Collections the ETL reads that the loader's baseline did not (its management agents and
# restore points): refused in a comparison with it, so both sides do the same work.
LIKE_BASELINE_REFUSED = (
    "/api/v3/infrastructure/managementAgents",
    "/api/v3/protectedWorkloads",
)
# The simulator's endpoints of the backup agents: each side reads one of them, not the same.
LIKE_BASELINE_FAULTED = ("agents", "backup_agents")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def simulator(
    jobs: int,
    latency: float,
    like_baseline: bool = False,
    timeout: float = 900,
    start: datetime | None = None,
) -> Iterator[str]:
    """A ``vspc-etl simulate`` process; yields its base URL once it answers. ``like_baseline``:
    a console with the Windows platform only, without the collections the baseline did not
    read and without backup agents; ``start``: its clock at start (the simulator's default
    if None)."""
    port = free_port()
    cmd = [sys.executable, "-m", "etl", "simulate", "--port", str(port), "--jobs", str(jobs)]
    cmd += ["--seed", "1", "--api-key", API_KEY, "--latency", str(latency)]
    if start is not None:
        cmd += ["--start", start.isoformat()]
    if like_baseline:
        cmd += ["--platforms", "windows"]
        for prefix in LIKE_BASELINE_REFUSED:
            cmd += ["--refuse", prefix]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"{url}/_sim/stats", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the simulator for {jobs} jobs did not start")
            time.sleep(0.5)
        if like_baseline:
            for endpoint in LIKE_BASELINE_FAULTED:
                fault = {"kind": "404", "path": endpoint, "times": None}
                httpx.post(f"{url}/_sim/faults", json=fault, timeout=60).raise_for_status()
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:  # a million jobs on a slow day: it may not be quick
            proc.kill()
            proc.wait(timeout=30)


@contextmanager
def database(code: Path = ROOT) -> Iterator[URL]:
    """A throwaway database with the schema of the ETL in ``code`` (its own migrations: a
    baseline's side runs on the schema it was written for)."""
    admin = normalize_url(
        os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    )
    name = f"vspc_etl_bench_{uuid.uuid4().hex[:8]}"
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin.set(database=name)
    try:
        if code == ROOT:
            migrate(url)
        else:
            subprocess.run(
                [sys.executable, "-c", _MIGRATE, url.render_as_string(hide_password=False)],
                env=dict(os.environ, PYTHONPATH=str(code)),
                cwd=code,
                check=True,
                capture_output=True,
                timeout=600,
            )
        yield url
    finally:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


_MIGRATE = (
    "import sys; from etl.db import migrate, normalize_url; migrate(normalize_url(sys.argv[1]))"
)


def autocommit(db: URL, statement: str) -> None:
    """Run one statement that cannot run inside a transaction block."""
    engine = create_engine(db, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(statement))
    engine.dispose()


def checkpoint(db: URL) -> None:
    """What a production sync finds: PostgreSQL checkpoints every few minutes (5 by default),
    so an hourly or daily sync is the first to touch each page since the last one, and writes a
    full-page image of it to the WAL. Without this, back-to-back benchmark syncs would not, and
    a checkpoint the previous sync's writes started would slow whichever sync came next."""
    autocommit(db.set(database="postgres"), "CHECKPOINT")


def sync(
    db: URL,
    vspc_url: str,
    concurrency: int,
    code: Path = ROOT,
    like_baseline: bool = False,
    **extra: str,
) -> dict[str, Any]:
    """One sync by the ETL in ``code`` (this checkout, or a baseline's) in a process of its own;
    ``like_baseline``: the Windows jobs only, as the baseline read them; ``extra``: more
    environment variables."""
    env = dict(
        os.environ,
        DATABASE_URL=db.render_as_string(hide_password=False),
        VSPC_URL=vspc_url,
        VSPC_API_KEY=API_KEY,
        VSPC_CONCURRENCY=str(concurrency),
        VSPC_SOURCE="bench",
        LOG_LEVEL="WARNING",
        PYTHONPATH=str(code),
        **extra,
    )
    if like_baseline:
        env["VSPC_PLATFORMS"] = "windows"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(
        [sys.executable, str(code / "bench" / "_sync_worker.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"sync failed: {proc.stdout}{proc.stderr}")
    figures = dict(json.loads(proc.stdout.strip().splitlines()[-1]))
    # The whole worker's CPU time (start and imports included), counted alike for either side.
    figures["process_cpu_s"] = (after.ru_utime + after.ru_stime) - (
        before.ru_utime + before.ru_stime
    )
    return figures


def row(jobs: int, case: str, r: dict[str, Any], note: str = "") -> str:
    t = r["timings"]
    return (
        f"| {jobs:,} | {case} | {r['wall_s']:.2f} | {r['seen'] / r['wall_s']:,.0f} | "
        f"{r['peak_rss_mb']:.0f} | {t.get('http_wait', 0):.2f} | {t.get('transform', 0):.2f} | "
        f"{t.get('copy', 0):.2f} | {t.get('merge', 0):.2f} | {note} |"
    )


def calibration() -> float:
    """Seconds for a fixed pure-Python loop: how fast this machine is today (shared hosts vary
    by 2x from one day to the next; compare figures from runs with similar calibration)."""
    started = time.perf_counter()
    total = 0
    for i in range(10_000_000):
        total += i
    return time.perf_counter() - started


def console_start(value: str) -> datetime:
    """``--start``: 'now' (to the minute), or an ISO-8601 instant with its offset."""
    if value == "now":
        return datetime.now(UTC).replace(second=0, microsecond=0)
    try:
        start = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is neither 'now' nor an ISO-8601 instant"
        ) from None
    if start.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{value!r} has no UTC offset (add Z or +HH:MM)")
    return start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--latency-jobs", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run each size's three cases this many times, each time on a new database (the "
        "simulator stays), and end with the median and range of each case's wall seconds",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="a checkout of an earlier commit (git worktree add DIR REV): every case also runs "
        "with its ETL, on a simulator and database of its own, the two sides alternating",
    )
    parser.add_argument(
        "--start",
        type=console_start,
        help="the simulators' clock when they start: 'now' or an ISO-8601 instant (default: the "
        f"simulator's own fixed start, {DEFAULT_START:%Y-%m-%d}, whatever today is)",
    )
    args = parser.parse_args()
    sides: list[tuple[str, Path]] = [("", ROOT)]
    if args.baseline is not None:
        sides = [("this", ROOT), ("baseline", args.baseline.resolve())]
    like_baseline = args.baseline is not None

    print(f"CPU calibration: {calibration():.2f} s for 10 million loop iterations\n")
    print(
        "| jobs | case | wall s | jobs/s | peak RSS MB | http wait s | transform s | COPY s "
        "| merge s | note |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---|")
    walls: dict[tuple[int, str], list[float]] = {}
    step = 0

    def run_case(
        jobs: int, case: str, places: dict[str, tuple[str, URL]], note: Callable[[Any], str]
    ) -> None:
        nonlocal step
        order = sides if step % 2 == 0 else sides[::-1]  # neither side always goes first
        step += 1
        results = {}
        for name, code in order:
            vspc_url, db = places[name]
            checkpoint(db)
            results[name] = sync(db, vspc_url, args.concurrency, code, like_baseline)
        walls.setdefault((jobs, case), []).append(results[sides[0][0]]["wall_s"])
        for name, _ in sides:
            r = results[name]
            label = f"{case} ({name})" if name else case
            extra = note(r)
            if name == "this" and len(sides) > 1:
                theirs = results["baseline"]
                ratio = r["wall_s"] / theirs["wall_s"]
                cpu = r["process_cpu_s"] / theirs["process_cpu_s"]
                versus = f"{ratio:.2f} x baseline, CPU {cpu:.2f} x"
                extra = f"{extra}; {versus}" if extra else versus
            print(row(jobs, label, r, extra), flush=True)

    for jobs in args.jobs:
        with ExitStack() as stack:
            sims = {
                name: stack.enter_context(simulator(jobs, 0.0, like_baseline, start=args.start))
                for name, _ in sides
            }
            for _ in range(args.repeat):
                with ExitStack() as rep:
                    places = {
                        name: (sims[name], rep.enter_context(database(code)))
                        for name, code in sides
                    }
                    run_case(jobs, "first sync", places, lambda r: f"{r['inserted']:,} inserted")
                    for url in sims.values():
                        httpx.post(f"{url}/_sim/touch", params={"fraction": 0.1}, timeout=600)
                    run_case(jobs, "10 % changed", places, lambda r: f"{r['updated']:,} updated")
                    run_case(jobs, "unchanged", places, lambda r: f"{r['unchanged']:,} unchanged")
    if args.latency:
        jobs = args.latency_jobs
        firsts = walls.get((jobs, "first sync"))
        base = statistics.median(firsts) if firsts else None

        def bound_note(r: dict[str, Any]) -> str:
            # Every page of every collection (three platforms' jobs, organizations, agents,
            # management agents, restore points) waits out the latency: the requests the
            # simulator answered.
            stats = httpx.get(f"{latency_sim}/_sim/stats", timeout=60).json()["requests"]
            read = {
                e: n
                for e, n in stats.items()
                if e not in ("token", "unknown", "refused", "control")
            }
            pages = sum(read.values())
            bound = pages * args.latency / args.concurrency
            note = f"{pages} pages of {len(read)} collections; bound {bound:.2f} s"
            if base is not None:
                target = 1.3 * bound + base
                note += f"; target 1.3 x bound + {base:.2f} s = {target:.2f} s"
                note += "; met" if r["wall_s"] <= target else "; MISSED"
            return note

        with ExitStack() as stack:
            places = {
                name: (
                    stack.enter_context(
                        simulator(jobs, args.latency, like_baseline, start=args.start)
                    ),
                    stack.enter_context(database(code)),
                )
                for name, code in sides
            }
            latency_sim = places[sides[0][0]][0]
            run_case(jobs, f"+{args.latency * 1000:.0f} ms/request", places, bound_note)
    if args.repeat > 1:
        print("\n| jobs | case | runs | median wall s | min | max |")
        print("|---:|---|---:|---:|---:|---:|")
        for (jobs, case), values in walls.items():
            print(
                f"| {jobs:,} | {case} | {len(values)} | {statistics.median(values):.2f} | "
                f"{min(values):.2f} | {max(values):.2f} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
