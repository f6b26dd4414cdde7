"""Soak: hundreds of consecutive syncs against a console that changes and fails at random.

    python bench/soak.py [--runs 300] [--jobs 500] [--page-size 50] [--rate 0.1] [--seed 1]

One in-process simulator on 127.0.0.1 whose jobs change between runs (virtual hours pass: jobs
run, are added and deleted), failing ``--rate`` of all requests (jobs pages, token, agents,
organizations, async polls) with 401, 429, 520, a reset connection or a 202 async detour. Each
run is ``run_once`` (password grant, retry waits skipped) on a throwaway database on the
PostgreSQL named by BENCH_DATABASE_URL (default postgres@127.0.0.1:5432). After every run the
invariant checker must pass, and after every complete run the live jobs must equal the
console's truth; after every complete read of the restore points every point the console
lists must be stored, and after a complete full read (each virtual day's last run, and a last
one) the live points must equal the listed ones; at the end the warehouse must equal the
truth. Prints a Markdown summary (copy it into bench/RESULTS.md); exits 1 if any violation,
lost job or lost restore point was seen.

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
from etl.pipeline import RunResult, run_once  # noqa: E402
from etl.simulator import Simulator, SimulatorServer  # noqa: E402
from etl.verify import check_invariants  # noqa: E402
from tests.warehouse import lost_points  # noqa: E402

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
    full_reads: int = 0  # complete full reads of the restore points
    points_lost: int = 0
    final_points_lost: int = 0
    final_points: int = 0
    versions: int = 0
    seconds: float = 0.0

    @property
    def clean(self) -> bool:
        return (
            not self.violations
            and self.lost == 0
            and self.final_lost == 0
            and self.points_lost == 0
            and self.final_points_lost == 0
        )

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
                f"| complete full reads of the restore points | {self.full_reads} |",
                f"| restore points lost after complete reads | {self.points_lost} |",
                f"| restore points lost at the end | {self.final_points_lost} of "
                f"{self.final_points} |",
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


def points_lost(result: RunResult, engine: Engine, sim: Simulator, report: SoakReport) -> int:
    """After a run that read the restore points completely: the console's points the warehouse
    lacks (a *new* read stores every point listed since the last one: the overlap covers the
    simulator's late points), and after a complete full read also the live points it no longer
    lists."""
    points = result.points
    if result.status != "success" or points is None or not points.complete:
        return 0
    exact = points.gone is not None
    report.full_reads += exact
    return lost_points(engine, sim.world.restore_points(), exact=exact, source="soak")


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
        # The ETL's clock is the real one, the console's is virtual: a day of the console's
        # time ends with a full read of the restore points, as VSPC_RESTORE_POINTS_FULL_EVERY
        # (24h) would make it.
        daily = settings.model_copy(update={"vspc_restore_points_full_every": 0})
        per_day = max(1, round(24 / hours))
        for number in range(1, runs + 1):
            chosen = daily if number % per_day == 0 else settings
            result = run_once(chosen, engine=engine, sleep=no_sleep)
            report.runs += 1
            report.statuses[result.status] += 1
            if result.status == "failed":
                report.errors[str(result.error)] += 1
            report.violations += [f"after run {number}: {v}" for v in check_invariants(engine)]
            if result.status == "success" and result.complete:
                report.complete += 1
                report.lost += lost(engine, sim)
            report.points_lost += points_lost(result, engine, sim, report)
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
            report.points_lost += points_lost(result, engine, sim, report)
        stats = sim.stats.snapshot()
        report.faults.update(stats["faults"])
        report.requests = sum(n for k, n in stats["requests"].items() if k != "control")
        report.final_lost = lost(engine, sim)
        report.final_jobs = len(sim.every_job())
        # A last complete full read: the stored points must then be exactly the console's.
        sim.faults.clear()
        full = run_once(daily, engine=engine, sleep=no_sleep)
        report.runs += 1
        report.statuses[full.status] += 1
        report.violations += [f"last full read: {v}" for v in check_invariants(engine)]
        if full.points is None or full.points.gone is None:
            report.violations.append(f"the last full read did not complete: {full.error}")
        report.final_points = len(sim.world.restore_points())
        report.final_points_lost = lost_points(
            engine, sim.world.restore_points(), exact=True, source="soak"
        )
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
