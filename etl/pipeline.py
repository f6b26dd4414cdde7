"""One sync run: VSPC -> extract -> transform -> stage -> merge -> PostgreSQL.

``run_once`` is the single entry point the CLI, the daemon, the demo and the tests call.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from etl import __version__
from etl.config import Settings
from etl.db import short
from etl.errors import LoadError, RecordRejected, VspcEtlError
from etl.extract import ApiKeyAuth, PassReport, PasswordAuth, RetryPolicy, VspcClient, iter_pages
from etl.load import runs
from etl.load.merge import merge
from etl.load.stage import Stage, StagedReject
from etl.transform import jsonb_safe, record_key, transform_record

log = logging.getLogger(__name__)

JOBS_PATH = "/api/v3/infrastructure/backupAgents/windows/jobs"

Progress = Callable[[int, int, int], None]
"""Called after each page with (pages read, records read, total the console reports)."""


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


@dataclass
class _Extract:
    pages: int = 0
    records: int = 0
    complete: bool = False
    problem: str | None = None
    reports: list[PassReport] = field(default_factory=list)


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
    settings: Settings, http: httpx.Client, *, sleep: Callable[[float], None] = time.sleep
) -> VspcClient:
    """A VSPC client with the configured credentials and retry budget."""
    auth: ApiKeyAuth | PasswordAuth
    if settings.vspc_api_key is not None and settings.vspc_api_key.get_secret_value():
        auth = ApiKeyAuth(settings.vspc_api_key.get_secret_value())
    else:
        assert settings.vspc_username and settings.vspc_password
        auth = PasswordAuth(settings.vspc_username, settings.vspc_password.get_secret_value())
    retry = RetryPolicy(
        max_attempts=settings.vspc_max_attempts, max_elapsed=settings.vspc_retry_budget
    )
    return VspcClient(http, auth, retry=retry, sleep=sleep)


def run_once(
    settings: Settings,
    *,
    engine: Engine,
    http: httpx.Client | None = None,
    progress: Progress | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> RunResult:
    """Sync every Windows agent job once. Never leaves a ``running`` row or partial data.

    Raises ConfigError for bad settings; every other expected failure is recorded in
    ``etl_runs`` and returned as a ``failed`` result. Unexpected exceptions are recorded too,
    then re-raised.
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
                log.info("sync of %s skipped: another sync holds the lock", source)
                return RunResult(row.run_id, source, "skipped", error="another sync was running")
            try:
                runs.fail_orphans(conn, source)
                run = runs.start(conn, source, __version__)
                log.info("run %d started for %s", run.run_id, source)
                return _execute(settings, conn, engine, http, run, progress, sleep, clock)
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
) -> RunResult:
    source = settings.source
    extract = _Extract()
    try:
        client = make_client(settings, http, sleep=sleep)
        stage = Stage(conn)
        stage.create()
        _extract(settings, client, stage, extract, progress)
        conn.commit()  # end the staging transaction; the merge gets one of its own
        with conn.begin():
            result = merge(
                conn,
                run_id=run.run_id,
                source=source,
                now=run.started_at,
                complete=extract.complete,
                incomplete_reason=extract.problem,
                max_delete_ratio=settings.vspc_max_delete_ratio,
            )
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
                error=result.withheld,
            )
    except BaseException as exc:
        _rollback(conn)
        error = _describe_failure(exc)
        runs.finish_failed(engine, run.run_id, error, pages=extract.pages)
        log.error("run %d failed: %s", run.run_id, error)
        if isinstance(exc, VspcEtlError | SQLAlchemyError):
            return RunResult(
                run.run_id,
                source,
                "failed",
                pages=extract.pages,
                duration_s=time.monotonic() - clock,
                error=error,
            )
        raise
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
        error=result.withheld,
    )
    log.info(outcome.summary())
    return outcome


def _extract(
    settings: Settings,
    client: VspcClient,
    stage: Stage,
    extract: _Extract,
    progress: Progress | None,
) -> None:
    """Read the collection into the stage, re-reading (bounded) if it shifted under the pager."""
    for attempt in range(1, settings.vspc_max_passes + 1):
        if attempt > 1:
            stage.next_pass()
        report = PassReport()
        extract.reports.append(report)
        for page in iter_pages(client, JOBS_PATH, page_size=settings.vspc_page_size, report=report):
            extract.pages += 1
            extract.records += len(page.items)
            _stage_page(stage, page.items, page.offset)
            if progress is not None:
                progress(extract.pages, extract.records, page.total)
        total = report.totals[-1] if report.totals else 0
        distinct = stage.distinct_keys()
        problems = list(report.problems)
        if report.consistent and distinct != total:
            problems.append(f"read {distinct} distinct jobs but the console reports {total}")
        if report.consistent and not problems:
            if attempt > 1:
                stage.keep_only_last_pass()
            extract.complete = True
            extract.problem = None
            return
        extract.problem = "; ".join(problems) or "the pass did not finish"
        log.warning(
            "extract pass %d of %d is not verifiably complete: %s",
            attempt,
            settings.vspc_max_passes,
            extract.problem,
        )


def _stage_page(stage: Stage, items: list[Any], offset: int) -> None:
    rows: list[tuple[Any, ...]] = []
    raws: list[Any] = []
    rejects: list[StagedReject] = []
    for record in items:
        try:
            rows.append(transform_record(record))
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
                    safe_key if isinstance(safe_key, str) else None, exc.reason, jsonb_safe(record)
                )
            )
        else:
            raws.append(record)
    stage.add(rows, raws, rejects)


def _rollback(conn: Connection) -> None:
    try:
        conn.rollback()
    except SQLAlchemyError:
        log.debug("rollback failed; the connection is gone and took the transaction with it")


def _describe_failure(exc: BaseException) -> str:
    if isinstance(exc, VspcEtlError):
        return str(exc)
    if isinstance(exc, SQLAlchemyError):
        return f"database error: {short(exc)}"
    if isinstance(exc, KeyboardInterrupt | SystemExit):
        return "interrupted before it finished; nothing of it was committed"
    return f"internal error ({exc.__class__.__name__}): {exc}"
