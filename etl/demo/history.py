"""What an earlier demo left in the database, what to sync next, and its console rebuilt.

History never goes backwards: a demo syncs only after the newest run of the demo the
database holds, and only up to the real clock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, text

from etl.errors import ConfigError
from etl.simulator import Simulator

DEFAULT_JOBS = 200
DEFAULT_SEED = 1

_SOURCE = re.compile(r"demo-simulator-(\d+)-jobs-seed-(\d+)")

# The demo's runs, skipped ones aside: those are recorded at the real clock, and no sync of
# them moved the console forward.
_RUNS = "FROM vspc.etl_runs WHERE source = :source AND status <> 'skipped'"


@dataclass(frozen=True)
class Console:
    """The simulated console of a demo: its size and seed, kept in its source name."""

    jobs: int
    seed: int

    @property
    def source(self) -> str:
        return f"demo-simulator-{self.jobs}-jobs-seed-{self.seed}"

    @classmethod
    def of(cls, source: str) -> Console | None:
        """The console a source name describes; None for a source that is not a demo's."""
        match = _SOURCE.fullmatch(source)
        return cls(int(match[1]), int(match[2])) if match else None


@dataclass(frozen=True)
class Plan:
    """Rebuild ``console`` living through ``replay`` (earlier syncs), then sync at ``stops``."""

    console: Console
    replay: list[datetime]
    stops: list[datetime]


def plan_stops(
    *, last: datetime | None, end: datetime, days: int, every: timedelta
) -> list[datetime]:
    """The instants to sync at: every ``every`` from ``days`` before ``end``, or from one step
    after ``last`` (the newest earlier sync), and at ``end``. A gap since ``last`` longer than
    ``days`` is crossed in one step, as if the extractor had been down. Empty when ``last``
    is less than a step before ``end``.

    The step to ``end`` is never shorter than half a step: the simulator ends each session
    running at a step's start by that step's end, so a short one would end a crowd at once.
    """
    first = end - timedelta(days=days)
    if last is not None and last > first:
        first = last + every
        if first > end:
            return []
    stops = []
    stop = first
    while stop < end:
        stops.append(stop)
        stop += every
    if stops and end - stops[-1] < every / 2 and (last is not None or len(stops) > 1):
        stops.pop()  # (not the first of a new history: the console starts there)
    return [*stops, end]


def plan(
    conn: Connection,
    *,
    days: int,
    every: timedelta,
    jobs: int | None,
    seed: int | None,
    force: bool,
    now: datetime,
) -> Plan:
    """Refuse a warehouse holding other sources (unless ``force``); find the demo the
    database holds, if any; plan the syncs from its newest run (or ``days`` back) to ``now``.

    ``jobs``/``seed`` None: those of the demo the database holds, else the defaults.
    """
    sources = list(
        conn.execute(
            text(
                "SELECT source FROM vspc.etl_runs UNION "
                "SELECT source FROM (SELECT DISTINCT source FROM vspc.backup_agent_jobs) j "
                "ORDER BY 1"
            )
        ).scalars()
    )
    foreign = [s for s in sources if Console.of(s) is None]
    if foreign and not force:
        raise ConfigError(
            f"this database holds data of {', '.join(map(repr, foreign))}, not only the demo's: "
            "the demo does not write into a real warehouse; point DATABASE_URL at another "
            "database, or give --force to add the demo beside that data"
        )
    console = Console(
        DEFAULT_JOBS if jobs is None else jobs, DEFAULT_SEED if seed is None else seed
    )
    newest = conn.execute(
        text(
            "SELECT source FROM vspc.etl_runs WHERE source = ANY(:sources) "
            "AND status <> 'skipped' ORDER BY started_at DESC LIMIT 1"
        ),
        {"sources": [s for s in sources if s not in foreign]},
    ).scalar()
    replay: list[datetime] = []
    kept = Console.of(newest) if newest is not None else None
    if kept is not None:
        if kept != Console(jobs or kept.jobs, kept.seed if seed is None else seed):
            raise ConfigError(
                f"this database holds the demo of a console of {kept.jobs} jobs, seed "
                f"{kept.seed}: run demo without --jobs and --seed to continue it, or point "
                "DATABASE_URL at another database for another console"
            )
        console = kept
        replay = list(
            conn.execute(
                text(f"SELECT started_at {_RUNS} ORDER BY started_at"), {"source": kept.source}
            ).scalars()
        )
    last = replay[-1] if replay else None
    if last is not None and last > now:
        raise ConfigError(
            f"the demo's history ends at {last:%Y-%m-%d %H:%M:%S} UTC, after this machine's "
            "clock: history never goes backwards; check the clock"
        )
    return Plan(console, replay, plan_stops(last=last, end=now, days=days, every=every))


def rebuild(console: Console, instants: list[datetime], api_key: str) -> Simulator:
    """The console as it was at the last of ``instants``: built at the first, then advanced
    to each of the others in turn, exactly as the demo that synced at them did."""
    simulator = Simulator(
        jobs=console.jobs, seed=console.seed, start=instants[0], api_keys=(api_key,)
    )
    now = instants[0]
    for instant in instants[1:]:
        now = advance(simulator, now, instant)
    return simulator


def advance(simulator: Simulator, now: datetime, to: datetime) -> datetime:
    """Let the console live from ``now`` until ``to``; returns its clock. The demo's instants
    are whole seconds apart: the hours given convert back to exactly ``to``."""
    return simulator.advance((to - now).total_seconds() / 3600).now


def check_rebuilt(conn: Connection, simulator: Simulator, source: str) -> None:
    """ConfigError unless the rebuilt console holds every job the warehouse has live (known
    only after a complete run: an incomplete one may have withheld deletions)."""
    complete = conn.execute(
        text(f"SELECT status = 'success' AND complete {_RUNS} ORDER BY started_at DESC LIMIT 1"),
        {"source": source},
    ).scalar()
    if not complete:
        return
    live = set(
        conn.execute(
            text(
                "SELECT instance_uid::text FROM vspc.backup_agent_jobs "
                "WHERE source = :source AND deleted_at IS NULL"
            ),
            {"source": source},
        ).scalars()
    )
    rebuilt = {str(job["instanceUid"]).lower() for job in simulator.jobs()}
    if not live <= rebuilt:
        raise ConfigError(
            f"the demo's console ({source}) cannot be rebuilt as the database knows it (this "
            "version's simulator differs from the one that made the history): point "
            "DATABASE_URL at another database to start a new one"
        )
