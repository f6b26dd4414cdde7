"""Restore points: which read a run makes, their staging and their merge into
``vspc.restore_points``.

A run reads either every point the console lists (*full*: the first sync, after a full read
that could not apply ``gone_at``, and whenever the last full read of the source is
``VSPC_RESTORE_POINTS_FULL_EVERY`` old) or only the points created since the newest stored
one, less ``OVERLAP`` (*new*: the points before the newest stored one only by uid, then the
unknown ones among them in full, see ``PointsPlan``). Pages are COPYed into the temp
tables ``stage_points`` and ``stage_point_rejects``; the merge upserts them in one statement
inside the run's transaction. Only a full read proved complete may set ``gone_at`` on the
stored points it did not list (with the ``VSPC_MAX_DELETE_RATIO`` guard of the jobs); a point
listed again gets ``gone_at`` null. Rows are never deleted.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, text

from etl.load.stage import dump_json, write_rejects_sql
from etl.points import POINT_COLUMNS, PointRow
from etl.transform import Reject

OVERLAP = timedelta(hours=12)
"""How far before the newest stored point a *new* read looks. The console lists some points
hours after their creation (indexed late; the simulator up to 8 hours): a point created before
the newest stored one but listed only since is still caught if it is at most this late. A
point later still waits for the next full read. Every *new* read lists the uids of the whole
window (``UID_ONLY``), so it is kept short."""
IN_CHUNK = 30
"""Uids per ``in`` filter when a *new* read fetches the unknown points of the overlap: 30 keep
the query string under 2,048 characters, the default limit of the web server in front of the
console."""
UID_ONLY = json.dumps([{"propertyPath": "instanceUid"}], separators=(",", ":"))
"""The ``select`` of the overlap listing: only each point's uid."""
COLLECTION = "restore_points"
SORT_BY_CREATION = json.dumps(
    [{"property": "creationDate", "direction": "ascending"}], separators=(",", ":")
)

_STAGED = ", ".join(POINT_COLUMNS)


@dataclass(frozen=True)
class PointsPlan:
    """The read a run makes: full, or the points created from ``since`` on; ``known``: the
    uids (lower case) of the live points of the source created since then, which a *new* read
    skips (they are stored; a full read rewrites what changed in them).

    A *new* read makes three kinds of request: the points created from ``newest`` (the newest
    stored creation) on, in full (``params``); the uids only of those created from ``since``
    to ``newest`` (``overlap_params``: the window where a late-indexed point can appear, all
    but a few of them known); and, in full, the few of those it does not know
    (``fetch_params``, ``IN_CHUNK`` uids at a time)."""

    full: bool
    since: datetime | None
    known: frozenset[str] = frozenset()
    newest: datetime | None = None

    def params(self) -> dict[str, str]:
        """The query of the read listed in full: every point for a full read, those created
        from ``newest`` on for a *new* read."""
        if self.full or self.since is None:
            return {}
        start = self.newest if self.newest is not None else self.since
        return {"filter": _filter(_created("greaterThanOrEqual", start))}

    def overlap_params(self) -> dict[str, str] | None:
        """The query listing the uids of the points created from ``since`` to ``newest``
        (None for a full read)."""
        if self.full or self.since is None or self.newest is None:
            return None
        window = [
            _created("greaterThanOrEqual", self.since),
            _created("lessThan", self.newest),
        ]
        return {"filter": _filter(*window), "select": UID_ONLY}

    @staticmethod
    def fetch_params(uids: Sequence[str]) -> dict[str, str]:
        """The query fetching the points ``uids`` (at most ``IN_CHUNK``) in full."""
        node = {"property": "instanceUid", "operation": "in", "value": list(uids)}
        return {"filter": _filter(node)}

    @property
    def read(self) -> str:
        """``etl_runs.restore_points_read``: full or new."""
        return "full" if self.full else "new"


@dataclass(frozen=True)
class PointsOutcome:
    """What a run did with the restore points (``etl_runs.restore_points_*``)."""

    read: str
    """full, new or refused."""
    seen: int | None = None
    inserted: int | None = None
    gone: int | None = None
    """None unless a complete full read applied ``gone_at`` (0 if none was gone)."""
    rejected: int = 0
    complete: bool = False
    """The read (full or new) was verified complete: every point it asked for was staged."""
    note: str | None = None
    """What the run's ``error`` column says about the points (a refusal, gone_at withheld)."""

    def run_fields(self) -> dict[str, Any]:
        return {
            "restore_points_read": self.read,
            "restore_points_seen": self.seen,
            "restore_points_inserted": self.inserted,
            "restore_points_gone": self.gone,
        }


