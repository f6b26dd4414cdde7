"""``vspc-etl demo``: a month of simulated SLA history in the warehouse, ending now.

Starts the built-in VSPC simulator on loopback with its clock ``--days`` back, migrates the
database (DATABASE_URL or the embedded PostgreSQL) and syncs every few simulated hours up to
the real clock, each run recorded at its simulated instant (``run_once(at=...)``): the
reports, which count back from today, then show a month of sessions, failures, late jobs and
deletions. Then it prints a picture of the warehouse and the commands to try next.

The history is kept by the database alone, so it survives any DATABASE_URL: the demo's
source name carries the simulated console's size and seed, and its runs' instants are the
console's past. A later demo rebuilds the same console, lets it live through those instants
again without syncing (the simulator is deterministic for the same seed and the same steps)
and syncs on from the last one to now.

Layout: ``history`` (what an earlier demo left, what to sync next, the console rebuilt),
``run`` (the syncs), ``summary`` (the warehouse in a few lines, the commands to try next).
"""

from etl.demo.history import Console, plan_stops
from etl.demo.run import DEMO_API_KEY, Progress, ProgressBar, run_demo
from etl.demo.summary import describe_warehouse, try_next

__all__ = [
    "DEMO_API_KEY",
    "Console",
    "Progress",
    "ProgressBar",
    "describe_warehouse",
    "plan_stops",
    "run_demo",
    "try_next",
]
