"""Staging: pages are COPYed into session temp tables as they arrive.

Nothing here touches the warehouse tables; the merge reads the staged extract afterwards in one
transaction. Temp tables live as long as the run's connection, so a dead run leaves no trace.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from psycopg.types.json import set_json_dumps
from sqlalchemy import Connection, text

from etl.load.schema import BUSINESS, backup_agent_jobs
from etl.testhook import pause

_COLUMNS = ", ".join(BUSINESS)


@dataclass(frozen=True, slots=True)
class StagedReject:
    """A record the transform refused, with the reason naming the field."""

    instance_uid: str | None
    reason: str
    raw: Any


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


class Stage:
    """The temp tables ``stage_jobs`` and ``stage_rejects`` on one connection."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._seq = 0

    def create(self) -> None:
        """Create (or empty) the staging tables; columns mirror the warehouse types."""
        table = f"{backup_agent_jobs.schema}.{backup_agent_jobs.name}"
        self.conn.execute(text("DROP TABLE IF EXISTS pg_temp.stage_jobs, pg_temp.stage_rejects"))
        self.conn.execute(
            text(
                "CREATE TEMP TABLE stage_jobs AS "
                f"SELECT 0::bigint AS seq, 0 AS pass_no, {_COLUMNS} FROM {table} WITH NO DATA"
            )
        )
        self.conn.execute(
            text(
                "CREATE TEMP TABLE stage_rejects "
                "(seq bigint, pass_no int, instance_uid text, reason text NOT NULL, "
                "raw jsonb NOT NULL)"
            )
        )
        # Binary COPY needs each column's type; read them back from the table just made.
        self._types = [
            str(t)
            for t in self.conn.execute(
                text(
                    "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                    "WHERE attrelid = 'pg_temp.stage_jobs'::regclass AND attnum > 0 "
                    "AND NOT attisdropped ORDER BY attnum"
                )
            ).scalars()
        ]
        self.conn.commit()
        self._seq = 0
        self.pass_no = 1

    def next_pass(self) -> None:
        """Start a re-read; rows of earlier passes stay until :meth:`keep_only_last_pass`."""
        self.pass_no += 1

    def keep_only_last_pass(self) -> None:
        """A pass was complete on its own: forget the older copies earlier passes staged.

        Without this, a job deleted between two passes would look live again.
        """
        for table in ("stage_jobs", "stage_rejects"):
            self.conn.execute(text(f"DELETE FROM {table} WHERE pass_no <> :p"), {"p": self.pass_no})
        self.conn.commit()

    def add(
        self, rows: Sequence[tuple[Any, ...]], raws: Sequence[str], rejects: Iterable[StagedReject]
    ) -> None:
        """COPY one page: typed rows (BUSINESS order minus raw) with their raw JSON texts."""
        cursor = self.conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        # raw arrives as JSON text already (dump_json): the jsonb dumper must pass it through.
        set_json_dumps(_as_is, context=cursor)
        if rows:
            # Binary COPY: half the cost of text per row, and no quoting rules to get wrong.
            sql = f"COPY stage_jobs (seq, pass_no, {_COLUMNS}) FROM STDIN (FORMAT BINARY)"
            with cursor.copy(sql) as copy:
                copy.set_types(self._types)
                for row, raw in zip(rows, raws, strict=True):
                    self._seq += 1
                    copy.write_row((self._seq, self.pass_no, *row, raw))
                pause("copy")  # chaos tests only (etl/testhook.py)
        rejects = list(rejects)
        if rejects:
            with cursor.copy(
                "COPY stage_rejects (seq, pass_no, instance_uid, reason, raw) FROM STDIN"
            ) as copy:
                for reject in rejects:
                    self._seq += 1
                    copy.write_row(
                        (
                            self._seq,
                            self.pass_no,
                            reject.instance_uid,
                            reject.reason,
                            dump_json(reject.raw),
                        )
                    )
        self.conn.commit()

    def distinct_keys(self) -> int:
        """Distinct jobs the current pass staged (see :func:`distinct_keys`)."""
        return distinct_keys(self.conn, self.pass_no)


def distinct_keys(conn: Connection, pass_no: int | None = None) -> int:
    """Distinct jobs staged: valid uids, plus rejected records (by uid, or each if it has none).

    ``pass_no`` limits the count to one pass; None counts everything staged.
    """
    return int(conn.execute(text(_DISTINCT_KEYS), {"p": pass_no}).scalar_one())


_DISTINCT_KEYS = """
SELECT (SELECT count(*) FROM (
          SELECT instance_uid::text FROM stage_jobs WHERE CAST(:p AS int) IS NULL OR pass_no = :p
          UNION SELECT lower(instance_uid) FROM stage_rejects
          WHERE instance_uid IS NOT NULL AND (CAST(:p AS int) IS NULL OR pass_no = :p)) k)
     + (SELECT count(*) FROM stage_rejects
        WHERE instance_uid IS NULL AND (CAST(:p AS int) IS NULL OR pass_no = :p))
"""