def plan(conn: Connection, source: str, *, now: datetime, full_every: int) -> PointsPlan:
    """Full when nothing is stored, ``full_every`` is 0, the last full read of ``source`` did
    not apply ``gone_at`` (it could not be verified complete, or the ratio withheld it: no
    ``restore_points_gone``), or it is ``full_every`` seconds old; else the points created
    since the newest stored one, less ``OVERLAP``."""
    newest, last_full, applied = conn.execute(
        text(
            "SELECT (SELECT max(creation_date) FROM vspc.restore_points WHERE source = :s), "
            "f.started_at, f.restore_points_gone IS NOT NULL FROM (SELECT 1) one "
            "LEFT JOIN LATERAL (SELECT started_at, restore_points_gone FROM vspc.etl_runs "
            "WHERE source = :s AND status = 'success' AND restore_points_read = 'full' "
            "ORDER BY started_at DESC, run_id DESC LIMIT 1) f ON true"
        ),
        {"s": source},
    ).one()
    if newest is None or full_every == 0 or last_full is None or not applied:
        return PointsPlan(True, None)
    if now - last_full >= timedelta(seconds=full_every):
        return PointsPlan(True, None)
    since = newest - OVERLAP
    # One string rather than a row per uid: a 12-hour window holds ~15,000 points at 10,000
    # jobs, and one row each costs ~0.1 s.
    known = conn.execute(
        text(
            "SELECT string_agg(instance_uid::text, ',') FROM vspc.restore_points "
            "WHERE source = :s AND creation_date >= :since AND gone_at IS NULL"
        ),
        {"s": source, "since": since},
    ).scalar_one()
    return PointsPlan(False, since, frozenset(known.split(",") if known else ()), newest)


def _created(operation: str, instant: datetime) -> dict[str, str]:
    value = instant.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    return {"property": "creationDate", "operation": operation, "value": value}


def _filter(*nodes: dict[str, Any]) -> str:
    return json.dumps(list(nodes), separators=(",", ":"))


class PointStage:
    """The temp tables of one run's points, on the loader's connection."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.pass_no = 1
        self.skipped: set[str] = set()
        """Known points the current pass listed and did not stage (see ``PointsPlan.known``)."""
        self._seq = 0

    def create(self) -> None:
        self.conn.exec_driver_sql(  # one round trip: no parameters, several statements
            "DROP TABLE IF EXISTS pg_temp.stage_points, pg_temp.stage_point_rejects;\n"
            "CREATE TEMP TABLE stage_points AS SELECT 0::bigint AS seq, 0 AS pass_no, "
            f"{_STAGED}, raw FROM vspc.restore_points WITH NO DATA;\n"
            "CREATE TEMP TABLE stage_point_rejects (seq bigint NOT NULL, pass_no int NOT "
            "NULL, instance_uid text, reason text NOT NULL, raw jsonb NOT NULL)"
        )

    def add(self, rows: Sequence[PointRow], rejects: Sequence[Reject]) -> None:
        """COPY one page's rows and rejects (the connection must be free of other COPYs)."""
        cursor = self.conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        if rows:
            sql = f"COPY stage_points (seq, pass_no, {_STAGED}, raw) FROM STDIN"
            with cursor.copy(sql) as copy:
                for row in rows:
                    self._seq += 1
                    copy.write_row((self._seq, self.pass_no, *row))
        if rejects:
            sql = "COPY stage_point_rejects (seq, pass_no, instance_uid, reason, raw) FROM STDIN"
            with cursor.copy(sql) as copy:
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

    def distinct(self) -> int:
        """Distinct points the current pass listed: those it skipped, and those it staged
        (valid uids, plus rejected records: by uid, or each if it has none)."""
        return len(self.skipped) + int(
            self.conn.execute(
                text(
                    "SELECT (SELECT count(DISTINCT instance_uid) FROM stage_points "
                    "WHERE pass_no = :p) + (SELECT count(DISTINCT coalesce(lower(instance_uid), "
                    "seq::text)) FROM stage_point_rejects WHERE pass_no = :p)"
                ),
                {"p": self.pass_no},
            ).scalar_one()
        )

    def next_pass(self) -> None:
        self.pass_no += 1
        self.skipped = set()

    def keep_only_last_pass(self) -> None:
        for table in ("stage_points", "stage_point_rejects"):
            self.conn.execute(text(f"DELETE FROM {table} WHERE pass_no <> :p"), {"p": self.pass_no})


