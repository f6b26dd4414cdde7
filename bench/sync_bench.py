"""Sync throughput and memory: the simulator and PostgreSQL on loopback, one ETL process per run.

    python bench/sync_bench.py --jobs 10000 100000 1000000 [--latency 0.1] [--concurrency 4]

For each size it starts ``vspc-etl simulate`` in a process of its own, creates a throwaway
database on the PostgreSQL named by BENCH_DATABASE_URL (default postgres@127.0.0.1:5432, else an
embedded one), and runs, each in a fresh ETL process (``bench/_sync_worker.py``):
  first     - first sync into an empty warehouse
  changed   - re-sync after 10 % of the jobs changed
  unchanged - re-sync with nothing changed
  latency   - (with --latency) a first sync against a second simulator adding that many seconds
              per page, compared with the bound pages x latency / concurrency
Prints a Markdown table (copy it into bench/RESULTS.md). All traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL

from etl.db import migrate, normalize_url

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "bench-api-key"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def simulator(jobs: int, latency: float, timeout: float = 900) -> Iterator[str]:
    """A ``vspc-etl simulate`` process; yields its base URL once it answers."""
    port = free_port()
    cmd = [sys.executable, "-m", "etl", "simulate", "--port", str(port), "--jobs", str(jobs)]
    cmd += ["--seed", "1", "--api-key", API_KEY, "--latency", str(latency)]
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
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@contextmanager
def database() -> Iterator[URL]:
    admin = normalize_url(
        os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    )
    name = f"vspc_etl_bench_{uuid.uuid4().hex[:8]}"
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


def sync(db: URL, vspc_url: str, concurrency: int) -> dict[str, Any]:
    env = dict(
        os.environ,
        DATABASE_URL=db.render_as_string(hide_password=False),
        VSPC_URL=vspc_url,
        VSPC_API_KEY=API_KEY,
        VSPC_CONCURRENCY=str(concurrency),
        VSPC_SOURCE="bench",
        LOG_LEVEL="WARNING",
    )
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "_sync_worker.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"sync failed: {proc.stdout}{proc.stderr}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def row(jobs: int, case: str, r: dict[str, Any], note: str = "") -> str:
    t = r["timings"]
    return (
        f"| {jobs:,} | {case} | {r['wall_s']:.2f} | {r['seen'] / r['wall_s']:,.0f} | "
        f"{r['peak_rss_mb']:.0f} | {t.get('http_wait', 0):.2f} | {t.get('transform', 0):.2f} | "
        f"{t.get('copy', 0):.2f} | {t.get('merge', 0):.2f} | {note} |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--latency-jobs", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()

    print(
        "| jobs | case | wall s | jobs/s | peak RSS MB | http wait s | transform s | COPY s "
        "| merge s | note |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---|")
    first_by_size: dict[int, dict[str, Any]] = {}
    for jobs in args.jobs:
        with simulator(jobs, 0.0) as url, database() as db:
            first = sync(db, url, args.concurrency)
            first_by_size[jobs] = first
            print(row(jobs, "first sync", first), flush=True)
            httpx.post(f"{url}/_sim/touch", params={"fraction": 0.1}, timeout=600)
            changed = sync(db, url, args.concurrency)
            print(row(jobs, "10 % changed", changed, f"{changed['updated']:,} updated"), flush=True)
            same = sync(db, url, args.concurrency)
            print(row(jobs, "unchanged", same, f"{same['unchanged']:,} unchanged"), flush=True)
    if args.latency:
        jobs = args.latency_jobs
        with simulator(jobs, args.latency) as url, database() as db:
            slow = sync(db, url, args.concurrency)
        bound = slow["pages"] * args.latency / args.concurrency
        base = first_by_size.get(jobs)
        note = f"bound {bound:.1f} s"
        if base is not None:
            target = 1.3 * bound + base["wall_s"]
            note += f"; target 1.3 x bound + {base['wall_s']:.1f} s = {target:.1f} s"
        print(row(jobs, f"+{args.latency * 1000:.0f} ms/page", slow, note), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
