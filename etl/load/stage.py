"""Staging: pages are COPYed into session temp tables as they arrive.

The merge reads the staged extract afterwards in one transaction. The stage only writes what it
is given, when it is given it: whether the connection is free is the loader's to know
(``etl.load.loader``). Temp tables live as long as the run's connection, so a dead run leaves
no trace.
"""

from __future__ import annotations

import json
import logging
import time
from binascii import unhexlify
from collections.abc import Iterable, Sequence
from contextlib import ExitStack
from itertools import pairwise
from typing import Any

import orjson
import psycopg
from psycopg import Copy, postgres
from psycopg.adapt import Dumper
from psycopg.pq import Format
from psycopg.types.json import set_json_dumps
from sqlalchemy import Connection, text

from etl.load.schema import BUSINESS, backup_agent_jobs
from etl.testhook import pause
from etl.transform import Reject

log = logging.getLogger(__name__)

_COLUMNS = ", ".join(BUSINESS)
COMMIT_EVERY_S = 1.0
"""Staged pages are committed at most this often (temp tables: no WAL, no fsync to wait for).
Not when the run is one transaction (see :meth:`Stage.one_transaction`)."""
_clock = time.monotonic

StagedReject = Reject
"""A record the transform refused (``etl.transform.Reject``), as the stage takes it."""


def dump_json(value: Any) -> str:
    """Compact JSON for a jsonb column (PostgreSQL parses it; key order does not matter).

    orjson is several times faster; the standard library takes what orjson refuses (integers
    beyond 64 bits in an unknown field).
    """
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _as_is(text: Any) -> Any:
    return text


class _UuidTextBinaryDumper(Dumper):
    """A uuid column of the binary COPY, from the text the transform checked (``_to_uuid``):
    the 16 bytes straight from the hex digits, without a ``uuid.UUID`` in between."""

    format = Format.BINARY
    oid = postgres.types["uuid"].oid

    def dump(self, obj: str) -> bytes:
        return unhexlify(obj.replace("-", ""))


_CREATE = f"""
DROP TABLE IF EXISTS pg_temp.stage_jobs, pg_temp.stage_rejects, pg_temp.stage_merged;
CREATE TEMP TABLE stage_jobs AS SELECT 0::bigint AS seq, 0 AS pass_no, {_COLUMNS}
  FROM {backup_agent_jobs.schema}.{backup_agent_jobs.name} WITH NO DATA;
-- same: the record's fingerprint matched the stored one (only seq, pass_no and the uid are
-- staged); fp: the fingerprint of a fully staged record, kept by the merge.
ALTER TABLE stage_jobs ADD COLUMN same boolean NOT NULL DEFAULT false, ADD COLUMN fp bytea;
-- The staged copies an early merge wrote (see etl.load.merge.EarlyMerge).
CREATE TEMP TABLE stage_merged (seq bigint PRIMARY KEY, instance_uid uuid);
CREATE TEMP TABLE stage_rejects (seq bigint, pass_no int, instance_uid text,
  reason text NOT NULL, raw jsonb NOT NULL, system_type text NOT NULL)
"""
"""The staging tables, created (or emptied) in one round trip; columns mirror the
warehouse's types."""


