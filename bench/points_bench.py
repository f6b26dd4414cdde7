"""What reading restore points adds to a sync: pairs of syncs with and without them.

    python bench/points_bench.py [--jobs 10000] [--days 4] [--pairs 5] [--concurrency 4]

One simulator (``vspc-etl simulate``, seed 1, its own process) and two throwaway databases on
the PostgreSQL named by BENCH_DATABASE_URL: *points*, whose syncs read the restore points, and
*without*, whose syncs find the path refused (the simulator answers 404 there, a fault set
through ``/_sim/faults`` for that sync only: the run skips the points with a warning). Both
first sync, then for ``--days`` days the simulator's clock advances a day and both sync, the
*points* side with ``VSPC_RESTORE_POINTS_FULL_EVERY=0`` (complete full reads: points pile up
as the warehouse keeps those retention merged away). Then each pair: the clock advances 15
minutes, both sides sync (each a fresh ETL process, ``bench/_sync_worker.py``, the default
``VSPC_RESTORE_POINTS_FULL_EVERY``: the points side reads only the new points), alternating who
goes first; the pair's ratio is the points side's wall time over the other's, and its CPU
ratio the same for the ETL process's CPU time (steadier on a shared machine). Last, pairs
where the points side makes a full read (``VSPC_RESTORE_POINTS_FULL_EVERY=0``). Prints Markdown
tables (copy them into bench/RESULTS.md). All traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import uuid
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL

from etl.collections import job_collections
from etl.extract.names import AGENTS_PATH, MANAGEMENT_AGENTS_PATH, ORGANIZATIONS_PATH
from etl.extract.pager import SORT_BY_INSTANCE_UID

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sync_bench import API_KEY, calibration, database, simulator, sync

POINTS_PATH = "/api/v3/protectedWorkloads/computersManagedByConsole/restorePoints"
REFUSE = {"kind": "404", "path": "restore_points", "times": None}
_ANY_UID = [{"property": "instanceUid", "operation": "in", "value": [str(uuid.UUID(int=0))]}]
_SINCE_2000 = [
    {"property": "creationDate", "operation": "greaterThan", "value": "2000-01-01T00:00:00Z"}
]
WARM_UP: list[tuple[str, dict[str, str]]] = [
    *(
        (path, {"limit": "1", "sort": SORT_BY_INSTANCE_UID})
        for path in (
            *(c.path for c in job_collections(("windows", "linux", "mac"))),
            ORGANIZATIONS_PATH,
            AGENTS_PATH,
            MANAGEMENT_AGENTS_PATH,
        )
    ),
    (POINTS_PATH, {"limit": "1"}),
    (POINTS_PATH, {"limit": "1", "filter": json.dumps(_SINCE_2000)}),
    (POINTS_PATH, {"limit": "1", "filter": json.dumps(_ANY_UID)}),
]
"""The untimed requests after each clock step (see ``advance``)."""


def stored(db: URL) -> int:
    engine = create_engine(db)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM vspc.restore_points")).scalar_one())
    finally:
        engine.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=4)
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--full-pairs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    print(f"CPU calibration: {calibration():.2f} s for 10 million loop iterations\n")
    with ExitStack() as stack:
        # The console's clock ends near the real one, as a console's does: the points a sync
        # writes are recent, and only a late point of a completed day recomputes sla_daily.
        quarters = args.pairs + args.full_pairs
        start = datetime.now(UTC) - timedelta(days=args.days, minutes=15 * quarters + 5)
        url = stack.enter_context(simulator(args.jobs, 0.0, start=start))
        with_db = stack.enter_context(database())
        without_db = stack.enter_context(database())

        def faults(spec: dict[str, Any]) -> None:
            httpx.post(f"{url}/_sim/faults", json=spec, timeout=60).raise_for_status()

        def advance(hours: float) -> None:
            httpx.post(f"{url}/_sim/advance", params={"hours": hours}, timeout=600)
            # The simulator arranges each collection anew for each new state of its world; the
            # first sync after a step would pay for it and the second not. One untimed page of
            # each collection as the syncs ask for it arranges them before either side syncs.
            # A console answers from its own indexed database, on its own machine; the
            # simulator also builds its indexes of the points' creation times and uids for each
            # state, on the cores the ETL runs on: a new read asks for a window of creation
            # times, then a few points by uid, so one untimed request of each shape too.
            for path, params in WARM_UP:
                httpx.get(
                    f"{url}{path}",
                    params=params,
                    headers={"Authorization": f"Bearer {API_KEY}"},
                    timeout=600,
                ).raise_for_status()

        def with_points(**env: str) -> dict[str, Any]:
            result = sync(with_db, url, args.concurrency, **env)
            assert result["points"]["read"] in ("full", "new"), result
            return result

        def without_points() -> dict[str, Any]:
            faults(REFUSE)
            try:
                result = sync(without_db, url, args.concurrency)
            finally:
                faults({"clear": True})
            assert result["points"]["read"] == "refused", result
            return result

        with_points()
        without_points()
        for _ in range(args.days):
            advance(24)
            with_points(VSPC_RESTORE_POINTS_FULL_EVERY="0")
            without_points()
        print(f"{stored(with_db):,} restore points stored after {args.days} days\n")
        print(
            "| case | pair | points side s | without s | ratio | ETL CPU s, points side "
            "| without | CPU ratio | points read | seen | new |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|")
        ratios: dict[str, list[float]] = {}
        cpu_ratios: dict[str, list[float]] = {}
        cases = [("15-minute sync", {}, args.pairs)]
        cases.append(("full read", {"VSPC_RESTORE_POINTS_FULL_EVERY": "0"}, args.full_pairs))
        for case, env, pairs in cases:
            for pair in range(pairs):
                advance(0.25)
                if pair % 2 == 0:
                    a, b = with_points(**env), without_points()
                else:
                    b, a = without_points(), with_points(**env)
                ratio = a["wall_s"] / b["wall_s"]
                cpu_ratio = a["cpu_s"] / b["cpu_s"]
                ratios.setdefault(case, []).append(ratio)
                cpu_ratios.setdefault(case, []).append(cpu_ratio)
                p = a["points"]
                print(
                    f"| {case} | {pair + 1} | {a['wall_s']:.2f} | {b['wall_s']:.2f} | "
                    f"{ratio:.2f} | {a['cpu_s']:.2f} | {b['cpu_s']:.2f} | {cpu_ratio:.2f} | "
                    f"{p['read']} | {p['seen']:,} | {p['inserted']:,} |",
                    flush=True,
                )
        print("\n| case | pairs | ratios | median ratio | median CPU ratio |")
        print("|---|---:|---|---:|---:|")
        for case, values in ratios.items():
            listed = ", ".join(f"{v:.2f}" for v in values)
            cpu = statistics.median(cpu_ratios[case])
            print(
                f"| {case} | {len(values)} | {listed} | **{statistics.median(values):.2f}** "
                f"| {cpu:.2f} |"
            )
        print(f"\nCPU calibration at the end: {calibration():.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