# The stored live points of the source a complete read did not list (a point it rejected
# with a uid counts as listed). In WHERE, NOT EXISTS plans as a hashed anti-join; inside an
# aggregate's FILTER it would be a subplan per row.
_MISSING = """
CREATE TEMP TABLE stage_points_gone ON COMMIT DROP AS
SELECT r.instance_uid FROM vspc.restore_points r
WHERE r.source = :source AND r.gone_at IS NULL
  AND NOT EXISTS (SELECT 1 FROM stage_points s WHERE s.instance_uid = r.instance_uid)
  AND NOT EXISTS (SELECT 1 FROM stage_point_rejects x
                  WHERE lower(x.instance_uid) = r.instance_uid::text)
"""
_LIVE = "SELECT count(*) FROM vspc.restore_points WHERE source = :source AND gone_at IS NULL"
_GONE = """
UPDATE vspc.restore_points r SET gone_at = :now, last_run_id = :run_id
FROM stage_points_gone g WHERE g.instance_uid = r.instance_uid
"""

# One copy per point (the last staged); a point staged again (a full read stages every
# point, a new read only those it does not know) is rewritten and live again.
_UPSERT = f"""
WITH latest AS (
  SELECT DISTINCT ON (instance_uid) {_STAGED}, raw FROM stage_points
  ORDER BY instance_uid, seq DESC
), written AS (
  INSERT INTO vspc.restore_points AS r ({_STAGED}, raw, source, first_seen_at, last_run_id)
  SELECT {_STAGED}, raw, :source, :now, :run_id FROM latest
  ON CONFLICT (instance_uid) DO UPDATE SET
    {", ".join(f"{c} = EXCLUDED.{c}" for c in POINT_COLUMNS if c != "instance_uid")},
    raw = EXCLUDED.raw, source = EXCLUDED.source, last_run_id = EXCLUDED.last_run_id,
    gone_at = NULL
  RETURNING (xmax = 0) AS inserted
)
SELECT count(*), count(*) FILTER (WHERE inserted) FROM written
"""

_REJECTS = write_rejects_sql("stage_point_rejects", ":collection")


def merge(
    conn: Connection,
    *,
    plan: PointsPlan,
    complete: bool,
    problem: str | None,
    run_id: int,
    source: str,
    now: datetime,
    max_delete_ratio: float,
    skipped: Collection[str] = (),
) -> PointsOutcome:
    """Write the staged points (inside the caller's transaction, not committed); ``skipped``:
    the known points the read listed without staging them."""
    params = {"run_id": run_id, "source": source, "now": now}
    gone: int | None = None
    note: str | None = None
    if plan.full:
        conn.execute(text("ANALYZE stage_points"))
        if not complete:
            note = (
                "restore points: the full read could not be verified complete "
                f"({problem or 'unknown reason'}); none was marked gone"
            )
        else:
            missing = int(conn.execute(text(_MISSING), params).rowcount)
            live = int(conn.execute(text(_LIVE), params).scalar_one())
            if live and missing / live > max_delete_ratio:
                note = (
                    f"restore points gone withheld: {missing} of {live} stored points "
                    f"({missing / live:.0%}) are missing from the complete read, more than "
                    f"VSPC_MAX_DELETE_RATIO={max_delete_ratio:g} allows; if the console really "
                    "lost them, run once with a higher VSPC_MAX_DELETE_RATIO"
                )
            else:
                gone = int(conn.execute(text(_GONE), params).rowcount) if missing else 0
    written, inserted = conn.execute(text(_UPSERT), params).one()
    seen = int(written) + len(skipped)
    rejected = int(
        conn.execute(text(_REJECTS), {"run_id": run_id, "collection": COLLECTION}).rowcount
    )
    return PointsOutcome(plan.read, int(seen), int(inserted), gone, rejected, complete, note)
