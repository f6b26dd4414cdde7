"""One sync in a process of its own, for bench/sync_bench.py: prints a JSON line of figures.

Run as ``python bench/_sync_worker.py``; settings come from the environment like ``vspc-etl sync``.
Peak RSS and CPU time (of the run, all threads) are this process's own, so the simulator's and
PostgreSQL's are not counted.
"""

from __future__ import annotations

import json
import resource
import sys
import time

from etl.alloc import tune_allocator, tune_gc
from etl.config import load_settings
from etl.db import make_engine
from etl.pipeline import run_once


def main() -> int:
    tune_allocator()  # what `vspc-etl` does at start
    settings = load_settings(dotenv=False)
    engine = make_engine(settings)
    tune_gc()  # what `vspc-etl sync` does before the run
    started, cpu = time.perf_counter(), time.process_time()
    result = run_once(settings, engine=engine)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    engine.dispose()
    figures = {
        "status": result.status,
        "error": result.error,
        "complete": result.complete,
        "pages": result.pages,
        "seen": result.seen,
        "inserted": result.inserted,
        "updated": result.updated,
        "unchanged": result.unchanged,
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "timings": {k: round(v, 3) for k, v in result.timings.items()},
        "points": None if result.points is None else vars(result.points),
    }
    print(json.dumps(figures))
    return 0 if result.status == "success" else 1


if __name__ == "__main__":
    sys.exit(main())
