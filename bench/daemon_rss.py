"""Daemon memory over many runs: RSS of ``vspc-etl run`` after run 10 and after run 200.

    python bench/daemon_rss.py [--runs 200] [--jobs 500] [--page-size 100] [--interval 1]

Starts ``vspc-etl simulate`` (virtual time advancing every second, so runs insert and update)
and ``vspc-etl run`` as processes of their own on 127.0.0.1, against a throwaway database on
the PostgreSQL named by BENCH_DATABASE_URL (default postgres@127.0.0.1:5432). It reads the
daemon's resident set size from /proc after given numbers of successful runs, then stops it
with SIGTERM. Bounded: it gives up after runs x interval x 3 + 120 seconds. Prints a Markdown
table (copy it into bench/RESULTS.md).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL

from etl.db import migrate, normalize_url

API_KEY = "bench-api-key"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for process {pid}")


@contextmanager
def database() -> Iterator[URL]:
    server = normalize_url(
        os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    )
    name = f"vspc_etl_bench_rss_{uuid.uuid4().hex[:8]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        url = server.set(database=name)
        migrate(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def process(cmd: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def wait_until(check: Callable[[], bool], deadline: float, what: str) -> None:
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise SystemExit(f"gave up waiting for {what}")


def successes(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                text("SELECT count(*) FROM vspc.etl_runs WHERE status = 'success'")
            ).scalar_one()
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--page-size", type=int, default=100)
    parser.add_argument("--interval", type=int, default=1)
    args = parser.parse_args()
    checkpoints = sorted({1, 10, *range(50, args.runs + 1, 50), args.runs})
    deadline = time.monotonic() + args.runs * args.interval * 3 + 120
    work = Path(tempfile.mkdtemp(prefix="vspc-etl-rss-"))
    sim_port, http_port = free_port(), free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("VSPC_", "SYNC_"))}
    sim_cmd = [sys.executable, "-m", "etl", "simulate", "--port", str(sim_port)]
    sim_cmd += ["--jobs", str(args.jobs), "--api-key", API_KEY, "--advance-every", "1"]
    sim_cmd += ["--advance-hours", "2"]
    rows: list[tuple[int, int, int, float]] = []
    with database() as url, process(sim_cmd, base, work / "sim.log"):
        sim_url = f"http://127.0.0.1:{sim_port}"

        def sim_up() -> bool:
            try:
                return httpx.get(f"{sim_url}/_sim/stats", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(sim_up, deadline, "the simulator")
        env = base | {
            "DATABASE_URL": url.render_as_string(hide_password=False),
            "VSPC_URL": sim_url,
            "VSPC_API_KEY": API_KEY,
            "VSPC_SOURCE": "bench",
            "VSPC_PAGE_SIZE": str(args.page_size),
            "SYNC_INTERVAL": str(args.interval),
            "SYNC_JITTER": "0",
            "HTTP_HOST": "127.0.0.1",
            "HTTP_PORT": str(http_port),
            "LOG_FORMAT": "json",
        }
        engine = create_engine(url)
        started = time.monotonic()
        cmd = [sys.executable, "-m", "etl", "run"]
        with process(cmd, env, work / "daemon.log") as daemon:
            for checkpoint in checkpoints:
                reached = lambda c=checkpoint: successes(engine) >= c  # noqa: E731
                wait_until(reached, deadline, f"run {checkpoint}")
                rows.append(
                    (checkpoint, rss_kib(daemon.pid), rss_kib(daemon.pid, "VmHWM"),
                     time.monotonic() - started)
                )  # fmt: skip
                print(f"run {checkpoint}: RSS {rows[-1][1] / 1024:.1f} MiB", file=sys.stderr)
            daemon.send_signal(signal.SIGTERM)
            code = daemon.wait(timeout=120)
        with engine.connect() as conn:
            by_status = dict(
                conn.execute(
                    text("SELECT status, count(*) FROM vspc.etl_runs GROUP BY status")
                ).all()
            )
        engine.dispose()
    first = next(r for r in rows if r[0] == 10)
    last = rows[-1]
    print(f"\n{args.jobs} jobs, page size {args.page_size}, SYNC_INTERVAL={args.interval}")
    print(f"etl_runs: {by_status}; daemon exit code after SIGTERM: {code}\n")
    print("| after run | RSS (MiB) | peak RSS (MiB) | elapsed (s) |")
    print("|---:|---:|---:|---:|")
    for run, rss, peak, elapsed in rows:
        print(f"| {run} | {rss / 1024:.1f} | {peak / 1024:.1f} | {elapsed:.0f} |")
    growth = (last[1] - first[1]) / 1024
    print(f"\nRSS run {last[0]} - run 10: {growth:+.1f} MiB ({growth * 1024 / first[1]:+.1%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
