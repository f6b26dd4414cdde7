"""One sync run: VSPC -> extract -> transform -> stage -> merge -> PostgreSQL.

``run_once`` is the single entry point the CLI, the daemon, the demo and the tests call.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

import httpx
import psycopg
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from etl import __version__
from etl.collections import (
    ALL,
    JOBS,
    RESTORE_POINTS,
    Collection,
    Item,
    NamesRead,
    PageRead,
    PassEnded,
    ReadFailed,
    job_collections,
)
from etl.config import Settings
from etl.db import short
from etl.errors import (
    ConfigError,
    LoadError,
    PermissionDenied,
    RequestRejected,
    RunCancelled,
    VspcEtlError,
)
from etl.extract import ApiKeyAuth, PasswordAuth, RetryPolicy, VspcClient, reader
from etl.extract.names import Names
from etl.load import runs
from etl.load.loader import Loader, PassVerdict
from etl.load.points import IN_CHUNK, SORT_BY_CREATION, PointsOutcome, PointsPlan
from etl.testhook import pause

log = logging.getLogger(__name__)

JOBS_PATH = JOBS.path

Progress = Callable[[int, int, int], None]
"""Called after each page with (pages read, records read, total the console reports)."""

OnEvent = Callable[[str, str], None]
"""Called by the VSPC client per HTTP request (``"request"``) and retry, with the outcome."""

# The stage COPYs through the raw psycopg cursor, whose errors SQLAlchemy never wraps.
DatabaseError = SQLAlchemyError | psycopg.Error

CANCELLED = "cancelled before it finished (the process is shutting down); nothing was committed"
NAME_PAGES_WAITING = 4
"""Name pages waiting for the loader, at most."""
POINT_PAGES_WAITING = 32
"""Restore point pages waiting for the loader, at most: read while the job merge runs (about
16 MB of decoded points at 500 a page)."""


@dataclass(frozen=True)
class RunResult:
    """What a run did; ``status`` is success, failed or skipped."""

    run_id: int
    source: str
    status: str
    complete: bool = False
    pages: int = 0
    seen: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    rejected: int = 0
    duration_s: float = 0.0
    error: str | None = None
    misconfigured: bool = False
    """Failed on something only the configuration can fix (an unknown host, a TLS handshake
    or certificate refused): trying again as configured cannot succeed."""
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds by stage (for benchmarks and DEBUG logs): http_wait (waiting for the next page),
    transform, copy, merge."""
    points: PointsOutcome | None = None
    """How the run read the restore points and what it wrote of them."""

    def summary(self) -> str:
        """One line for the operator."""
        if self.status == "skipped":
            return f"run {self.run_id} skipped: {self.error}"
        head = (
            f"run {self.run_id} {self.status} in {self.duration_s:.1f}s: {self.pages} pages, "
            f"{self.seen} jobs seen, {self.inserted} inserted, {self.updated} updated, "
            f"{self.unchanged} unchanged, {self.deleted} deleted, {self.rejected} rejected"
        )
        points = self.points
        if points is not None and points.seen is not None:
            gone = "" if points.gone is None else f", {points.gone} gone"
            head += (
                f"; restore points ({points.read} read): {points.seen} seen, "
                f"{points.inserted} new{gone}, {points.rejected} rejected"
            )
        return f"{head} ({self.error})" if self.error else head

    def log_fields(self) -> dict[str, Any]:
        """``extra=`` for the log line that reports the run (the JSON log format shows them)."""
        fields: dict[str, Any] = {
            "run_id": self.run_id,
            "source": self.source,
            "status": self.status,
            "duration_s": round(self.duration_s, 3),
        }
        if self.status != "skipped":
            fields["counts"] = {
                "pages": self.pages,
                "seen": self.seen,
                "inserted": self.inserted,
                "updated": self.updated,
                "unchanged": self.unchanged,
                "deleted": self.deleted,
                "rejected": self.rejected,
            }
        if self.points is not None:
            fields["restore_points"] = {
                k: v for k, v in vars(self.points).items() if k != "note" and v is not None
            }
        if self.error:
            fields["error"] = self.error
        return fields


