"""The loader: the one owner of the run's database connection.

Readers hand it items (``etl.collections``); the loader alone decides what runs on the
connection and when: the fingerprint lookup of a page, its COPY, the name pages' COPY, an early
merge batch, the merge. Every decision is made here, in the loader's thread, in the order the
items arrive; the stage (``etl.load.stage``), the merge (``etl.load.merge``), the names
(``etl.load.names``) and the reporting tables (``etl.load.reporting``) only execute.

A first sync (the source has no live job) is one transaction: new jobs are written by early
merge batches while later pages arrive (:class:`~etl.load.merge.EarlyMerge` runs each batch's
statement while the loader transforms the next pages). While a batch has the connection, the
loader holds the rows of the pages that arrive (up to ``HOLD_ROWS``) and the name pages; the
moment a batch ends is when the held rows are written and the name pages waiting are staged.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from time import perf_counter
from typing import Any

from sqlalchemy import Connection

from etl.extract.pager import PassReport
from etl.load import points, reporting
from etl.load.merge import EarlyMerge, EarlyOutcome, MergeResult, Pass, merge
from etl.load.names import NameStage
from etl.load.stage import Stage
from etl.points import transform_points
from etl.transform import WINDOWS, Contract, JobRecord, Reject, fingerprints, transform_page

log = logging.getLogger(__name__)

HOLD_ROWS = 5_000
"""Rows held back while an early merge batch runs, at most; then the loader waits for it."""
NAME_PAGES = 4
"""Name pages kept before they are staged (each staging ends the job COPY, which restarts:
the fewer times the better), unless an early batch has the connection."""
MERGE_EARLY = True
"""Whether a first sync merges its new jobs while later pages are read."""


@dataclass(frozen=True)
class PassVerdict:
    """Whether a pass proved the collection read completely; if not, why not."""

    complete: bool
    problem: str | None
    distinct: int


class Loader:
    """Stages the pages of one run on ``conn`` and merges them (see the module)."""

    def __init__(
        self,
        conn: Connection,
        *,
        run_id: int,
        source: str,
        now: datetime,
        timings: dict[str, float],
    ) -> None:
        self.conn = conn
        self.run_id = run_id
        self.source = source
        self.now = now
        self.timings = timings
        self.stage = Stage(conn)
        self.stage.create()
        self.names = NameStage(conn)
        self.known_names = self.names.known_pages(source)
        self.points = points.PointStage(conn)
        self.points.create()
        self._points_plan = points.PointsPlan(True, None)
        conn.commit()
        self._names_waiting: list[tuple[str, list[Any]]] = []
        self._batches: EarlyMerge | None = None
        if MERGE_EARLY and self.stage.first_sync(source):
            self.stage.one_transaction()
            self._batches = EarlyMerge(
                conn.connection.driver_connection,  # type: ignore[arg-type]
                run_id=run_id,
                source=source,
                now=now,
            )

    # -- pages -------------------------------------------------------------------------------

    def add_jobs(self, records: list[JobRecord], offset: int, contract: Contract = WINDOWS) -> None:
        """Stage one page of job records of ``contract``'s platform: by uid only those whose
        fingerprint matches their live job's (unchanged), the others transformed in full;
        rejects with their reason."""
        system_type = contract.system_type
        with self._timed("transform"):
            prints = fingerprints(records)
            hashed = [i for i, p in enumerate(prints) if p is not None]
            pairs = [(p.uid, p.digest) for p in prints if p is not None]
        with self._timed("copy"):
            # Only a source with live jobs is looked up, and it has no early batches.
            same = {hashed[k] for k in self.stage.add_same(pairs, self.source, system_type)}
        with self._timed("transform"):
            rows, raws, fps, rejects = transform_page(records, prints, same, contract)
            for reject in rejects:
                log.warning(
                    "rejected %s job %s (page at offset %d): %s; it is kept in "
                    "vspc.etl_rejects and the rest of the page is loaded",
                    system_type,
                    reject.instance_uid or "without instanceUid",
                    offset,
                    reject.reason,
                )
        with self._timed("copy"):
            self._write(rows, raws, fps, rejects, system_type)
        self._stage_names(False)

    def add_names(self, kind: str, rows: list[Any]) -> None:
        """Keep one page of names, staged with the next ones (see ``NAME_PAGES``)."""
        self._names_waiting.append((kind, rows))
        self._stage_names(False)

    def _write(
        self,
        rows: list[tuple[Any, ...]],
        raws: list[str],
        fps: list[bytes | None],
        rejects: list[Reject],
        system_type: str,
    ) -> None:
        batches = self._batches
        if (
            batches is not None
            and batches.busy()
            and rows
            and not rejects
            and self.stage.held_rows + len(rows) < HOLD_ROWS
        ):
            self.stage.add(rows, raws, fps, (), hold=True, system_type=system_type)
            return
        self._free()
        self.stage.add(rows, raws, fps, rejects, system_type=system_type)
        if batches is not None and batches.due(self.stage.job_rows):
            self._stage_names(True)  # the connection is free: the moment for the name pages
            self.stage.end_copy()
            batches.start(self.stage.seq, self.stage.job_rows)

    def _stage_names(self, free: bool) -> None:
        """Stage the name pages kept: all of them once the connection is ``free`` anyway,
        else only when ``NAME_PAGES`` wait and no batch has it (twice as many: wait for it)."""
        waiting = len(self._names_waiting)
        if not waiting or (not free and waiting < NAME_PAGES):
            return
        busy = self._batches is not None and self._batches.busy()
        if not free and busy and waiting < 2 * NAME_PAGES:
            return
        with self._timed("names"):
            self._free()
            self.stage.end_copy()
            # Consecutive pages of one collection go through one COPY.
            kind = self._names_waiting[0][0]
            rows: list[Any] = []
            for page_kind, page_rows in self._names_waiting:
                if page_kind != kind:
                    self.names.add(kind, rows)
                    kind, rows = page_kind, []
                rows.extend(page_rows)
            self.names.add(kind, rows)
            self._names_waiting = []

    def _free(self) -> None:
        """Wait for the running early batch, if any (raising its failure)."""
        if self._batches is not None:
            self._batches.wait()

    # -- passes ------------------------------------------------------------------------------

    def end_pass(self, report: PassReport, system_type: str = "Windows") -> PassVerdict:
        """Whether the pass of ``system_type``'s collection just staged proves it complete:
        it ended normally, saw nothing shift, and staged as many distinct jobs as the console
        reports."""
        self._free()
        distinct = self.stage.distinct_keys(system_type)
        total = report.totals[-1] if report.totals else 0
        problems = list(report.problems)
        if report.consistent and distinct != total:
            problems.append(f"read {distinct} distinct jobs but the console reports {total}")
        if report.consistent and not problems:
            if self.stage.pass_of(system_type) > 1:
                # the stage then holds this pass alone of this collection
                self.stage.keep_only_last_pass(system_type)
            return PassVerdict(True, None, distinct)
        return PassVerdict(False, "; ".join(problems) or "the pass did not finish", distinct)

    def next_pass(self, system_type: str = "Windows") -> None:
        """Start a re-read of ``system_type``'s collection; rows of its earlier passes stay
        until a pass proves complete."""
        self._free()
        self.stage.next_pass(system_type)

    # -- the merge ---------------------------------------------------------------------------

    def end_staging(self) -> None:
        """Write the last early batch, if any, and end the staging transaction (with early
        batches: only the COPY, the merge commits)."""
        with self._timed("merge"):
            batches = self._batches
            self._free()
            self.stage.end_copy()
            if batches is not None and batches.merged_upto < self.stage.seq:
                batches.start(self.stage.seq, self.stage.job_rows)
                batches.wait()
        self.stage.commit()

    def merge(
        self,
        verdicts: Mapping[str, PassVerdict | None] | PassVerdict | None,
        *,
        max_delete_ratio: float,
    ) -> tuple[MergeResult, EarlyOutcome | None]:
        """Apply the staged jobs (inside the run's transaction, not committed). ``verdicts``:
        by ``system_type``, each collection's last pass (None: skipped, not verified); a
        platform absent was not read. One verdict alone is Windows'."""
        if not isinstance(verdicts, Mapping):
            verdicts = {"Windows": verdicts}
        early = self.early_outcome()
        read = [v for v in verdicts.values() if v is not None]
        every = len(read) == len(verdicts) and all(v.complete for v in read)
        with self._timed("merge"):
            result = merge(
                self.conn,
                run_id=self.run_id,
                source=self.source,
                now=self.now,
                passes={
                    t: Pass(v is not None and v.complete, None if v is None else v.problem)
                    for t, v in verdicts.items()
                    if v is not None
                },
                max_delete_ratio=max_delete_ratio,
                reread=self.stage.reread,
                early=early,
                seen=sum(v.distinct for v in read) if every else None,
            )
        return result, early

    def early_outcome(self) -> EarlyOutcome | None:
        """What the early batches did, if there were any."""
        if self._batches is None:
            return None
        return EarlyOutcome(self.stage.job_rows, self._batches.rows, self._batches.earliest)

    def write_names(self, summary: Any, merged: MergeResult) -> int:
        """Stage the name pages left, upsert the names read completely, and record the
        sessions of the jobs this run changed (inside the merge's transaction)."""
        with self._timed("merge"):
            self._stage_names(True)
            with self._timed("reporting"):
                written = self.names.upsert(summary, source=self.source, now=self.now)
                reporting.record_job_runs(
                    self.conn,
                    now=self.now,
                    source=self.source,
                    run_id=self.run_id,
                    earlier=merged.earliest_session,
                )
        return written

    # -- restore points ----------------------------------------------------------------------

    def points_plan(self, full_every: int) -> points.PointsPlan:
        """Whether this run reads every restore point or only the new ones."""
        self._free()
        self.stage.end_copy()
        self._points_plan = points.plan(self.conn, self.source, now=self.now, full_every=full_every)
        return self._points_plan

    def add_points(self, records: list[Any], offset: int) -> None:
        """Stage one page of restore points (read after the job pages: the job COPY ends); a
        *new* read skips the points already stored (``PointsPlan.known``)."""
        with self._timed("transform"):
            known = self._points_plan.known
            if known:
                kept = []
                for record in records:
                    uid = record.get("instanceUid") if isinstance(record, dict) else None
                    if isinstance(uid, str) and uid.lower() in known:
                        self.points.skipped.add(uid.lower())
                    else:
                        kept.append(record)
                records = kept
            rows, rejects = transform_points(records)
            for reject in rejects:
                log.warning(
                    "rejected restore point %s (page at offset %d): %s; it is kept in "
                    "vspc.etl_rejects and the rest of the page is loaded",
                    reject.instance_uid or "without instanceUid",
                    offset,
                    reject.reason,
                )
        if not rows and not rejects:
            return
        with self._timed("copy"):
            self._free()
            self.stage.end_copy()
            self.points.add(rows, rejects)

    def end_points_pass(self, report: PassReport) -> PassVerdict:
        """Whether the pass over the restore points proves the read complete (as ``end_pass``)."""
        distinct = self.points.distinct()
        total = report.totals[-1] if report.totals else 0
        problems = list(report.problems)
        if report.consistent and distinct != total:
            problems.append(f"read {distinct} distinct points but the console reports {total}")
        if report.consistent and not problems:
            if self.points.pass_no > 1:
                self.points.keep_only_last_pass()
            return PassVerdict(True, None, distinct)
        return PassVerdict(False, "; ".join(problems) or "the pass did not finish", distinct)

    def next_points_pass(self) -> None:
        """Start a re-read of the restore points; earlier passes' rows stay until one proves
        complete."""
        self.points.next_pass()

    def merge_points(
        self, plan: points.PointsPlan, verdict: PassVerdict, *, max_delete_ratio: float
    ) -> points.PointsOutcome:
        """Write the staged points inside the run's transaction (see ``etl.load.points``)."""
        with self._timed("merge"):
            return points.merge(
                self.conn,
                plan=plan,
                complete=verdict.complete,
                problem=verdict.problem,
                run_id=self.run_id,
                source=self.source,
                now=self.now,
                max_delete_ratio=max_delete_ratio,
                skipped=self.points.skipped,
            )

    # -- failure -----------------------------------------------------------------------------

    def abort(self, exc: BaseException) -> None:
        """After a failure: wait for a running batch, end an open COPY as failed, so that
        the connection can roll back. Never raises."""
        self.close()
        self.stage.abort_copy(exc)

    def close(self) -> None:
        """End the early merge's thread, if there is one (after the merge or a failure)."""
        if self._batches is not None:
            batches, self._batches = self._batches, None
            batches.close()

    @contextmanager
    def _timed(self, name: str) -> Iterator[None]:
        started = perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + perf_counter() - started
