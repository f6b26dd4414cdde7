"""Database connection: the configured URL, or an embedded PostgreSQL under ``./.vspc-etl/``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from etl.config import Settings
from etl.errors import ConfigError, LoadError

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
            import pgserver
        except ImportError:  # pragma: no cover - pgserver is a declared dependency
            raise ConfigError(
                "DATABASE_URL is not set and the embedded PostgreSQL (pgserver) is not "
                "installed; set DATABASE_URL"
            ) from None
        pgdata.mkdir(parents=True, exist_ok=True)
        log.info("DATABASE_URL is not set: using the embedded PostgreSQL in %s", pgdata)
        try:
            server = pgserver.get_server(pgdata, cleanup_mode="stop")  # type: ignore[attr-defined]
        except Exception as exc:  # pgserver raises bare exceptions of its own
            raise LoadError(f"the embedded PostgreSQL in {pgdata} did not start: {exc}") from exc
        _embedded[pgdata] = server
        exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{EMBEDDED_DATABASE}';")
        if "1 row" not in exists:
            server.psql(f"CREATE DATABASE {EMBEDDED_DATABASE};")
    return normalize_url(server.get_uri(EMBEDDED_DATABASE))


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


def alembic_config(url: URL) -> Any:
    """An alembic Config for the packaged migrations, bound to ``url`` (no alembic.ini needed)."""
    from importlib.resources import files

    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(files("migrations")))
    cfg.attributes["url"] = url
    return cfg


def migrate(url: URL, revision: str = "head") -> str | None:
    """Upgrade (or downgrade, for a revision below the current one) and return the new head."""
    from alembic import command
    from alembic.runtime.migration import MigrationContext

    cfg = alembic_config(url)
    engine = create_engine(url, pool_pre_ping=True)
    try:
        check_connection(engine)
        with engine.connect() as conn:
            current = MigrationContext.configure(
                conn, opts={"version_table_schema": "vspc"}
            ).get_current_revision()
        try:
            if revision == "base" or (current is not None and _is_older(cfg, revision, current)):
                command.downgrade(cfg, revision)
            else:
                command.upgrade(cfg, revision)
        except SQLAlchemyError as exc:
            raise LoadError(f"migration failed: {short(exc)}") from exc
        with engine.connect() as conn:
            new: str | None = MigrationContext.configure(
                conn, opts={"version_table_schema": "vspc"}
            ).get_current_revision()
        return new
    finally:
        engine.dispose()


def _is_older(cfg: Any, revision: str, current: str) -> bool:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(cfg)
    if revision == "head":
        return False
    try:
        target = script.get_revision(revision)
    except Exception as exc:  # alembic raises several unrelated types for an unknown revision
        raise ConfigError(f"unknown migration revision {revision!r}") from exc
    ancestors = {r.revision for r in script.iterate_revisions(current, "base")}
    return target.revision in ancestors and target.revision != current
