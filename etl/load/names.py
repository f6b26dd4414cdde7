"""Stage and upsert organizations, agents and management agents inside the run's merge
transaction.

Pages of names are COPYed into temp tables as the loader hands them over, between job
pages (memory stays flat however many agents the console has); once the collections are
read, inside the merge transaction, one set-based
``INSERT … ON CONFLICT … WHERE … IS DISTINCT FROM`` per collection writes the new and changed
names only: unchanged names are not rewritten. A collection the console refused (or did not
finish serving) is not written at all. Names are never deleted: an organization that left
still labels its history.

Pages the last complete read of a collection also served (same digest, ``etl_name_pages``,
revision 0005) are not staged at all: the warehouse holds their names already. The digests
are trusted only while the collection's table holds at least as many rows of the source as
they list; the digests of a complete read replace the stored ones in the merge transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from operator import attrgetter
from typing import Any

from sqlalchemy import Connection, text

from etl.extract.names import (
    AGENTS,
    KINDS,
    MANAGEMENT_AGENTS,
    ORGANIZATIONS,
    AgentRow,
    ManagementAgentRow,
    Names,
    OrganizationRow,
)

_TABLES: dict[str, tuple[str, tuple[str, ...]]] = {
    ORGANIZATIONS: ("organizations", ("instance_uid", "name", "alias", "type")),
    AGENTS: (
        "backup_agents",
        (
            "instance_uid",
            "computer_name",
            "organization_uid",
            "version",
            "status",
            "agent_platform",
            "management_agent_uid",
            "operation_mode",
        ),
    ),
    MANAGEMENT_AGENTS: (
        "management_agents",
        (
            "instance_uid",
            "host_name",
            "friendly_name",
            "organization_uid",
            "location_uid",
            "version",
            "status",
            "connection_status",
            "last_heartbeat_at",
        ),
    ),
}


def _stage(kind: str) -> str:
    return f"stage_{_TABLES[kind][0]}"


class NameStage:
    """Temp tables ``stage_organizations``, ``stage_backup_agents`` and
    ``stage_management_agents`` on the run's connection.

    Created (emptied, if a run on this connection left them) before the job pages are read,
    filled while they are, and read by :meth:`upsert` inside the merge transaction; like the
    job stage they live as long as the run's connection.
    """

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._seq = 0
        conn.exec_driver_sql(  # one round trip: no parameters, several statements
            ";\n".join(
                f"DROP TABLE IF EXISTS pg_temp.{_stage(kind)};\n"
                f"CREATE TEMP TABLE {_stage(kind)} AS "
                f"SELECT 0::bigint AS seq, {', '.join(columns)} FROM vspc.{table} WITH NO DATA"
                for kind, (table, columns) in _TABLES.items()
            )
        )

    def add(
        self, kind: str, rows: Sequence[OrganizationRow | AgentRow | ManagementAgentRow]
    ) -> None:
        """COPY pages of names of one collection (the loader stages them between job pages)."""
        if not rows:
            return
        columns = _TABLES[kind][1]
        values = attrgetter(*columns)
        cursor = self.conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        with cursor.copy(f"COPY {_stage(kind)} (seq, {', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                self._seq += 1
                copy.write_row((self._seq, *values(row)))

    def known_pages(self, source: str) -> dict[str, frozenset[bytes]]:
        """Digests of the pages the last complete read of each collection served, for the
        collections whose table still holds at least as many rows of ``source``."""
        rows = self.conn.execute(text(_KNOWN_PAGES), {"source": source}).all()
        known: dict[str, set[bytes]] = {}
        for kind, digest in rows:
            known.setdefault(kind, set()).add(bytes(digest))
        return {kind: frozenset(digests) for kind, digests in known.items()}

    def upsert(self, names: Names, *, source: str, now: datetime) -> int:
        """Write the collections read completely, and their page digests; returns the rows
        inserted or changed."""
        written = 0
        for kind in KINDS:
            if kind in names.complete:
                written += self._upsert(kind, source, now)
                self._remember(kind, source, names.digests.get(kind, []))
        return written

    def _remember(self, kind: str, source: str, digests: list[tuple[bytes, int]]) -> None:
        params: dict[str, Any] = {"source": source, "kind": kind}
        self.conn.execute(
            text("DELETE FROM vspc.etl_name_pages WHERE source = :source AND collection = :kind"),
            params,
        )
        if digests:
            self.conn.execute(
                text(
                    "INSERT INTO vspc.etl_name_pages (source, collection, page_digest, records) "
                    "SELECT :source, :kind, d, n "
                    "FROM unnest(CAST(:digests AS bytea[]), CAST(:records AS integer[])) "
                    "AS p (d, n) ON CONFLICT DO NOTHING"
                ),
                {
                    **params,
                    "digests": [d for d, _ in digests],
                    "records": [n for _, n in digests],
                },
            )

    def _upsert(self, kind: str, source: str, now: datetime) -> int:
        table, columns = _TABLES[kind]
        values = [c for c in columns if c != "instance_uid"]
        # The copy read last wins when paging served a name twice.
        result = self.conn.execute(
            text(
                f"INSERT INTO vspc.{table} AS t ({', '.join(columns)}, source, first_seen_at, "
                "updated_at) "
                f"SELECT DISTINCT ON (instance_uid) {', '.join(columns)}, :source, :now, :now "
                f"FROM {_stage(kind)} ORDER BY instance_uid, seq DESC "
                "ON CONFLICT (instance_uid) DO UPDATE SET "
                + ", ".join(f"{c} = excluded.{c}" for c in (*values, "source", "updated_at"))
                + f" WHERE ({', '.join(f't.{c}' for c in (*values, 'source'))}) "
                f"IS DISTINCT FROM ({', '.join(f'excluded.{c}' for c in (*values, 'source'))})"
            ),
            {"source": source, "now": now},
        )
        return int(result.rowcount)


# Rows deleted by hand (or taken over by another source) make a collection's table hold fewer
# rows of the source than its pages listed: its digests are then ignored, every page staged.
_KNOWN_PAGES = f"""
WITH listed AS (
  SELECT collection, sum(records) AS records FROM vspc.etl_name_pages
  WHERE source = :source GROUP BY collection
), present AS (
  SELECT '{ORGANIZATIONS}' AS collection, count(*) AS records FROM vspc.organizations
  WHERE source = :source
  UNION ALL
  SELECT '{AGENTS}', count(*) FROM vspc.backup_agents WHERE source = :source
  UNION ALL
  SELECT '{MANAGEMENT_AGENTS}', count(*) FROM vspc.management_agents WHERE source = :source
)
SELECT p.collection, p.page_digest FROM vspc.etl_name_pages p
JOIN listed l ON l.collection = p.collection
JOIN present t ON t.collection = p.collection
WHERE p.source = :source AND t.records >= l.records
"""