@dataclass
class _Extract:
    pages: int = 0
    records: int = 0
    verdicts: dict[str, PassVerdict | None] = field(default_factory=dict)
    """By ``system_type``, each job collection's last pass: complete or not, and the distinct
    jobs it staged; None for a collection the console refused (skipped)."""
    skipped: list[str] = field(default_factory=list)
    """Why each skipped collection was skipped (for ``etl_runs.error``)."""
    totals: dict[str, int] = field(default_factory=dict)
    """The total each job collection's console reported last (the progress bar's sum)."""
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """Every job collection read was verified complete, and none was skipped."""
        return bool(self.verdicts) and all(
            v is not None and v.complete for v in self.verdicts.values()
        )


@dataclass(frozen=True)
class _Run:
    """One run's context: what ``run_once`` was given and the ``etl_runs`` row it started."""

    settings: Settings
    engine: Engine
    conn: Connection
    http: httpx.Client
    row: runs.RunRow
    clock: float
    progress: Progress | None
    sleep: Callable[[float], None]
    cancel: threading.Event | None
    on_event: OnEvent | None


def make_http_client(settings: Settings, **kwargs: Any) -> httpx.Client:
    """The httpx client for the console: base URL, TLS and timeouts from settings."""
    assert settings.vspc_url is not None
    timeout = httpx.Timeout(settings.vspc_timeout, connect=min(10.0, settings.vspc_timeout))
    return httpx.Client(
        base_url=settings.vspc_url.rstrip("/"),
        verify=settings.tls_verify(),
        timeout=timeout,
        headers={"Accept": "application/json", "User-Agent": f"vspc-etl/{__version__}"},
        follow_redirects=False,
        **kwargs,
    )


def make_client(
    settings: Settings,
    http: httpx.Client,
    *,
    sleep: Callable[[float], None] = time.sleep,
    on_event: OnEvent | None = None,
) -> VspcClient:
    """A VSPC client with the configured credentials and retry budget; at most
    ``VSPC_CONCURRENCY`` requests in flight, whichever thread sends them."""
    auth: ApiKeyAuth | PasswordAuth
    if settings.vspc_api_key is not None and settings.vspc_api_key.get_secret_value():
        auth = ApiKeyAuth(settings.vspc_api_key.get_secret_value())
    else:
        assert settings.vspc_username and settings.vspc_password
        auth = PasswordAuth(settings.vspc_username, settings.vspc_password.get_secret_value())
    retry = RetryPolicy(
        max_attempts=settings.vspc_max_attempts, max_elapsed=settings.vspc_retry_budget
    )
    return VspcClient(
        http,
        auth,
        retry=retry,
        sleep=sleep,
        on_event=on_event,
        max_in_flight=settings.vspc_concurrency,
        decoders={c.path: c.decode for c in ALL if c.decode is not None},
    )


def run_once(
    settings: Settings,
    *,
    engine: Engine,
    http: httpx.Client | None = None,
    progress: Progress | None = None,
    sleep: Callable[[float], None] = time.sleep,
    cancel: threading.Event | None = None,
    on_event: OnEvent | None = None,
    at: datetime | None = None,
) -> RunResult:
    """Sync every agent job of ``VSPC_PLATFORMS`` once. Never leaves a ``running`` row or
    partial data.

    Raises ConfigError for bad settings, and LoadError when the database cannot even be
    reached to record the run; every other expected failure is recorded in ``etl_runs`` and
    returned as a ``failed`` result. Unexpected exceptions are recorded too, then re-raised.
    Once ``cancel`` is set the run stops after the page in hand or before the merge and is
    recorded ``failed``; ``on_event`` goes to the VSPC client (request and retry metrics).
    ``at``: the instant the run is recorded at instead of the database's clock (the demo's
    simulated time); the CLI and the daemon never give it.
    """
    settings.validate_source()
    source = settings.source
    owns_http = http is None
    http = http if http is not None else make_http_client(settings)
    clock = time.monotonic()
    try:
        conn = _connect(engine)
        try:
            if not runs.try_lock(conn, source):
                row = runs.record_skipped(
                    conn, source, __version__, "another sync of this source was in progress"
                )
                skipped = RunResult(row.run_id, source, "skipped", error="another sync was running")
                log.info(
                    "sync of %s skipped: another sync holds the lock",
                    source,
                    extra=skipped.log_fields(),
                )
                return skipped
            try:
                runs.fail_orphans(conn, source)
                run = runs.start(conn, source, __version__, at=at)
                log.info(
                    "run %d started for %s",
                    run.run_id,
                    source,
                    extra={"run_id": run.run_id, "source": source, "status": "running"},
                )
                return _execute(
                    _Run(
                        settings, engine, conn, http, run, clock, progress, sleep, cancel, on_event
                    )
                )
            finally:
                runs.unlock(conn, source)
        finally:
            conn.close()
    finally:
        if owns_http:
            http.close()


