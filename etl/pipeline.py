"""One sync run: VSPC -> extract -> transform -> stage -> merge -> PostgreSQL.

``run_once`` is the single entry point the CLI, the daemon, the demo and the tests call.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import psycopg
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from etl import __version__
from etl.config import Settings
from etl.db import short
from etl.errors import LoadError, RecordRejected, RunCancelled, VspcEtlError
from etl.extract import ApiKeyAuth, PassReport, PasswordAuth, RetryPolicy, VspcClient, iter_pages
from etl.extract.client import OrjsonArray, decode_value
from etl.extract.jobs import JobTexts, decode_jobs_page
from etl.extract.names import Names, NamesFetch
from etl.load import names as name_store
from etl.load import reporting, runs
from etl.load.merge import EarlyMerge, merge
from etl.load.stage import Stage, StagedReject
from etl.testhook import pause
from etl.transform import (
    MAX_DEPTH,
    UID_AT,
    Fingerprint,
    NotTyped,
    fingerprint,
    fingerprint_text,
    jsonb_safe,
    record_key,
    transform_typed,
    transform_with_raw,
)

log = logging.getLogger(__name__)

JOBS_PATH = "/api/v3/infrastructure/backupAgents/windows/jobs"

Progress = Callable[[int, int, int], None]
"""Called after each page with (pages read, records read, total the console reports)."""

OnEvent = Callable[[str, str], None]
"""Called by the VSPC client per HTTP request (``"request"``) and retry, with the outcome."""

# The stage COPYs through the raw psycopg cursor, whose errors SQLAlchemy never wraps.
DatabaseError = SQLAlchemyError | psycopg.Error

CANCELLED = "cancelled before it finished (the process is shutting down); nothing was committed"


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
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds by stage (for benchmarks and DEBUG logs): http_wait (waiting for the next page),
    transform, copy, merge."""

    def summary(self) -> str:
        """One line for the operator."""
        if self.status == "skipped":
            return f"run {self.run_id} skipped: {self.error}"
        head = (
            f"run {self.run_id} {self.status} in {self.duration_s:.1f}s: {self.pages} pages, "
            f"{self.seen} jobs seen, {self.inserted} inserted, {self.updated} updated, "
            f"{self.unchanged} unchanged, {self.deleted} deleted, {self.rejected} rejected"
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
        if self.error:
            fields["error"] = self.error
        return fields


@dataclass
class _Extract:
    pages: int = 0
    records: int = 0
    complete: bool = False
    problem: str | None = None
    distinct: int | None = None
    """Distinct jobs the stage holds, once the extract is complete (the last pass's count)."""
    reports: list[PassReport] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


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
        decoders={JOBS_PATH: decode_jobs_page},
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
    """Sync every Windows agent job once. Never leaves a ``running`` row or partial data.

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
                    settings, conn, engine, http, run, progress, sleep, clock, cancel, on_event
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


def _execute(
    settings: Settings,
    conn: Connection,
    engine: Engine,
    http: httpx.Client,
    run: runs.RunRow,
    progress: Progress | None,
    sleep: Callable[[float], None],
    clock: float,
    cancel: threading.Event | None = None,
    on_event: OnEvent | None = None,
) -> RunResult:
    source = settings.source
    extract = _Extract()
    names: _NamesReader | None = None
    stage: Stage | None = None
    try:
        client = make_client(settings, http, sleep=sleep, on_event=on_event)
        stage = Stage(conn)
        stage.create()
        names = _NamesReader(
            settings,
            client,
            name_store.NameStage(conn),
            extract.timings,
            stage.end_copy,
            stage.busy,
        )
        stage.before_batch = names.stage_waiting
        conn.commit()
        # A first sync merges its new jobs while later pages are read (one transaction then).
        stage.merge_early(
            lambda driver: EarlyMerge(driver, run_id=run.run_id, source=source, now=run.started_at),
            source,
        )
        _extract(settings, client, stage, names, extract, progress, cancel)
        with _timed(extract.timings, "merge"):
            stage.finish_early()  # the last batch of an early merge, if there is one
        stage.commit()  # end the staging transaction (an early merge: only the COPY, see there)
        _check_cancel(cancel)
        names.start()  # if not started beside the job pages: read while the merge runs
        early = stage.early_outcome()
        with _timed(extract.timings, "merge"):
            result = merge(
                conn,
                run_id=run.run_id,
                source=source,
                now=run.started_at,
                complete=extract.complete,
                incomplete_reason=extract.problem,
                max_delete_ratio=settings.vspc_max_delete_ratio,
                reread=stage.pass_no > 1,
                early=early,
                seen=extract.distinct,
            )
            summary = names.finish()  # the pages still on their way, if any
            with _timed(extract.timings, "reporting"):  # inside "merge": same transaction
                written = names.stage.upsert(summary, source=source, now=run.started_at)
                log.debug(
                    "names: %d page(s) read, %d of them unchanged since the last complete read "
                    "(not parsed); %d record(s) without a usable instanceUid skipped; %d "
                    "name row(s) written",
                    summary.pages,
                    summary.unchanged_pages,
                    summary.skipped,
                    written,
                )
                reporting.record_job_runs(
                    conn,
                    now=run.started_at,
                    source=source,
                    run_id=run.run_id,
                    earlier=early.earliest_session if early else None,
                )
            notes = "; ".join(n for n in (result.withheld, *summary.warnings) if n) or None
            runs.finish_success(
                conn,
                run.run_id,
                complete=extract.complete,
                pages=extract.pages,
                jobs_seen=result.seen,
                jobs_inserted=result.inserted,
                jobs_updated=result.updated,
                jobs_unchanged=result.unchanged,
                jobs_deleted=result.deleted,
                jobs_rejected=result.rejected,
                error=notes,
            )
            pause("commit")  # chaos tests only (etl/testhook.py)
            conn.commit()
    except BaseException as exc:
        if names is not None:
            names.stop()
        if stage is not None:
            stage.abort_copy(exc)
        _rollback(conn)
        error = _describe_failure(exc)
        if cancel is not None and cancel.is_set() and error != CANCELLED:
            error = f"{CANCELLED} ({error})"  # e.g. its merge statement cancelled on the server
        runs.finish_failed(engine, run.run_id, error, pages=extract.pages)
        failed = RunResult(
            run.run_id,
            source,
            "failed",
            pages=extract.pages,
            duration_s=time.monotonic() - clock,
            error=error,
        )
        log.error("run %d failed: %s", run.run_id, error, extra=failed.log_fields())
        if isinstance(exc, VspcEtlError | DatabaseError):
            return failed
        raise
    finally:
        if stage is not None:
            stage.close()
    outcome = RunResult(
        run.run_id,
        source,
        "success",
        complete=extract.complete,
        pages=extract.pages,
        seen=result.seen,
        inserted=result.inserted,
        updated=result.updated,
        unchanged=result.unchanged,
        deleted=result.deleted,
        rejected=result.rejected,
        duration_s=time.monotonic() - clock,
        error=notes,
        timings=extract.timings,
    )
    log.info(outcome.summary(), extra=outcome.log_fields())
    return outcome


class _NamesReader:
    """Organization and agent names, read by a thread of their own.

    Names are secondary (a refusal is only a warning, see ``fetch_names``). Pages the last
    complete read also served are skipped (``NameStage.known_pages``); when there are such
    pages, the names are most likely unchanged and the thread starts once the job pages are
    staged, so its requests run while the merge keeps only PostgreSQL busy (beside the job
    pages they competed with them for the same two cores: +0.1-0.2 s on an hourly sync of
    10,000 jobs). A first read (nothing known) starts once the job pager has its first page,
    so that its pages, every one to be staged, are COPYed between job pages instead of all
    after the merge. The thread shares the client's ``VSPC_CONCURRENCY`` request slots and
    hands its pages over through a short queue (``NamesFetch``); those still on their way
    are staged inside the merge transaction. Between job pages they are taken only once the
    queue is full: staging them ends the job COPY (``end_job_copy``), which then restarts, so
    the fewer times the better (~30 instead of ~120 for 100,000 jobs' names); and not while
    an early merge batch has the connection (``job_stage_busy``): they would wait for it.
    """

    def __init__(
        self,
        settings: Settings,
        client: VspcClient,
        stage: name_store.NameStage,
        timings: dict[str, float],
        end_job_copy: Callable[[], None],
        job_stage_busy: Callable[[], bool],
    ) -> None:
        self.settings = settings
        self.client = client
        self.stage = stage
        self.timings = timings
        self.end_job_copy = end_job_copy
        self.job_stage_busy = job_stage_busy
        self.fetch: NamesFetch | None = None
        self.known = stage.known_pages(settings.source)

    def start_early(self) -> None:
        """Start beside the job pages if this is a first read (no page known)."""
        if not self.known:
            self.start()

    def start(self) -> None:
        if self.fetch is None:
            self.fetch = NamesFetch(
                self.client,
                page_size=self.settings.vspc_page_size,
                concurrency=self.settings.vspc_concurrency,
                known=self.known,
            )

    def stage_ready(self) -> None:
        if self.fetch is None or self.job_stage_busy():
            return  # not while an early merge batch has the connection: they wait for it
        with _timed(self.timings, "names"):
            self.fetch.drain_ready(self._add, at_least=self.fetch.queue_pages)

    def stage_waiting(self) -> None:
        """Stage every name page waiting, however few: the job stage calls this while its
        connection is free just before an early merge batch starts. A first sync starts a
        batch as soon as the last one ends, so :meth:`stage_ready` always finds one running:
        without this the names thread stalled on its full queue from the first batch on, and
        its pages were read and staged after the job pages (~1 s at 100,000 jobs)."""
        if self.fetch is not None:
            with _timed(self.timings, "names"):
                self.fetch.drain_ready(self._add)

    def finish(self) -> Names:
        """Stage the pages still to come, waiting for them; the summary of both collections."""
        self.start()
        assert self.fetch is not None
        with _timed(self.timings, "names"):
            return self.fetch.drain(self._add)

    def _add(self, kind: str, rows: list[Any]) -> None:
        self.end_job_copy()
        self.stage.add(kind, rows)

    def stop(self) -> None:
        if self.fetch is not None:
            self.fetch.stop()


def _extract(
    settings: Settings,
    client: VspcClient,
    stage: Stage,
    names: _NamesReader,
    extract: _Extract,
    progress: Progress | None,
    cancel: threading.Event | None = None,
) -> None:
    """Read the collection into the stage, re-reading (bounded) if it shifted under the pager.

    Once the first page has come back (the console answers, the credentials work), a first
    read of the names starts beside the job pages; the name pages it has ready are staged
    between two job pages.
    """
    for attempt in range(1, settings.vspc_max_passes + 1):
        if attempt > 1:
            stage.next_pass()
        report = PassReport()
        extract.reports.append(report)
        pages = iter_pages(
            client,
            JOBS_PATH,
            page_size=settings.vspc_page_size,
            report=report,
            concurrency=settings.vspc_concurrency,
        )
        # Pages stream through: fetched by the pager's threads, transformed and COPYed here
        # as they arrive. (A COPY thread of its own was tried: it lost more to the GIL than
        # it gained in overlap.) A failure stops the pager's threads now, not at GC.
        with closing(pages):
            while True:
                with _timed(extract.timings, "http_wait"):
                    page = next(pages, None)
                if page is None:
                    break
                extract.pages += 1
                extract.records += len(page.items)
                _stage_page(stage, page.items, page.offset, settings.source, extract.timings)
                names.start_early()
                names.stage_ready()
                if progress is not None:
                    progress(extract.pages, extract.records, page.total)
                _check_cancel(cancel)  # stop after the page in hand
        total = report.totals[-1] if report.totals else 0
        distinct = stage.distinct_keys()
        problems = list(report.problems)
        if report.consistent and distinct != total:
            problems.append(f"read {distinct} distinct jobs but the console reports {total}")
        if report.consistent and not problems:
            if attempt > 1:
                stage.keep_only_last_pass()  # the stage then holds this pass alone
            extract.complete = True
            extract.problem = None
            extract.distinct = distinct
            return
        extract.problem = "; ".join(problems) or "the pass did not finish"
        log.warning(
            "extract pass %d of %d is not verifiably complete: %s",
            attempt,
            settings.vspc_max_passes,
            extract.problem,
        )


@contextmanager
def _timed(timings: dict[str, float], name: str) -> Iterator[None]:
    """Add the time spent in the block to ``timings[name]`` (where a run's time goes)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - started


def _stage_page(
    stage: Stage, items: list[Any], offset: int, source: str, timings: dict[str, float]
) -> None:
    """Transform and COPY one page; records unchanged since the last run skip the transform.

    A record whose fingerprint equals the one stored for its (live) job describes exactly
    what the warehouse holds: only its uid is staged. The others are transformed in full.
    A page of :class:`JobTexts` (the typed decoder's) takes the typed path record by record:
    its fingerprints hash the texts as received, and what the typed path cannot vouch for is
    decoded and takes the general path.
    """
    typed = items.fields if isinstance(items, JobTexts) else None
    with _timed(timings, "transform"):
        if typed is None:
            prints = [fingerprint(record) for record in items]
        else:
            prints = [
                None if values is None else fingerprint_text(values[UID_AT], text)
                for text, values in zip(items, typed, strict=True)
            ]
        hashed = [i for i, p in enumerate(prints) if p is not None]
        pairs = [(p.uid, p.digest) for p in prints if p is not None]
    with _timed(timings, "copy"):
        same = {hashed[k] for k in stage.add_same(pairs, source)}
    with _timed(timings, "transform"):
        rest = [record for i, record in enumerate(items) if i not in same]
        rest_prints = [print_ for i, print_ in enumerate(prints) if i not in same]
        rest_typed = None if typed is None else [v for i, v in enumerate(typed) if i not in same]
        by_orjson = isinstance(items, OrjsonArray)
        rows, raws, fps, rejects = _transform_page(rest, rest_prints, offset, by_orjson, rest_typed)
    with _timed(timings, "copy"):
        stage.add(rows, raws, fps, rejects)


def _transform_page(
    items: list[Any],
    prints: list[Fingerprint | None],
    offset: int,
    by_orjson: bool = False,
    typed: list[tuple[Any, ...] | None] | None = None,
) -> tuple[list[tuple[Any, ...]], list[str], list[bytes | None], list[StagedReject]]:
    """Rows, raws, fingerprints and rejects of a page's records. With ``typed`` (the fields
    the typed decoder read), ``items`` are the records' texts as received."""
    rows: list[tuple[Any, ...]] = []
    raws: list[str] = []
    fps: list[bytes | None] = []
    rejects: list[StagedReject] = []
    for i, (record, print_) in enumerate(zip(items, prints, strict=True)):
        if typed is not None:
            values = typed[i]
            if values is not None:
                try:
                    row, raw = transform_typed(values, record)
                except NotTyped:
                    pass
                else:
                    rows.append(row)
                    raws.append(raw)
                    fps.append(None if print_ is None else print_.digest)
                    continue
            # The general path on the decoded text; its fingerprint (of the text) still holds.
            record, decoded_by_orjson = decode_value(record)
            dumped = None
        else:
            dumped = None if print_ is None else print_.text
            decoded_by_orjson = by_orjson
        try:
            # The text the fingerprint hashed is the record written out: it is reused as raw.
            row, raw = transform_with_raw(record, dumped, by_orjson=decoded_by_orjson)
        except RecordRejected as exc:
            key = record_key(record)
            safe_key = jsonb_safe(key) if key is not None else None
            log.warning(
                "rejected job %s (page at offset %d): %s; it is kept in vspc.etl_rejects and "
                "the rest of the page is loaded",
                safe_key or "without instanceUid",
                offset,
                exc.reason,
            )
            rejects.append(
                StagedReject(
                    safe_key if isinstance(safe_key, str) else None,
                    exc.reason,
                    jsonb_safe(record, max_depth=MAX_DEPTH),
                )
            )
        else:
            rows.append(row)
            raws.append(raw)
            fps.append(None if print_ is None else print_.digest)
    return rows, raws, fps, rejects


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
