"""Upsert organization and agent names inside the run's merge transaction.

The names read are compared with those stored, and only new or changed ones are written
(one array per column, ``INSERT … ON CONFLICT``): unchanged names are not rewritten.
Names are never deleted: an organization that left still labels its history.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, text

from etl.extract.names import AgentRow, Names, OrganizationRow

_TABLES: dict[str, tuple[str, ...]] = {
    "organizations": ("instance_uid", "name", "alias", "type"),
    "backup_agents": ("instance_uid", "computer_name", "organization_uid", "version", "status"),
}


def upsert_names(conn: Connection, names: Names, *, source: str, now: datetime) -> int:
    """Write what ``names`` holds (a None list is left alone); returns rows inserted/changed."""
    written = 0
    if names.organizations is not None:
        written += _upsert(conn, "organizations", _org_tuples(names.organizations), source, now)
    if names.agents is not None:
        written += _upsert(conn, "backup_agents", _agent_tuples(names.agents), source, now)
    return written


def _org_tuples(rows: Iterable[OrganizationRow]) -> list[tuple[Any, ...]]:
    latest = {r.instance_uid: (r.instance_uid, r.name, r.alias, r.type) for r in rows}
    return list(latest.values())


def _agent_tuples(rows: Iterable[AgentRow]) -> list[tuple[Any, ...]]:
    latest = {
        r.instance_uid: (r.instance_uid, r.computer_name, r.organization_uid, r.version, r.status)
        for r in rows
    }
    return list(latest.values())


def _upsert(
    conn: Connection, table: str, rows: Sequence[tuple[Any, ...]], source: str, now: datetime
) -> int:
    columns = _TABLES[table]
    # Names seldom change: compare with what is stored here, and send only the differences.
    stored = {
        row[0]: tuple(row)
        for row in conn.execute(text(f"SELECT {', '.join(columns)}, source FROM vspc.{table}"))
    }
    changed = [row for row in rows if stored.get(row[0]) != (*row, source)]
    if not changed:
        return 0
    values = [c for c in columns if c != "instance_uid"]
    arrays = ", ".join(
        f"CAST(:c{i} AS {'uuid' if c.endswith('uid') else 'text'}[])" for i, c in enumerate(columns)
    )
    params: dict[str, Any] = {f"c{i}": [row[i] for row in changed] for i in range(len(columns))}
    result = conn.execute(
        text(
            f"INSERT INTO vspc.{table} ({', '.join(columns)}, source, first_seen_at, updated_at) "
            f"SELECT *, :source, :now, :now FROM unnest({arrays}) "
            "ON CONFLICT (instance_uid) DO UPDATE SET "
            + ", ".join(f"{c} = excluded.{c}" for c in (*values, "source", "updated_at"))
        ),
        {**params, "source": source, "now": now},
    )
    return int(result.rowcount)