def _connect(engine: Engine) -> Connection:
    try:
        return engine.connect()
    except SQLAlchemyError as exc:
        raise LoadError(f"cannot connect to the database: {short(exc)}") from exc


def _execute(run: _Run) -> RunResult:
    """The run once it holds the source's lock: success, or failed with nothing committed."""
    extract = _Extract()
    inbox = reader.Inbox()
    loader: Loader | None = None
    try:
        client = make_client(run.settings, run.http, sleep=run.sleep, on_event=run.on_event)
        loader = Loader(
            run.conn,
            run_id=run.row.run_id,
            source=run.settings.source,
            now=run.row.started_at,
            timings=extract.timings,
        )
        names = _NamesReader(run.settings, client, inbox, loader)
        return _sync(run, loader, client, inbox, names, extract)
    except BaseException as exc:
        inbox.stop()
        if loader is not None:
            loader.abort(exc)
        failed = _fail(run, exc, extract.pages)
        if isinstance(exc, VspcEtlError | DatabaseError):
            return failed
        raise
    finally:
        inbox.stop()
        if loader is not None:
            loader.close()


def _sync(
    run: _Run,
    loader: Loader,
    client: VspcClient,
    inbox: reader.Inbox,
    names: _NamesReader,
    extract: _Extract,
) -> RunResult:
    """Read and stage, merge, write the names and the sessions, commit."""
    settings = run.settings
    _extract(run, loader, client, inbox, names, extract)
    points_reader = _PointsReader(run, loader, client, inbox, extract)
    loader.end_staging()
    _check_cancel(run.cancel)
    names.start()  # if not started beside the job pages: read while the merge runs
    result, _ = loader.merge(extract.verdicts, max_delete_ratio=settings.vspc_max_delete_ratio)
    points_read = points_reader.finish(names)
    if isinstance(points_read, str):
        points = PointsOutcome("refused", note=points_read)
    else:
        points = loader.merge_points(*points_read, max_delete_ratio=settings.vspc_max_delete_ratio)
    with _timed(extract.timings, "merge"), _timed(extract.timings, "names"):
        summary = names.finish()  # the pages still on their way, if any
    written = loader.write_names(summary, result)
    log.debug(
        "names: %d page(s) read, %d of them unchanged since the last complete read "
        "(not parsed); %d record(s) without a usable instanceUid skipped; %d "
        "name row(s) written",
        summary.pages,
        summary.unchanged_pages,
        summary.skipped,
        written,
    )
    complete = extract.complete
    notes = (
        "; ".join(
            n for n in (*extract.skipped, result.withheld, points.note, *summary.warnings) if n
        )
        or None
    )
    with _timed(extract.timings, "merge"):
        runs.finish_success(
            run.conn,
            run.row.run_id,
            complete=complete,
            pages=extract.pages,
            jobs_seen=result.seen,
            jobs_inserted=result.inserted,
            jobs_updated=result.updated,
            jobs_unchanged=result.unchanged,
            jobs_deleted=result.deleted,
            jobs_rejected=result.rejected,
            error=notes,
            **points.run_fields(),
        )
        pause("commit")  # chaos tests only (etl/testhook.py)
        run.conn.commit()
    outcome = RunResult(
        run.row.run_id,
        settings.source,
        "success",
        complete=complete,
        pages=extract.pages,
        seen=result.seen,
        inserted=result.inserted,
        updated=result.updated,
        unchanged=result.unchanged,
        deleted=result.deleted,
        rejected=result.rejected,
        duration_s=time.monotonic() - run.clock,
        error=notes,
        timings=extract.timings,
        points=points,
    )
    log.info(outcome.summary(), extra=outcome.log_fields())
    return outcome


