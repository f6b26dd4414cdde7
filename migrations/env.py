"""Alembic environment: online migrations only, one advisory lock, bounded lock waits.

The URL comes from the application's settings (``DATABASE_URL`` or the embedded PostgreSQL),
or from ``config.attributes["url"]`` when ``vspc-etl migrate`` calls alembic itself.

Besides the tables of ``etl.load.schema``, autogenerate and ``alembic check`` compare the
views, functions and triggers of ``etl/sql`` with the database's, through alembic_utils: an
edited definition shows up as a difference until a revision applies it (``docs/sql.md``).
"""

from __future__ import annotations

from alembic import context
from alembic.runtime.environment import NameFilterParentNames
from alembic_utils.replaceable_entity import register_entities
from sqlalchemy import Connection, create_engine, pool, text

from etl.load.schema import SCHEMA, metadata
from migrations.entities import ENTITY_TYPES, sql_entities

# Any constant works; it only has to differ from the sync's per-source locks (two-key form).
MIGRATION_LOCK_KEY = 0x76737063  # "vspc"

config = context.config


def _url() -> object:
    given = config.attributes.get("url")
    if given is not None:
        return given
    from etl.config import load_settings
    from etl.db import database_url

    return database_url(load_settings())


def _include_name(name: str | None, type_: str, parent_names: NameFilterParentNames) -> bool:
    # Only our schema is alembic's business; ignore public and everything else.
    if type_ == "schema":
        return name == SCHEMA
    if type_ in ENTITY_TYPES:  # alembic_utils looks at every schema it finds
        return parent_names.get("schema_name") == SCHEMA
    return True


register_entities(sql_entities(), entity_types=list(ENTITY_TYPES.values()))


def _migrate(connection: Connection) -> None:
    lock_timeout = config.attributes.get("lock_timeout", "10s")
    connection.execute(text(f"SET lock_timeout = '{lock_timeout}'"))
    connection.execute(text("SET statement_timeout = '15min'"))
    # Two migrators at once: the second waits here, then finds nothing left to do.
    connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
    connection.execute(text(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
    connection.commit()
    try:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            version_table_schema=SCHEMA,
            include_schemas=True,
            include_name=_include_name,
            compare_type=True,
            # One transaction for the whole run: a migrate that fails (a lock it waited for
            # past lock_timeout, say) leaves the schema at the revision it found, never at
            # one between that and the target.
            transaction_per_migration=False,
        )
        with context.begin_transaction():
            context.run_migrations()
    finally:
        connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
        connection.commit()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _migrate(connection)
        return
    engine = create_engine(_url(), poolclass=pool.NullPool)  # type: ignore[call-overload]
    with engine.connect() as conn:
        _migrate(conn)
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported: run against a database")
run_migrations_online()
