"""Soak: hundreds of consecutive syncs against a console that changes and fails at random.

    python bench/soak.py [--runs 300] [--jobs 500] [--page-size 50] [--rate 0.1] [--seed 1]

One in-process simulator on 127.0.0.1 whose jobs change between runs (virtual hours pass: jobs
run, are added and deleted), failing ``--rate`` of all requests (jobs pages, token, agents,
organizations, async polls) with 401, 429, 520, a reset connection or a 202 async detour. Each
run is ``run_once`` (password grant, retry waits skipped) on a throwaway database on the
PostgreSQL named by BENCH_DATABASE_URL (default postgres@127.0.0.1:5432). After every run the
invariant checker must pass, and after every complete run the live jobs must equal the
console's truth; at the end the warehouse must equal the truth. Prints a Markdown summary (copy
it into bench/RESULTS.md); exits 1 if any violation or lost job was seen.

``soak()`` is also the short soak of the test suite (tests/test_soak.py).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from etl.config import load_settings  # noqa: E402
from etl.pipeline import run_once  # noqa: E402
from etl.simulator import Simulator, SimulatorServer  # noqa: E402
from etl.verify import check_invariants  # noqa: E402

FAULTS = ("401", "429", "520", "reset", "202")
USER, PASSWORD = "soak-user", "soak-password-4c1e"


@dataclass
class SoakReport:
    """What a soak saw: runs, faults, violations, jobs lost after complete runs and at the end."""

    runs: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    complete: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    violations: list[str] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)  # why runs failed
    lost: int = 0
    final_lost: int = 0
    final_jobs: int = 0
    versions: int = 0
    seconds: float = 0.0

    @property
    def clean(self) -> bool:
        return not self.violations and self.lost == 0 and self.final_lost == 0

    def markdown(self, title: str) -> str:
        statuses = ", ".join(f"{n} {s}" for s, n in sorted(self.statuses.items()))
        faults = ", ".join(f"{k}: {n}" for k, n in sorted(self.faults.items()))
        return "\n".join(
            [
                f"| {title} | value |",
                "|---|---:|",
                f"| runs | {self.runs} ({statuses}; {self.complete} complete) |",
                f"| requests to the console | {self.requests} |",
                f"| faults injected | {sum(self.faults.values())} ({faults}) |",
                f"| invariant violations | {len(self.violations)} |",
                f"| jobs lost after complete runs | {self.lost} |",
                f"| jobs lost at the end | {self.final_lost} of {self.final_jobs} |",
                f"| versions written | {self.versions} |",
                f"| wall time | {self.seconds:.0f} s |",
                *(f"\nfailed {n} time(s): {error}" for error, n in self.errors.items()),
            ]
        )


def live_raw(engine: Engine) -> dict[str, object]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT instance_uid::text, raw FROM vspc.backup_agent_jobs "
                "WHERE deleted_at IS NULL"
            )
        ).all()
    return {uid: raw for uid, raw in rows}


def lost(engine: Engine, sim: Simulator) -> int:
    """Jobs of the console missing from the live rows or stored differently, plus phantoms."""
    live = live_raw(engine)
    truth = {job["instanceUid"].lower(): job for job in sim.every_job()}
    missing = sum(1 for uid, job in truth.items() if live.get(uid) != job)
    return missing + len(set(live) - set(truth))


def soak(
    engine: Engine,
    database_url: URL,
    *,
    runs: int,
    jobs: int,
    page_size: int,
    rate: float = 0.1,
    seed: int = 1,
    hours: float = 6.0,
) -> SoakReport:
    """``runs`` syncs with ``hours`` of virtual time between them; see the module docstring."""
    report = SoakReport()
    started = time.monotonic()
    sim = Simulator(jobs=jobs, seed=seed, users={USER: PASSWORD}, api_keys=(), token_ttl=30)
    sim.faults.random(rate, FAULTS, seed=seed, path="any")
    no_sleep = lambda _seconds: None  # noqa: E731 - retry waits are not what is soaked
    with SimulatorServer(sim) as server:
        settings = load_settings(
            environ={
                "DATABASE_URL": database_url.render_as_string(hide_password=False),
                "VSPC_URL": server.url,
                "VSPC_USERNAME": USER,
                "VSPC_PASSWORD": PASSWORD,
                "VSPC_SOURCE": "soak",
                "VSPC_PAGE_SIZE": str(page_size),
                "VSPC_TIMEOUT": "10",
            },
            dotenv=False,
        )
        for number in range(1, runs + 1):
            result = run_once(settings, engine=engine, sleep=no_sleep)
            report.runs += 1
            report.statuses[result.status] += 1
            if result.status == "failed":
                report.errors[str(result.error)] += 1
            report.violations += [f"after run {number}: {v}" for v in check_invariants(engine)]
            if result.status == "success" and result.complete:
                report.complete += 1
                report.lost += lost(engine, sim)
            if number < runs:
                sim.advance(hours)
        # The last run may have met a fault it could not get past: the next ones catch up.
        for _ in range(5):
            if result.status == "success" and result.complete:
                break
            result = run_once(settings, engine=engine, sleep=no_sleep)
            report.runs += 1
            report.statuses[result.status] += 1
            report.violations += [f"catch-up run: {v}" for v in check_invariants(engine)]
        stats = sim.stats.snapshot()
        report.faults.update(stats["faults"])
        report.requests = sum(n for k, n in stats["requests"].items() if k != "control")
        report.final_lost = lost(engine, sim)
        report.final_jobs = len(sim.every_job())
    with engine.connect() as conn:
        report.versions = int(
            conn.execute(text("SELECT count(*) FROM vspc.backup_agent_job_snapshots")).scalar_one()
        )
    report.seconds = time.monotonic() - started
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--page-size", type=int, default=50)
    parser.add_argument("--rate", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    from etl.db import migrate, normalize_url
    from tests.conftest import create_database, drop_database

    server = normalize_url(
        os.environ.get(
            "BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
        )
    )
    url = create_database(server, "vspc_soak")
    try:
        migrate(url)
        engine = create_engine(url)
        try:
            report = soak(
                engine,
                url,
                runs=args.runs,
                jobs=args.jobs,
                page_size=args.page_size,
                rate=args.rate,
                seed=args.seed,
            )
        finally:
            engine.dispose()
    finally:
        drop_database(server, url)
    title = (
        f"soak: {args.runs} runs, {args.jobs} jobs, page size {args.page_size}, "
        f"{args.rate:.0%} faults, seed {args.seed}"
    )
    print(report.markdown(title))
    for violation in report.violations[:20]:
        print(f"- {violation}")
    return 0 if report.clean else 1


if __name__ == "__main__":
    sys.exit(main())
