"""Database connection: the configured URL, or an embedded PostgreSQL under ``./.vspc-etl/``."""

from __future__ import annotations

import functools
import logging
import warnings
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from etl.config import Settings
from etl.errors import ConfigError, LoadError, SchemaMismatch
from etl.load.schema import SCHEMA

log = logging.getLogger(__name__)

EMBEDDED_DATABASE = "vspc_etl"
_embedded: dict[Path, Any] = {}  # one pgserver handle per data directory per process


def normalize_url(raw: str) -> URL:
    """Parse a SQLAlchemy URL and make plain ``postgresql://`` use psycopg 3."""
    try:
        url = make_url(raw)
    except ArgumentError:
        raise ConfigError(
            "DATABASE_URL is not a valid URL; expected e.g. postgresql+psycopg://user@host:5432/db"
        ) from None
    if url.drivername in {"postgresql", "postgres", "postgresql+psycopg2", "postgresql+psycopg"}:
        return url.set(drivername="postgresql+psycopg")
    raise ConfigError(
        f"DATABASE_URL uses {url.drivername!r}; only PostgreSQL is supported "
        "(postgresql+psycopg://user@host:5432/db)"
    )


def embedded_url(data_dir: Path) -> URL:
    """Start (or reuse) the embedded PostgreSQL kept in ``data_dir/pgdata``."""
    pgdata = (data_dir / "pgdata").resolve()
    server = _embedded.get(pgdata)
    if server is None:
        try:
            pgserver = _pgserver()
        except ImportError:  # pragma: no cover - pgserver is a declared dependency
            raise ConfigError(
                "DATABASE_URL is not set and the embedded PostgreSQL (pgserver) is not "
                "installed; set DATABASE_URL"
            ) from None
        pgdata.mkdir(parents=True, exist_ok=True)
        log.debug("DATABASE_URL is not set: using the embedded PostgreSQL in %s", pgdata)
        try:
            server = pgserver.get_server(pgdata, cleanup_mode="stop")
        except Exception as exc:  # pgserver raises bare exceptions of its own
            raise LoadError(f"the embedded PostgreSQL in {pgdata} did not start: {exc}") from exc
        _embedded[pgdata] = server
        exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{EMBEDDED_DATABASE}';")
        if "1 row" not in exists:
            server.psql(f"CREATE DATABASE {EMBEDDED_DATABASE};")
    return normalize_url(server.get_uri(EMBEDDED_DATABASE))


def _pgserver() -> Any:
    """The pgserver module, imported without the warning platformdirs gives at its import
    wherever XDG_RUNTIME_DIR is unset (containers, cron): its fallback is what we want."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        import pgserver

    return pgserver


def database_url(settings: Settings) -> URL:
    """The URL to use: DATABASE_URL, else the embedded server."""
    if settings.database_url is not None:
        return normalize_url(settings.database_url.get_secret_value())
    return embedded_url(settings.data_dir)


def make_engine(settings: Settings, *, statement_timeout_s: int = 0) -> Engine:
    """An engine for the configured database, checked with one round trip."""
    options = f"-c statement_timeout={statement_timeout_s * 1000}" if statement_timeout_s else ""
    engine = create_engine(
        database_url(settings),
        pool_pre_ping=True,
        pool_size=2,
        connect_args={"application_name": "vspc-etl", "connect_timeout": 10, "options": options},
    )
    check_connection(engine)
    return engine


def check_connection(engine: Engine) -> None:
    """Raise LoadError with a readable reason (no password) if the database is unreachable."""
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        raise LoadError(
            f"cannot connect to the database {describe(engine.url)}: {short(exc)}"
        ) from exc


def describe(url: URL) -> str:
    """A URL for messages: host, port and database, never the password."""
    return url.render_as_string(hide_password=True)


def short(exc: BaseException) -> str:
    """The first line of a driver error, without SQL or parameters."""
    orig = getattr(exc, "orig", None) or exc
    first = str(orig).strip().splitlines()
    return first[0] if first else orig.__class__.__name__


def alembic_config(url: URL | None = None) -> Any:
    """An alembic Config for the packaged migrations, bound to ``url`` (no alembic.ini needed)."""
    from importlib.resources import files

    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(files("migrations")))
    if url is not None:
        cfg.attributes["url"] = url
    return cfg


@functools.cache
def _scripts() -> Any:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config())


def known_revisions() -> list[str]:
    """The packaged migrations' revisions, oldest first."""
    return [r.revision for r in reversed(list(_scripts().walk_revisions()))]


