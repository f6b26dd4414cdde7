"""The demo's syncs: the simulator on loopback, one ``run_once`` per simulated instant."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import SecretStr
from sqlalchemy import Engine, event, text

from etl.config import Settings
from etl.db import database_url, describe, make_engine, migrate
from etl.demo import history
from etl.demo.summary import describe_warehouse, try_next
from etl.errors import VspcEtlError
from etl.pipeline import RunResult, make_http_client, run_once
from etl.simulator import SimulatorServer

DEMO_API_KEY = "demo-simulator-key"

# One demo at a time per database: a lock class of its own, apart from the syncs' locks.
_LOCK = {"cls": 0x44454D4F, "key": 0}  # "DEMO"

Echo = Callable[[str], None]
Progress = Callable[[int, int, datetime], None]
"""Told before each sync: syncs done, syncs planned, the simulated instant."""
ProgressBar = Callable[[int], AbstractContextManager[Progress]]
"""Given the number of syncs planned, a context that shows their progress."""


def run_demo(
    settings: Settings,
    *,
    days: int,
    every: timedelta,
    jobs: int | None,
    seed: int | None,
    force: bool,
    echo: Echo,
    prog: str = "vspc-etl",
    progress: ProgressBar | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> int:
    """Migrate, sync the simulated console up to now, show the result; returns the number of
    failed runs.

    ``jobs``/``seed`` None: those of the demo the database holds, else the defaults.
    ``prog``: how the user calls vspc-etl, for the commands to try next. ``clock``: the real
    time. ConfigError if the database holds other sources and ``force`` is not given.
    """
    quiet = {"etl.pipeline": logging.WARNING, "etl.config": logging.ERROR}
    saved = {name: logging.getLogger(name).level for name in quiet}
    if settings.log_level != "DEBUG":
        # The demo prints its own summary; the plain-http warning is moot on loopback.
        for name, level in quiet.items():
            logging.getLogger(name).setLevel(level)
    try:
        url = database_url(settings)
        echo(f"migrating {describe(url)}")
        migrate(url)
        engine = demo_engine(settings)
        try:
            with _one_demo_at_a_time(engine):
                with engine.begin() as conn:
                    plan = history.plan(
                        conn,
                        days=days,
                        every=every,
                        jobs=jobs,
                        seed=seed,
                        force=force,
                        now=_whole_second(clock()),
                    )
                failed = 0
                if plan.stops:
                    failed = _sync(settings, engine, plan, every, echo, progress, clock)
                else:
                    newest = plan.replay[-1]
                    echo(
                        f"nothing to add: the demo's history ends at {newest:%Y-%m-%d %H:%M} "
                        f"UTC, less than one step ({_duration(every)}) ago"
                    )
            with engine.connect() as conn:
                echo(describe_warehouse(conn, plan.console.source))
                echo(try_next(conn, plan.console.source, prog, clock()))
        finally:
            engine.dispose()
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)
    if settings.database_url is None:
        echo(
            f"the warehouse is kept in {settings.data_dir}/pgdata (embedded PostgreSQL, "
            "started on demand); set DATABASE_URL to use your own server"
        )
    return failed


def demo_engine(settings: Settings) -> Engine:
    """The engine of ``make_engine`` whose commits do not wait for the disk: a demo's history
    can be made again, and its hundred-odd syncs commit about ten times each (a quarter of
    its time on a busy machine). A crash may lose the last commits, never half of one."""
    engine = make_engine(settings)
    event.listen(engine, "connect", _commit_without_waiting)
    engine.dispose()  # the connection make_engine checked was made before the listener
    return engine


def _commit_without_waiting(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.execute("SET synchronous_commit = off")
    dbapi_connection.commit()


@contextmanager
def _one_demo_at_a_time(engine: Engine) -> Iterator[None]:
    with engine.connect() as conn:
        locked = conn.execute(text("SELECT pg_try_advisory_lock(:cls, :key)"), _LOCK).scalar()
        conn.commit()
        if not locked:
            raise VspcEtlError("another demo is running against this database: let it finish")
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:cls, :key)"), _LOCK)
            conn.commit()


def _sync(
    settings: Settings,
    engine: Engine,
    plan: history.Plan,
    every: timedelta,
    echo: Echo,
    progress: ProgressBar | None,
    clock: Callable[[], datetime],
) -> int:
    console = plan.console
    simulator = history.rebuild(console, plan.replay or plan.stops[:1], DEMO_API_KEY)
    now = plan.replay[-1] if plan.replay else plan.stops[0]  # the console's clock
    if plan.replay:
        with engine.connect() as conn:
            history.check_rebuilt(conn, simulator, console.source)
    results: list[RunResult] = []
    started = time.monotonic()
    with SimulatorServer(simulator, host="127.0.0.1", port=0) as server:
        demo = settings.model_copy(
            update={
                "vspc_url": server.url,
                "vspc_api_key": SecretStr(DEMO_API_KEY),
                "vspc_username": None,
                "vspc_password": None,
                "vspc_source": console.source,
                "vspc_ca_bundle": None,
                "vspc_verify_tls": True,
            }
        )
        # One client for every sync: its TLS context alone takes longer to build than a
        # small sync's requests.
        http = make_http_client(demo)
        with http, (progress or _no_progress)(len(plan.stops)) as told:
            for done, planned in enumerate(plan.stops):
                # The last stop is the real clock when it is reached, not when it was planned.
                stop = _whole_second(clock()) if done == len(plan.stops) - 1 else planned
                told(done, len(plan.stops), stop)
                if stop > now:
                    now = history.advance(simulator, now, stop)
                result = run_once(demo, engine=engine, http=http, at=now)
                _finish_after_start(engine, result)
                results.append(result)
    failed = [r for r in results if r.status == "failed"]
    initial = 0 if plan.replay else results[0].inserted
    what = "continued" if plan.replay else f"built ({initial} jobs at first)"
    echo(
        f"history {what}: {len(results)} syncs of a simulated console of {console.jobs} jobs "
        f"every {_duration(every)}, {plan.stops[0]:%Y-%m-%d %H:%M} to {now:%Y-%m-%d %H:%M} UTC, "
        f"in {time.monotonic() - started:.1f} s: {sum(r.inserted for r in results) - initial} "
        f"jobs added, {sum(r.deleted for r in results)} deleted, {len(failed)} failed runs"
    )
    for result in failed[:3]:
        echo(f"  {result.summary()}")
    return len(failed)


def _finish_after_start(engine: Engine, result: RunResult) -> None:
    """A run recorded at a simulated instant ends its real duration after it, not at the
    database's clock (which would make the first runs of a month last a month)."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE vspc.etl_runs SET finished_at = started_at + make_interval(secs => :d) "
                "WHERE run_id = :id AND finished_at IS NOT NULL"
            ),
            {"d": result.duration_s, "id": result.run_id},
        )


@contextmanager
def _no_progress(total: int) -> Iterator[Progress]:
    yield lambda done, total, at: None


def _whole_second(moment: datetime) -> datetime:
    """The demo's instants are whole seconds: replayed, they come out exact (``advance``)."""
    return moment.astimezone(UTC).replace(microsecond=0)


def _duration(step: timedelta) -> str:
    hours, minutes = divmod(int(step.total_seconds()) // 60, 60)
    return f"{hours}h{minutes}m" if hours and minutes else f"{hours}h" if hours else f"{minutes}m"