class Stage:
    """The temp tables ``stage_jobs`` and ``stage_rejects`` on one connection.

    The job rows of consecutive pages go through one COPY, left open between pages: the server
    takes in a page while the next one is transformed, instead of the client waiting at the
    end of every page for the server to finish it (~4 ms a page of 500). Anything else on the
    connection must come after :meth:`end_copy`; this class's own statements and
    :meth:`commit` end it themselves, :meth:`abort_copy` ends it after a failure.

    Rows added with ``hold=True`` get their place (``seq``) at once and are written by the
    next call that uses the connection: the loader holds them while the connection is busy.
    """

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._seq = 0
        self._committed = _clock()
        self._may_match: dict[str, bool] = {}
        self._open: ExitStack | None = None
        self._copy: Copy | None = None
        self._held: list[tuple[Any, ...]] = []
        self._one_transaction = False
        self.job_rows = 0
        """Job rows staged in full by this run (every pass)."""

    @property
    def seq(self) -> int:
        """The place of the last row or record staged (or reserved)."""
        return self._seq

    @property
    def held_rows(self) -> int:
        """Rows added with ``hold=True`` not written yet."""
        return len(self._held)

    def create(self) -> None:
        """Create (or empty) the staging tables; columns mirror the warehouse types."""
        self.end_copy()
        # One round trip (no parameters: the simple query protocol takes several statements).
        self.conn.exec_driver_sql(_CREATE)
        # Binary COPY needs each column's type; read them back from the table just made.
        self._types = [
            str(t)
            for t in self.conn.execute(
                text(
                    "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                    "WHERE attrelid = 'pg_temp.stage_jobs'::regclass AND attnum > 0 "
                    "AND NOT attisdropped AND attname <> 'same' ORDER BY attnum"
                )
            ).scalars()
        ]
        self.conn.commit()
        self._seq = 0
        self.job_rows = 0
        self.passes: dict[str, int] = {}
        """Each collection's pass (by its rows' ``system_type``): 1, then one more per re-read."""
        self._may_match.clear()

    def pass_of(self, system_type: str) -> int:
        """The pass of ``system_type``'s collection being staged."""
        return self.passes.get(system_type, 1)

    @property
    def reread(self) -> bool:
        """Whether a collection was read more than once."""
        return any(n > 1 for n in self.passes.values())

    def next_pass(self, system_type: str = "Windows") -> None:
        """Start a re-read of ``system_type``'s collection; rows of its earlier passes stay
        until :meth:`keep_only_last_pass`."""
        self.end_copy()
        self.passes[system_type] = self.pass_of(system_type) + 1

    def keep_only_last_pass(self, system_type: str = "Windows") -> None:
        """A pass of ``system_type``'s collection was complete on its own: forget the older
        copies its earlier passes staged (the other collections' rows stay).

        Without this, a job deleted between two passes would look live again.
        """
        self.end_copy()
        for table in ("stage_jobs", "stage_rejects"):
            self.conn.execute(
                text(f"DELETE FROM {table} WHERE system_type = :t AND pass_no <> :p"),
                {"t": system_type, "p": self.pass_of(system_type)},
            )
        self.commit()

    def first_sync(self, source: str) -> bool:
        """Whether ``source`` had no live job when the run began (see ``add_same``)."""
        return not self._source_has_live_jobs(source)

    def one_transaction(self) -> None:
        """From here on nothing is committed before the merge (see :meth:`commit`), and the
        stage can be read by seq range (batches of new jobs merged while pages arrive)."""
        self.end_copy()
        self._one_transaction = True
        # Each batch reads its seq range of the stage; the merge's sorts stay in memory.
        self.conn.execute(text("CREATE INDEX ON stage_jobs (seq)"))
        self.conn.execute(text("SET LOCAL work_mem = '256MB'"))

    def add_same(
        self, prints: Sequence[tuple[str, bytes]], source: str, system_type: str = "Windows"
    ) -> set[int]:
        """Stage, by uid only, the records whose fingerprint equals the one stored for their
        live job of ``source``; returns their positions in ``prints`` ((uid, digest) pairs).

        One statement per page: the lookup and the insert together. A deleted job, or one
        another source wrote, takes the full path (to be un-deleted or compared); uids must
        be canonical lowercase uuids (see ``transform.fingerprint``).
        """
        if not prints:
            return set()
        if not self._source_has_live_jobs(source):
            self._seq += len(prints)  # positions reserved as when the lookup runs
            return set()
        self.end_copy()
        uids = [uid for uid, _ in prints]
        params = {
            # One text each, split by the server: a Python list would be encoded element by
            # element, which costs more than the round trip this statement saves.
            "uids": ",".join(uids),
            "fps": ",".join(digest.hex() for _, digest in prints),
            "base": self._seq,
            "pass_no": self.pass_of(system_type),
            "source": source,
            "system_type": system_type,
        }
        cursor = self.conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        if all(a < b for a, b in pairwise(uids)):
            cursor.execute(_SAME_RANGE, {**params, "low": uids[0], "high": uids[-1]})
        else:
            cursor.execute(_SAME_EACH, params)
        first = self._seq + 1
        self._seq += len(prints)
        return {int(seq) - first for (seq,) in cursor.fetchall()}

    def _source_has_live_jobs(self, source: str) -> bool:
        """Whether ``source`` had a live job when the run began: if not (a first sync), no
        fingerprint can match during this run (the warehouse tables change only in the
        merge, and the run holds the source's lock), and the per-page lookup is skipped."""
        known = self._may_match.get(source)
        if known is None:
            self.end_copy()
            known = bool(
                self.conn.execute(
                    text(
                        "SELECT EXISTS (SELECT 1 FROM vspc.backup_agent_jobs "
                        "WHERE source = :source AND deleted_at IS NULL)"
                    ),
                    {"source": source},
                ).scalar_one()
            )
            self._may_match[source] = known
        return known

    def add(
        self,
        rows: Sequence[tuple[Any, ...]],
        raws: Sequence[str],
        fps: Sequence[bytes | None],
        rejects: Iterable[StagedReject],
        *,
        hold: bool = False,
        system_type: str = "Windows",
    ) -> None:
        """COPY one page: typed rows (BUSINESS order minus raw) with their raw JSON texts and
        fingerprints, and the rejects. Commits at most once a second: the staging transaction
        stays short without a round trip per page. The job COPY stays open (see the class).
        ``hold``: keep the rows for the next call that uses the connection (no rejects then).
        ``system_type``: the collection the page came from (rows end with it already)."""
        pass_no = self.pass_of(system_type)
        if rows:
            self.job_rows += len(rows)
            held = self._held
            for row, raw, fp in zip(rows, raws, fps, strict=True):
                self._seq += 1
                held.append((self._seq, pass_no, *row, raw, fp))
            if hold:
                return
            self._write_held()
            pause("copy")  # chaos tests only (etl/testhook.py)
        rejects = list(rejects)
        if rejects:
            self.end_copy()
            cursor = self.conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
            with cursor.copy(
                "COPY stage_rejects (seq, pass_no, instance_uid, reason, raw, system_type) "
                "FROM STDIN"
            ) as copy:
                for reject in rejects:
                    self._seq += 1
                    copy.write_row(
                        (
                            self._seq,
                            pass_no,
                            reject.instance_uid,
                            reject.reason,
                            dump_json(reject.raw),
                            system_type,
                        )
                    )
        if not self._one_transaction and _clock() - self._committed >= COMMIT_EVERY_S:
            self.commit()

    def _job_copy(self) -> Copy:
        """The open COPY into ``stage_jobs``, started if there is none."""
        if self._copy is None:
            cursor = self.conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
            # raw arrives as JSON text already (dump_json): the jsonb dumper must pass it
            # through; uuids arrive as checked text (this cursor only; set_types picks dumpers
            # by column type).
            set_json_dumps(_as_is, context=cursor)
            cursor.adapters.register_dumper(None, _UuidTextBinaryDumper)
            # Binary COPY: half the cost of text per row, and no quoting rules to get wrong.
            sql = f"COPY stage_jobs (seq, pass_no, {_COLUMNS}, fp) FROM STDIN (FORMAT BINARY)"
            with ExitStack() as stack:
                copy = stack.enter_context(cursor.copy(sql))
                copy.set_types(self._types)
                self._open = stack.pop_all()
            self._copy = copy
        return self._copy

    def _write_held(self) -> None:
        """COPY the rows added so far: the one place job rows are written."""
        if self._held:
            held, self._held = self._held, []
            copy = self._job_copy()
            for values in held:
                copy.write_row(values)

    def end_copy(self) -> None:
        """Finish the job COPY left open, if any: the server has then taken every row sent
        (held rows included)."""
        self._write_held()
        if self._open is not None:
            stack, self._open, self._copy = self._open, None, None
            stack.close()

    def abort_copy(self, exc: BaseException) -> None:
        """After a failure: end an open job COPY as failed (the server discards it), so that
        the connection can roll back. Never raises: the failure itself is what matters."""
        self._held = []
        if self._open is not None:
            stack, self._open, self._copy = self._open, None, None
            try:
                stack.__exit__(type(exc), exc, exc.__traceback__)
            except psycopg.Error as error:
                log.debug("ending the failed COPY failed too (%s): the connection is gone", error)

    def commit(self) -> None:
        """Commit what is staged. The COPYs and lookups go through the driver's own cursor,
        which SQLAlchemy does not see: its ``commit()`` alone would leave them uncommitted.
        In one transaction (:meth:`one_transaction`), only ends the COPY: the merge commits."""
        self.end_copy()
        if self._one_transaction:
            return
        self.conn.commit()
        self.conn.connection.driver_connection.commit()  # type: ignore[union-attr]
        self._committed = _clock()

    def distinct_keys(self, system_type: str = "Windows") -> int:
        """Distinct jobs the current pass of ``system_type``'s collection staged (see
        :func:`distinct_keys`)."""
        self.end_copy()
        return distinct_keys(self.conn, self.pass_of(system_type), system_type)


