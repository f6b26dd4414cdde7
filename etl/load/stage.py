"""Staging: pages are COPYed into session temp tables as they arrive.

Nothing here touches the warehouse tables; the merge reads the staged extract afterwards in one
transaction. Temp tables live as long as the run's connection, so a dead run leaves no trace.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, text

from etl.load.schema import BUSINESS, backup_agent_jobs

_COLUMNS = ", ".join(BUSINESS)


@dataclass(frozen=True, slots=True)
class StagedReject:
    """A record the transform refused, with the reason naming the field."""

    instance_uid: str | None
    reason: str
    raw: Any


def dump_json(value: Any) -> str:
    """Compact JSON for a jsonb column (PostgreSQL parses it; key order does not matter)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


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
        self, rows: Sequence[tuple[Any, ...]], raws: Sequence[Any], rejects: Iterable[StagedReject]
    ) -> None:
        """COPY one page: typed rows (BUSINESS order minus raw) with their raw records."""
        cursor = self.conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        if rows:
            with cursor.copy(f"COPY stage_jobs (seq, pass_no, {_COLUMNS}) FROM STDIN") as copy:
                for row, raw in zip(rows, raws, strict=True):
                    self._seq += 1
                    copy.write_row((self._seq, self.pass_no, *row, dump_json(raw)))
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
