"""``vspc-etl grant ROLE``: read-only access to schema ``vspc`` for a BI tool's role.

USAGE on the schema and SELECT on every table and view in it, now and in the future: the
default privileges cover what later migrations create, as long as they run as the role that
runs this command (the one in DATABASE_URL).
"""

from __future__ import annotations

from sqlalchemy import Connection, text
from sqlalchemy.exc import SQLAlchemyError

from etl.db import short
from etl.errors import ConfigError, LoadError

SCHEMA = "vspc"


def grant_read_access(conn: Connection, role: str) -> list[str]:
    """Grant ``role`` read-only access to schema vspc; returns the statements run.

    Runs in the caller's transaction. ConfigError if the role does not exist.
    """
    exists = conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).first()
    if exists is None:
        raise ConfigError(
            f"role {role!r} does not exist; create it first, e.g. "
            f"CREATE ROLE {quote_identifier(role)} LOGIN PASSWORD '...'"
        )
    who = quote_identifier(role)
    statements = [
        f"GRANT USAGE ON SCHEMA {SCHEMA} TO {who}",
        f"GRANT SELECT ON ALL TABLES IN SCHEMA {SCHEMA} TO {who}",
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {SCHEMA} GRANT SELECT ON TABLES TO {who}",
    ]
    for statement in statements:
        try:
            conn.execute(text(statement))
        except SQLAlchemyError as exc:
            raise LoadError(f"cannot grant access to {role!r}: {short(exc)}") from exc
    return statements


def quote_identifier(name: str) -> str:
    """``name`` as a PostgreSQL identifier, always quoted (any character is safe)."""
    if "\x00" in name:
        raise ConfigError("a role name cannot contain a NUL character")
    return '"' + name.replace('"', '""') + '"'