def write_rejects_sql(table: str, collection: str) -> str:
    """The statement that writes a run's staged rejects of ``table`` (a temp table with
    ``seq, pass_no, instance_uid, reason, raw``) to ``vspc.etl_rejects``, with the SQL
    expression ``collection`` as their collection; parameter ``:run_id``.

    A re-read stages the same bad record again: a record's latest copy is kept once. Records
    without an instanceUid have no identity: two equal ones in one pass are two records (both
    kept), while earlier passes' copies of them give way to the last pass that saw them."""
    return f"""
INSERT INTO vspc.etl_rejects (run_id, instance_uid, reason, raw, rejected_at, collection)
SELECT :run_id, instance_uid, reason, raw, now(), {collection} FROM (
  SELECT *, CASE
      WHEN instance_uid IS NULL THEN pass_no = max(pass_no) OVER (PARTITION BY raw::text)
      ELSE seq = max(seq) OVER (PARTITION BY lower(instance_uid)) END AS kept
  FROM {table}
) latest WHERE kept ORDER BY seq
"""


def distinct_keys(
    conn: Connection, pass_no: int | None = None, system_type: str | None = None
) -> int:
    """Distinct jobs staged: valid uids, plus rejected records (by uid, or each if it has none).

    ``pass_no`` and ``system_type`` limit the count to one pass of one collection; None
    counts everything staged.
    """
    return int(conn.execute(text(_DISTINCT_KEYS), {"p": pass_no, "t": system_type}).scalar_one())