def _fail(run: _Run, exc: BaseException, pages: int) -> RunResult:
    """Roll back, record the failure in ``etl_runs`` (own transaction), log it."""
    _rollback(run.conn)
    error = _describe_failure(exc)
    if run.cancel is not None and run.cancel.is_set() and error != CANCELLED:
        error = f"{CANCELLED} ({error})"  # e.g. its merge statement cancelled on the server
    runs.finish_failed(run.engine, run.row.run_id, error, pages=pages)
    failed = RunResult(
        run.row.run_id,
        run.settings.source,
        "failed",
        pages=pages,
        duration_s=time.monotonic() - run.clock,
        error=error,
        misconfigured=isinstance(exc, ConfigError),
    )
    log.error("run %d failed: %s", run.row.run_id, error, extra=failed.log_fields())
    return failed


class _NamesReader:
    """Organization and agent names, read by a thread of their own into the loader's inbox.

    Names are secondary (a refusal is only a warning, see ``fetch_names``). Pages the last
    complete read also served are skipped (``NameStage.known_pages``); when there are such
    pages, the names are most likely unchanged and the thread starts once the job pages are
    staged, so its requests run while the merge keeps only PostgreSQL busy (beside the job
    pages they competed with them for the same two cores: +0.1-0.2 s on an hourly sync of
    10,000 jobs). A first read (nothing known) starts once the first job page is in,
    so that its pages, every one to be staged, are staged between job pages instead of all
    after the merge (when is the loader's decision). The thread shares the client's
    ``VSPC_CONCURRENCY`` request slots.
    """

    def __init__(
        self, settings: Settings, client: VspcClient, inbox: reader.Inbox, loader: Loader
    ) -> None:
        self.loader = loader
        self.summary: Names | None = None
        self._inbox = inbox
        self._known = loader.known_names
        self._channel = inbox.channel(NAME_PAGES_WAITING)
        self._work = partial(
            reader.read_names,
            client,
            self._channel,
            page_size=settings.vspc_page_size,
            concurrency=settings.vspc_concurrency,
            known=self._known,
        )
        self._started = False

    def start_early(self) -> None:
        """Start beside the job pages if this is a first read (no page known)."""
        if not self._known:
            self.start()

    def start(self) -> None:
        if not self._started:
            self._started = True
            reader.start("names", self._channel, self._work)

    def take(self, item: Item) -> None:
        """An item that is not a job page: a name page, the end of the names, a failure."""
        if isinstance(item, PageRead):
            self.loader.add_names(item.collection, item.records)
        elif isinstance(item, NamesRead):
            self.summary = item.names
        elif isinstance(item, ReadFailed):
            raise item.error
        else:  # a pass ends only where the job reader's items are taken
            raise AssertionError(f"unexpected {item!r}")

    def finish(self) -> Names:
        """Stage the pages still to come, waiting for them; the summary of both collections."""
        self.start()
        while self.summary is None:
            self.take(self._inbox.get())
        return self.summary


def _extract(
    run: _Run,
    loader: Loader,
    client: VspcClient,
    inbox: reader.Inbox,
    names: _NamesReader,
    extract: _Extract,
) -> None:
    """Read each platform's jobs into the loader, one collection after the other (see
    :class:`_JobPasses`); the name pages that arrive meanwhile go to the loader between job
    pages. Once the first page has come back (the console answers, the credentials work), a
    first read of the names starts beside the job pages."""
    passes = _JobPasses(run, loader, client, extract)
    try:
        while passes.current is not None:
            item = inbox.poll() or passes.next_item()
            collection, _ = passes.current
            if isinstance(item, PageRead) and item.collection == collection.name:
                _add_page(run, loader, names, extract, collection, item)
            elif isinstance(item, PassEnded) and item.collection == collection.name:
                passes.ended(item)
            elif isinstance(item, ReadFailed) and item.collection == collection.name:
                passes.failed(item)
            else:
                with _timed(extract.timings, "names"):
                    names.take(item)
    finally:
        passes.close()  # a failure or a cancel mid-pass: the pager's requests end now
    if len(passes.refusals) == passes.collections:
        raise passes.refusals[0]  # no platform readable: the account's role or URL is wrong