def head_revision() -> str:
    """The revision this version of vspc-etl needs schema ``vspc`` at."""
    head: str = _scripts().get_current_head()
    return head


def schema_revision(conn: Connection) -> str | None:
    """The revision recorded in ``vspc.alembic_version``; None if there is no schema yet."""
    table = f"{SCHEMA}.alembic_version"
    try:
        if conn.execute(text("SELECT to_regclass(:t)"), {"t": table}).scalar() is None:
            return None
        found: str | None = conn.execute(text(f"SELECT version_num FROM {table}")).scalar()
    except SQLAlchemyError as exc:
        raise LoadError(f"cannot read the revision of schema {SCHEMA}: {short(exc)}") from exc
    return found


def check_schema(bind: Engine | Connection) -> None:
    """Raise SchemaMismatch unless schema ``vspc`` is at the revision this version needs.

    Every command that reads or writes the warehouse calls it first, as do the daemon's
    turns and its readiness probe, so a missing or older schema is one sentence everywhere.
    """
    if isinstance(bind, Engine):
        with bind.connect() as conn:
            check_schema(conn)
        return
    found = schema_revision(bind)
    head = head_revision()
    if found == head:
        return
    if found is None:
        raise SchemaMismatch(f"schema {SCHEMA} is missing: run `vspc-etl migrate`")
    if found in known_revisions():
        raise SchemaMismatch(
            f"schema {SCHEMA} is at {found}, this version needs {head}: run `vspc-etl migrate`"
        )
    raise _unknown_schema(found)


def _unknown_schema(found: str) -> SchemaMismatch:
    return SchemaMismatch(
        f"schema {SCHEMA} is at {found}, a revision this version does not know (it needs "
        f"{head_revision()}): upgrade vspc-etl to the version that migrated it"
    )


def resolve_revision(revision: str) -> str:
    """``revision`` as alembic will take it; ConfigError naming the known ones if unknown."""
    if revision in ("head", "base"):
        return revision
    from alembic.util import CommandError

    try:
        found = _scripts().get_revision(revision)
    except CommandError:
        found = None
    if found is None:
        known = ", ".join(known_revisions())
        raise ConfigError(
            f"unknown migration revision {revision!r}: give one of {known}, head or base"
        )
    return str(found.revision)


def migrate(url: URL, revision: str = "head") -> str | None:
    """Upgrade (or downgrade, for a revision below the current one) and return the new head."""
    return migrate_from_to(url, revision)[1]


def migrate_from_to(url: URL, revision: str = "head") -> tuple[str | None, str | None]:
    """Like :func:`migrate`, and return the revision found as well: (before, after)."""
    from alembic import command
    from alembic.util import CommandError

    target = resolve_revision(revision)
    cfg = alembic_config(url)
    engine = create_engine(url, pool_pre_ping=True)
    try:
        check_connection(engine)
        with engine.connect() as conn:
            current = schema_revision(conn)
        if current is not None and current not in known_revisions():
            raise _unknown_schema(current)  # alembic could not find its way from there
        try:
            if target == "base" or (current is not None and _is_older(target, current)):
                command.downgrade(cfg, target)
            else:
                command.upgrade(cfg, target)
        except SQLAlchemyError as exc:
            raise LoadError(f"migration failed: {short(exc)}") from exc
        except CommandError as exc:
            raise ConfigError(f"migration to {revision!r} failed: {exc}") from exc
        with engine.connect() as conn:
            return current, schema_revision(conn)
    finally:
        engine.dispose()


def _is_older(revision: str, current: str) -> bool:
    if revision == "head" or current not in known_revisions():
        return False
    ancestors = {r.revision for r in _scripts().iterate_revisions(current, "base")}
    return revision in ancestors and revision != current
