"""``vspc-etl run``: sync on a schedule until SIGTERM or SIGINT, observable over HTTP.

    run_daemon(settings)            the CLI's entry point; returns (exit 0) once stopped
    └── Daemon
        ├── build_schedule          (etl.schedule) SYNC_INTERVAL or SYNC_CRON, SYNC_JITTER
        ├── BackgroundScheduler     APScheduler 3: one worker, coalesce, max_instances=1
        │   └── tick                etl.pipeline.run_once, the same single run as `sync`
        ├── HealthServer            /healthz, /readyz, /metrics on HTTP_HOST:HTTP_PORT
        └── stop                    no new runs; the run in hand gets SHUTDOWN_GRACE seconds,
                                    then is cancelled (rolled back, recorded failed)

A failing run is recorded and logged and the daemon goes on; so does a tick that cannot reach
the database (the engine is created again at the next tick if it never connected), or that
finds schema ``vspc`` missing or at another revision (said at each turn and by /readyz). A run
that fails on the settings (an unknown host, a TLS handshake refused) is recorded and logged at
each turn too, and /readyz gives its sentence as the reason until a run gets past it. Several
daemons may share one database: the pipeline's advisory lock lets one sync a source and the
others record ``skipped``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from datetime import UTC, datetime
from types import FrameType
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import Engine, event, text
from sqlalchemy.exc import SQLAlchemyError

from etl.config import Settings
from etl.db import check_schema, make_engine, short
from etl.errors import ConfigError, LoadError, RunCancelled, SchemaMismatch, VspcEtlError
from etl.health import HealthServer
from etl.metrics import Metrics
from etl.pipeline import CANCELLED, run_once
from etl.schedule import Schedule, build_schedule

log = logging.getLogger(__name__)

JOB_ID = "sync"
READY_FACTOR = 3  # /readyz wants a success younger than this many periods (and jitters)
STUCK_SLACK_S = 60.0  # /healthz fails when the next run is this much overdue and none runs


class Daemon:
    """The scheduler, the HTTP endpoints and the shutdown protocol around ``run_once``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.schedule = build_schedule(settings)
        self.metrics = Metrics(settings.source)
        self.scheduler = BackgroundScheduler(
            executors={"default": {"type": "threadpool", "max_workers": 1}},
            job_defaults={
                "coalesce": True,  # runs missed while down or busy collapse into one
                "max_instances": 1,  # an overrunning run makes the next tick skip, not pile up
                # a tick late by less than a period still runs; later, the next one is due
                "misfire_grace_time": max(1, int(self.schedule.period)),
            },
        )
        self.http: HealthServer | None = None
        self._engine: Engine | None = None
        self._engine_error = "not tried yet"
        self._state = threading.Lock()
        self._stopping = threading.Event()
        self._hurry = threading.Event()
        self._cancel = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._run_thread: int | None = None
        self._backends: list[int] = []  # backend pids the running sync holds, oldest first
        self._ready_lock = threading.Lock()
        self._ready_cache: tuple[float, bool, dict[str, Any]] = (0.0, False, {})
        # The last run's failure when only the settings can fix it (an unknown host, a TLS
        # handshake refused): /readyz gives it as its reason until a run gets past it.
        self._misconfigured: str | None = None

    # -- start ------------------------------------------------------------------------

    def start(self) -> None:
        """Bind the HTTP port, connect (or plan to), start scheduling. ConfigError if wrong."""
        s = self.settings
        if s.http_port:
            try:
                self.http = HealthServer(
                    s.http_host,
                    s.http_port,
                    health=self.health,
                    ready=self.ready,
                    metrics=self.metrics.render,
                )
            except OSError as exc:
                raise ConfigError(
                    f"HTTP_PORT {s.http_port} cannot be used on {s.http_host} "
                    f"({exc.strerror}); choose another port, or 0 to serve no HTTP"
                ) from None
        try:
            engine = self._connect()
            if engine is not None:
                check_schema(engine)  # missing or behind: say so now, not at every turn
        except VspcEtlError:
            if self.http is not None:
                self.http.stop()
            raise
        first = {"next_run_time": datetime.now(UTC)} if s.sync_run_at_start else {}
        self.scheduler.add_job(
            self.tick, self.schedule.trigger, id=JOB_ID, name=f"sync {s.source}", **first
        )
        self.scheduler.start()
        if self.http is not None:
            self.http.start()
        where = f"http://{s.http_host}:{self.http.port}" if self.http else "off (HTTP_PORT=0)"
        log.info(
            "vspc-etl run: syncing %s %s (jitter up to %d s%s); health and metrics: %s",
            s.source,
            self.schedule.description,
            self.schedule.jitter,
            ", first run now" if s.sync_run_at_start else "",
            where,
            extra={"source": s.source},
        )

    def _connect(self) -> Engine | None:
        """The engine, created on first success; None (logged) while the database is away."""
        if self._engine is not None:
            return self._engine
        try:
            engine = make_engine(self.settings)
        except LoadError as exc:
            self._engine_error = str(exc)
            log.error("%s; the daemon keeps going and tries again at the next run", exc)
            return None
        event.listen(engine, "checkout", self._on_checkout)
        event.listen(engine, "checkin", self._on_checkin)
        self._engine = engine
        return engine

    def _on_checkout(self, dbapi_conn: Any, record: Any, proxy: Any) -> None:
        if threading.get_ident() == self._run_thread:
            self._backends.append(int(dbapi_conn.info.backend_pid))

    def _on_checkin(self, dbapi_conn: Any, record: Any) -> None:
        try:
            pid = dbapi_conn.info.backend_pid
        except Exception:  # a connection already closed (invalidated) has no backend
            return
        with contextlib.suppress(ValueError):
            self._backends.remove(pid)

    # -- one scheduled run ----------------------------------------------------------------

    def tick(self) -> None:
        """One scheduled run; never raises (a failure is recorded, logged and counted)."""
        with self._state:
            if self._stopping.is_set():
                return
            self._idle.clear()
            self._run_thread = threading.get_ident()
        self.metrics.in_progress.set(1)
        try:
            self._tick()
        except Exception:
            self.metrics.unrecorded.labels("unexpected").inc()
            log.exception("the run failed unexpectedly; the daemon goes on")
        finally:
            self.metrics.in_progress.set(0)
            self._run_thread = None
            self._backends.clear()
            self._idle.set()

    def _tick(self) -> None:
        engine = self._connect()
        if engine is None:
            self.metrics.unrecorded.labels("database").inc()
            return
        try:
            check_schema(engine)
            result = run_once(
                self.settings,
                engine=engine,
                sleep=self._sleep,
                cancel=self._cancel,
                on_event=self.metrics.on_http_event,
            )
        except (LoadError, SQLAlchemyError) as exc:
            self.metrics.unrecorded.labels("database").inc()
            reason = str(exc) if isinstance(exc, LoadError) else f"database error: {short(exc)}"
            log.error("no run recorded: %s; trying again at the next run", reason)
            return
        except SchemaMismatch as exc:
            self.metrics.unrecorded.labels("schema").inc()
            log.error("%s; no run until then (checked again at the next run)", exc)
            return
        except VspcEtlError as exc:
            self.metrics.unrecorded.labels("error").inc()
            log.error("no run recorded: %s", exc)
            return
        self.metrics.observe_run(result)
        if result.status != "skipped":
            self._misconfigured = result.error if result.misconfigured else None
        if result.status == "success":
            self.metrics.note_success_at(time.time())

    def _sleep(self, seconds: float) -> None:
        """Retry waits of the VSPC client, cut short by a shutdown."""
        if self._cancel.wait(seconds):
            raise RunCancelled(CANCELLED)

    # -- health ---------------------------------------------------------------------------

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Alive: the scheduler is running and its next run is not long overdue."""
        if self._stopping.is_set():
            return False, {"reason": "shutting down"}
        if not self.scheduler.running:
            return False, {"reason": "the scheduler is not running"}
        job = self.scheduler.get_job(JOB_ID)
        next_run = job.next_run_time if job is not None else None
        busy = not self._idle.is_set()
        details: dict[str, Any] = {
            "run_in_progress": busy,
            "next_run_at": next_run.isoformat() if next_run else None,
        }
        slack = STUCK_SLACK_S + self.schedule.jitter
        if next_run is not None and not busy:
            overdue = (datetime.now(UTC) - next_run).total_seconds()
            if overdue > slack:
                return False, {**details, "reason": f"the next run is {overdue:.0f} s overdue"}
        return True, details

    def ready(self) -> tuple[bool, dict[str, Any]]:
        """Ready: the database answers and a sync succeeded within READY_FACTOR periods."""
        with self._ready_lock:  # probes in a burst share one query
            at, ok, details = self._ready_cache
            if time.monotonic() - at < 1.0:
                return ok, details
            ok, details = self._check_ready()
            self._ready_cache = (time.monotonic(), ok, details)
            return ok, details

    def _check_ready(self) -> tuple[bool, dict[str, Any]]:
        # a run may start up to the jitter late, each of the READY_FACTOR periods
        window = READY_FACTOR * (self.schedule.period + self.schedule.jitter)
        source = self.settings.source
        engine = self._engine
        if engine is None:
            return False, {"reason": f"database not reached yet: {self._engine_error}"}
        try:
            with engine.begin() as conn:
                conn.execute(text("SET LOCAL statement_timeout = '5s'"))
                check_schema(conn)
                age, finished = conn.execute(
                    text(
                        "SELECT extract(epoch FROM clock_timestamp() - max(finished_at)), "
                        "extract(epoch FROM max(finished_at)) FROM vspc.etl_runs "
                        "WHERE source = :source AND status = 'success'"
                    ),
                    {"source": source},
                ).one()
        except SchemaMismatch as exc:
            return False, {"reason": str(exc)}
        except (SQLAlchemyError, LoadError) as exc:
            reason = str(exc) if isinstance(exc, LoadError) else short(exc)
            return False, {"reason": f"database unreachable: {reason}"}
        details: dict[str, Any] = {"source": source, "window_s": window}
        misconfigured = self._misconfigured
        if misconfigured is not None:
            return False, {**details, "reason": misconfigured}
        if age is None:
            return False, {**details, "reason": f"no successful sync of {source} recorded yet"}
        self.metrics.note_success_at(float(finished))
        details["last_success_age_s"] = round(float(age), 1)
        if float(age) > window:
            return False, {
                **details,
                "reason": (
                    f"the last successful sync of {source} finished {float(age):.0f} s ago, "
                    f"more than {READY_FACTOR} x {_period(self.schedule)}"
                ),
            }
        return True, details

    # -- stop -----------------------------------------------------------------------------

    def hurry(self) -> None:
        """A second signal: cancel the run in hand now instead of waiting out the grace."""
        self._hurry.set()

    def stop(self) -> bool:
        """Stop scheduling and settle the run in hand. False: a run is stuck, exit hard."""
        with self._state:
            self._stopping.set()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)  # no new runs; the one in hand goes on
        grace = self.settings.shutdown_grace
        clean = True
        if not self._idle.is_set():
            log.info("stopping: waiting up to %g s (SHUTDOWN_GRACE) for the run in hand", grace)
            if not self._wait_idle(grace, self._hurry):
                clean = self._cancel_run(wait=min(5.0, max(1.0, grace / 10)))
        if self.http is not None:
            self.http.stop()
        if self._engine is not None and clean:
            self._engine.dispose()
        log.info("stopped")
        return clean

    def _wait_idle(self, seconds: float, interrupt: threading.Event | None = None) -> bool:
        deadline = time.monotonic() + seconds
        while not self._idle.wait(min(0.1, max(0.0, deadline - time.monotonic()))):
            if time.monotonic() >= deadline or (interrupt is not None and interrupt.is_set()):
                return self._idle.is_set()
        return True

    def _cancel_run(self, wait: float) -> bool:
        """Cancel the run: between pages it stops itself; a statement in flight (the merge)
        is cancelled on the server, so its transaction rolls back. Then, if it is stuck on the
        network, end its database session and record it failed here."""
        log.warning("the run did not finish within SHUTDOWN_GRACE: cancelling it")
        self._cancel.set()
        backends = list(self._backends)
        if backends:
            self._on_server("SELECT pg_cancel_backend(:pid)", backends[:1])
        if self._wait_idle(wait):
            return True
        log.error("the run did not stop within %g s of being cancelled: abandoning it", wait)
        self._abandon(backends)
        return False

    def _on_server(self, sql: str, pids: list[int]) -> None:
        if self._engine is None:
            return
        try:
            with self._engine.connect() as conn:
                for pid in pids:
                    conn.execute(text(sql), {"pid": pid})
        except SQLAlchemyError as exc:
            log.error("could not reach the database to stop the run: %s", short(exc))

    def _abandon(self, backends: list[int]) -> None:
        """End the stuck run's session (rollback, lock freed) and mark its row failed."""
        if self._engine is None or not backends:
            return
        source = self.settings.source
        try:
            with self._engine.begin() as conn:
                # Only while its session holds the source's lock are the running rows ours.
                ours = conn.execute(
                    text(
                        "SELECT run_id FROM vspc.etl_runs WHERE source = :source "
                        "AND status = 'running' AND EXISTS (SELECT 1 FROM pg_locks WHERE "
                        "locktype = 'advisory' AND granted AND pid = :pid)"
                    ),
                    {"source": source, "pid": backends[0]},
                ).scalars()
                run_ids = list(ours)
                for pid in backends:
                    conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
                conn.execute(
                    text(
                        "UPDATE vspc.etl_runs SET status = 'failed', "
                        "finished_at = clock_timestamp(), error = :error "
                        "WHERE run_id = ANY(:ids) AND status = 'running'"
                    ),
                    {"ids": run_ids, "error": f"{CANCELLED} (abandoned while it waited)"},
                )
        except SQLAlchemyError as exc:
            log.error("could not record the abandoned run: %s", short(exc))


def _period(schedule: Schedule) -> str:
    if schedule.jitter:
        return f"(the {schedule.period:g} s period + {schedule.jitter} s of jitter)"
    return f"the {schedule.period:g} s period"


def run_daemon(settings: Settings) -> None:
    """Run until SIGTERM/SIGINT (a second one cancels the run in hand at once), then return."""
    daemon = Daemon(settings)
    stop = threading.Event()
    received: list[str] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        received.append(signal.Signals(signum).name)
        if stop.is_set():
            daemon.hurry()
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        daemon.start()
        while not stop.wait(1.0):
            pass
        log.info("%s received: stopping", received[0])
        clean = daemon.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not clean:
        # The stuck thread would hold the interpreter open until its socket times out; its
        # work is already rolled back and recorded, so leave now.
        logging.shutdown()
        os._exit(0)