class _JobPasses:
    """The passes over the job collections of a run, one at a time, taken on the loader's
    thread (``reader.pass_items``: the pager's requests in flight read ahead): re-read
    (bounded) a collection that shifted under the pager; skip one the console refuses (404:
    an older console; 403: the account's scope) with a warning; any other failure fails the
    run. One collection after the other: each pager keeps VSPC_CONCURRENCY pages in flight
    and halves its share on throttling or logouts; three side by side would each keep theirs,
    and a console that logs sessions out every few requests would see no relief."""

    def __init__(self, run: _Run, loader: Loader, client: VspcClient, extract: _Extract) -> None:
        self.run, self.loader, self.client, self.extract = run, loader, client, extract
        self.current: tuple[Collection, int] | None = None
        """The collection being read and its attempt; None once every pass is over."""
        self.refusals: list[BaseException] = []
        self.pending = list(job_collections(run.settings.platforms))
        self.collections = len(self.pending)
        self._items: Generator[PageRead | PassEnded, None, None] | None = None
        self._start(self.pending.pop(0), 1)

    def next_item(self) -> Item:
        """The pass's next item, waiting for it; its failure as :class:`ReadFailed`."""
        assert self._items is not None
        try:
            with _timed(self.extract.timings, "http_wait"):
                return next(self._items)
        except Exception as exc:  # handed on as a reader thread would hand it
            assert self.current is not None
            return ReadFailed(self.current[0].name, exc)

    def ended(self, item: PassEnded) -> None:
        """A pass ended: its verdict; then a re-read, or the next collection."""
        assert self.current is not None
        collection, attempt = self.current
        system_type = collection.contract.system_type
        verdict = self.loader.end_pass(item.report, system_type)
        self.extract.verdicts[system_type] = verdict
        max_passes = self.run.settings.vspc_max_passes
        if not verdict.complete:
            log.warning(
                "extract pass %d of %d of the %s jobs is not verifiably complete: %s",
                attempt,
                max_passes,
                system_type,
                verdict.problem,
            )
            if attempt < max_passes:
                self._start(collection, attempt + 1)
                return
        self._next()

    def failed(self, item: ReadFailed) -> None:
        """A pass failed: a refusal skips the collection, anything else fails the run."""
        assert self.current is not None
        collection, _ = self.current
        if not _refused(item.error):
            raise item.error
        self.refusals.append(item.error)
        system_type = collection.contract.system_type
        self.extract.verdicts[system_type] = None
        warning = f"{system_type} jobs were skipped, none of them deleted or changed: {item.error}"
        log.warning("%s; the other platforms are synced", warning)
        self.extract.skipped.append(warning)
        self._next()

    def close(self) -> None:
        if self._items is not None:
            self._items.close()

    def _next(self) -> None:
        self.current = None
        if self.pending:
            self._start(self.pending.pop(0), 1)

    def _start(self, collection: Collection, attempt: int) -> None:
        if attempt > 1:
            self.loader.next_pass(collection.contract.system_type)
        self.close()  # the pass before, if any, has ended
        self.current = (collection, attempt)
        settings = self.run.settings
        self._items = reader.pass_items(
            self.client,
            collection,
            page_size=settings.vspc_page_size,
            concurrency=settings.vspc_concurrency,
        )