# The page's (uid, digest) pairs, sent as two comma-joined texts, staged at base + position
# for those that match (each statement below adds its match).
_STAGE_PAGE = """INSERT INTO stage_jobs (seq, pass_no, instance_uid, system_type, same)
SELECT CAST(%(base)s AS bigint) + p.ord, %(pass_no)s, p.uid, %(system_type)s, true
FROM (
  SELECT CAST(t.u AS uuid) AS uid, decode(t.d, 'hex') AS fp, t.ord
  FROM unnest(string_to_array(%(uids)s, ','), string_to_array(%(fps)s, ','))
    WITH ORDINALITY AS t (u, d, ord)
) p
"""

# A page is a run of consecutive uids (the console sorts by instanceUid, and a lowercase
# uuid sorts as its text): a primary-key range scan between its first and last uid, then a
# primary-key probe into the jobs per fingerprint, ~1.5 ms a page. OFFSET 0 keeps the planner
# from turning the probe into a join: right after a first sync the statistics are stale, and
# joins were planned as a scan of the whole jobs table for every page (8-80 ms a page at
# 100,000 jobs). Uids in the range that are not on the page come along and are ignored. The
# matches are staged by the same statement (seq: base + position on the page).
_SAME_RANGE = f"""
{_STAGE_PAGE}JOIN (
  SELECT f.instance_uid, f.fingerprint
  FROM vspc.etl_job_fingerprints f
  CROSS JOIN LATERAL (
    SELECT j.source, j.deleted_at FROM vspc.backup_agent_jobs j
    WHERE j.instance_uid = f.instance_uid OFFSET 0
  ) j
  WHERE f.instance_uid BETWEEN CAST(%(low)s AS uuid) AND CAST(%(high)s AS uuid)
    AND j.deleted_at IS NULL AND j.source = %(source)s
) k ON k.instance_uid = p.uid AND k.fingerprint = p.fp
RETURNING seq
"""

# A page out of order (a console that ignores the sort) could span the whole table: two
# probes per uid instead, ~3 ms a page, whatever the page holds.
_SAME_EACH = f"""
{_STAGE_PAGE}CROSS JOIN LATERAL (
  SELECT f.fingerprint FROM vspc.etl_job_fingerprints f
  WHERE f.instance_uid = p.uid OFFSET 0
) f
CROSS JOIN LATERAL (
  SELECT j.source, j.deleted_at FROM vspc.backup_agent_jobs j
  WHERE j.instance_uid = p.uid OFFSET 0
) j
WHERE f.fingerprint = p.fp AND j.deleted_at IS NULL AND j.source = %(source)s
RETURNING seq
"""

# Distinct job uuids as such (hashing their text cost twice as much), then the rejects'
# uids only if there are any.
_DISTINCT_KEYS = """
WITH j AS (
  SELECT instance_uid FROM stage_jobs
  WHERE (CAST(:t AS text) IS NULL OR system_type = :t)
    AND (CAST(:p AS int) IS NULL OR pass_no = :p)
), r AS (
  SELECT instance_uid FROM stage_rejects
  WHERE (CAST(:t AS text) IS NULL OR system_type = :t)
    AND (CAST(:p AS int) IS NULL OR pass_no = :p)
)
SELECT (SELECT count(DISTINCT instance_uid) FROM j)
     + CASE WHEN EXISTS (SELECT FROM r WHERE instance_uid IS NOT NULL) THEN (
         SELECT count(*) FROM (
           SELECT lower(instance_uid) FROM r WHERE instance_uid IS NOT NULL
           EXCEPT SELECT instance_uid::text FROM j) k)
       ELSE 0 END
     + (SELECT count(*) FROM r WHERE instance_uid IS NULL)
"""
