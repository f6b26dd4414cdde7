"""Run `alembic upgrade head` + `alembic check` against a throwaway database, then drop it."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from etl.db import normalize_url

ROOT = Path(__file__).resolve().parent.parent


def server_url() -> tuple[object, object]:
    url = normalize_url(
        os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    )
    try:
        engine = create_engine(url, connect_args={"connect_timeout": 3})
        with engine.connect():
            pass
        return url, None
    except OperationalError:
        import tempfile

        import pgserver

        server = pgserver.get_server(tempfile.mkdtemp(), cleanup_mode="delete")
        return normalize_url(server.get_uri()), server


def main() -> int:
    admin_url, server = server_url()
    name = f"vspc_etl_check_{uuid.uuid4().hex[:8]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        env = dict(
            os.environ,
            DATABASE_URL=admin_url.set(database=name).render_as_string(hide_password=False),
        )
        alembic = [sys.executable, "-m", "alembic", "-c", str(ROOT / "alembic.ini")]
        for args in (
            ["upgrade", "head"],
            ["check"],
            ["downgrade", "base"],
            ["upgrade", "head"],
            ["check"],
        ):
            print("alembic", *args, flush=True)
            subprocess.run([*alembic, *args], check=True, env=env, cwd=ROOT)  # noqa: S603
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
        if server is not None:
            server.cleanup()  # type: ignore[attr-defined]
    return 0


if __name__ == "__main__":
    sys.exit(main())
