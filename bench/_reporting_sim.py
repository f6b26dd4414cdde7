"""The simulator for bench/reporting_bench.py, in a process of its own (no GIL shared with the
ETL): ``--jobs`` jobs spread over ``--orgs`` organizations, its virtual clock at ``--start``.

    python bench/_reporting_sim.py --port 18080 --jobs 10000 --orgs 50 --start 2026-11-25T00:00Z

Serves until SIGTERM; steer it with the simulator's ``/_sim/advance`` and ``/_sim/jobs``.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from datetime import datetime

from etl.simulator import Simulator, SimulatorServer

API_KEY = "bench-api-key"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--orgs", type=int, default=50)
    parser.add_argument("--start", required=True, help="virtual start, ISO 8601 with offset")
    args = parser.parse_args()

    sim = Simulator(
        jobs=args.jobs,
        seed=4,
        api_keys=(API_KEY,),
        start=datetime.fromisoformat(args.start),
        add_rate=0.0,
        delete_rate=0.0,
        platforms=("windows",),  # the history below is built for Windows jobs
        # The history brings its own restore points, consistent with its jobs; the simulator's
        # belong to its agents, of other organizations than the jobs it is given here.
        refuse=("/api/v3/protectedWorkloads",),
    )
    # The shape: jobs over 50 organizations (the simulator makes one per 20 jobs).
    companies = [o["instanceUid"] for o in sim.organizations()][: args.orgs]
    for n, job in enumerate(sim.jobs()):
        sim.mutate(job["instanceUid"], organizationUid=companies[n % len(companies)])
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with SimulatorServer(sim, host="127.0.0.1", port=args.port):
        print("ready", flush=True)
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