class _PointsReader:
    """The restore points, read by a thread of their own once the job pages are staged, so
    that their requests run while the job merge keeps PostgreSQL busy; their pages wait in the
    inbox (up to ``POINT_PAGES_WAITING``) until the merge is done, then are staged and merged.

    The read is every point (a full read, re-read like a job collection until a pass proves
    complete) or only those created since the newest stored one less the overlap
    (``etl.load.points.plan``), oldest first: the overlap by uid, its few unknown points
    fetched in full (``reader.read_new_points``). A 404 or 403 on the path is a warning; any
    other failure fails the run.
    """

    def __init__(
        self,
        run: _Run,
        loader: Loader,
        client: VspcClient,
        inbox: reader.Inbox,
        extract: _Extract,
    ) -> None:
        self.run, self.loader, self.client, self.inbox, self.extract = (
            run,
            loader,
            client,
            inbox,
            extract,
        )
        self.plan = loader.points_plan(run.settings.vspc_restore_points_full_every)
        self._start()

    def _start(self) -> None:
        settings, plan = self.run.settings, self.plan
        channel = self.inbox.channel(POINT_PAGES_WAITING)
        page_size, concurrency = settings.vspc_page_size, settings.vspc_concurrency
        overlap = plan.overlap_params()
        work: Callable[[], None]
        if overlap is None:  # a full read: one pass, like a job collection's
            items = reader.pass_items(
                self.client,
                RESTORE_POINTS,
                page_size=page_size,
                concurrency=concurrency,
                params=plan.params(),
                sort=SORT_BY_CREATION,
            )
            work = partial(reader.put_each, items, channel)
        else:
            work = partial(
                reader.read_new_points,
                self.client,
                RESTORE_POINTS,
                channel,
                page_size=page_size,
                concurrency=concurrency,
                params=plan.params(),
                sort=SORT_BY_CREATION,
                overlap=overlap,
                known=plan.known,
                fetch=plan.fetch_params,
                chunk=IN_CHUNK,
            )
        reader.start(RESTORE_POINTS.name, channel, work)

    def finish(self, names: _NamesReader) -> tuple[PointsPlan, PassVerdict] | str:
        """Stage the pages (re-reading a pass that did not prove complete): the plan and the
        last pass's verdict; or, if the console refuses the path, the warning."""
        settings, extract = self.run.settings, self.extract
        for attempt in range(1, settings.vspc_max_passes + 1):
            if attempt > 1:
                self.loader.next_points_pass()
                self._start()
            verdict: PassVerdict | None = None
            while verdict is None:
                with _timed(extract.timings, "http_wait"):
                    item = self.inbox.get()
                if _of(item, RESTORE_POINTS) and isinstance(item, PageRead):
                    extract.pages += 1
                    self.loader.add_points(item.records, item.offset)
                    _check_cancel(self.run.cancel)
                elif _of(item, RESTORE_POINTS) and isinstance(item, PassEnded):
                    verdict = self.loader.end_points_pass(item.report)
                elif _of(item, RESTORE_POINTS) and isinstance(item, ReadFailed):
                    if not _refused(item.error):
                        raise item.error
                    warning = (
                        "restore points were not read, the stored ones left as they are: "
                        f"{item.error}"
                    )
                    log.warning("%s; the jobs are synced", warning)
                    return warning
                else:
                    with _timed(extract.timings, "names"):
                        names.take(item)
            if verdict.complete:
                break
            log.warning(
                "%s read of the restore points, pass %d of %d, is not verifiably complete: %s",
                self.plan.read,
                attempt,
                settings.vspc_max_passes,
                verdict.problem,
            )
        assert verdict is not None  # vspc_max_passes >= 1
        return self.plan, verdict


def _of(item: Item, collection: Collection) -> bool:
    """Whether ``item`` came from the reader of ``collection``."""
    return not isinstance(item, NamesRead) and item.collection == collection.name


def _refused(error: BaseException) -> bool:
    """Whether a job collection's failure is the console refusing it: 404 (an older console
    without it) or 403 (outside the account's scope)."""
    return isinstance(error, PermissionDenied) or (
        isinstance(error, RequestRejected) and error.status_code == 404
    )


def _add_page(
    run: _Run,
    loader: Loader,
    names: _NamesReader,
    extract: _Extract,
    collection: Collection,
    item: PageRead,
) -> None:
    """Hand the loader one job page; progress; stop after it if cancelled."""
    extract.pages += 1
    extract.records += len(item.records)
    loader.add_jobs(item.records, item.offset, collection.contract)
    names.start_early()
    if run.progress is not None:
        extract.totals[collection.name] = item.total
        run.progress(extract.pages, extract.records, sum(extract.totals.values()))
    _check_cancel(run.cancel)  # stop after the page in hand


@contextmanager
def _timed(timings: dict[str, float], name: str) -> Iterator[None]:
    """Add the time spent in the block to ``timings[name]`` (where a run's time goes)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - started


def _check_cancel(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise RunCancelled(CANCELLED)


def _rollback(conn: Connection) -> None:
    """Roll back what SQLAlchemy began and what the stage did through the driver (its COPYs
    and lookups, which SQLAlchemy does not see): else, after a staging commit, the session
    would keep an aborted transaction, and then the source's lock, past the run."""
    try:
        conn.rollback()
        conn.connection.driver_connection.rollback()  # type: ignore[union-attr]
    except (SQLAlchemyError, psycopg.Error):
        log.debug("rollback failed; the connection is gone and took the transaction with it")


def _describe_failure(exc: BaseException) -> str:
    if isinstance(exc, VspcEtlError):
        return str(exc)
    if isinstance(exc, DatabaseError):
        return f"database error: {short(exc)}"
    if isinstance(exc, KeyboardInterrupt | SystemExit):
        return "interrupted before it finished; nothing of it was committed"
    return f"internal error ({exc.__class__.__name__}): {exc}"
