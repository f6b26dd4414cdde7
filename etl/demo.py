"""``vspc-etl demo``: the whole product on one machine with nothing configured.

Starts the built-in VSPC simulator on loopback, migrates the database (DATABASE_URL or the
embedded PostgreSQL), syncs, lets a simulated day pass, syncs again ... and shows what landed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from pydantic import SecretStr
from sqlalchemy import Engine, text

from etl.config import Settings
from etl.db import database_url, make_engine, migrate
from etl.pipeline import RunResult, run_once
from etl.simulator import Simulator, SimulatorServer

DEMO_API_KEY = "demo-simulator-key"


def run_demo(
    settings: Settings, *, days: int, jobs: int, seed: int, echo: Callable[[str], None]
) -> int:
    """Run the demo; returns the number of failed runs."""
    quiet = {"etl.pipeline": logging.WARNING, "etl.config": logging.ERROR}
    saved = {name: logging.getLogger(name).level for name in quiet}
    if settings.log_level != "DEBUG":
        # The demo prints its own line per run; the plain-http warning is moot on loopback.
        for name, level in quiet.items():
            logging.getLogger(name).setLevel(level)
    try:
        return _demo(settings, days=days, jobs=jobs, seed=seed, echo=echo)
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


def _demo(
    settings: Settings, *, days: int, jobs: int, seed: int, echo: Callable[[str], None]
) -> int:
    url = database_url(settings)
    echo(f"migrating {url.render_as_string(hide_password=True)}")
    migrate(url)
    simulator = Simulator(jobs=jobs, seed=seed, api_keys=(DEMO_API_KEY,))
    results: list[RunResult] = []
    with SimulatorServer(simulator, host="127.0.0.1", port=0) as server:
        demo = settings.model_copy(
            update={
                "vspc_url": server.url,
                "vspc_api_key": SecretStr(DEMO_API_KEY),
                "vspc_username": None,
                "vspc_password": None,
                "vspc_source": "demo-simulator",
                "vspc_ca_bundle": None,
                "vspc_verify_tls": True,
            }
        )
        echo(f"simulated console with {jobs} jobs at {server.url}")
        engine = make_engine(demo)
        try:
            for day in range(days + 1):
                if day:
                    simulator.advance(24)
                result = run_once(demo, engine=engine)
                results.append(result)
                echo(f"day {day}: {result.summary()}")
            echo(describe_warehouse(engine, "demo-simulator"))
            if settings.database_url is None:
                echo(
                    f"the warehouse is kept in {settings.data_dir}/pgdata (embedded PostgreSQL, "
                    "started on demand); set DATABASE_URL to use your own server"
                )
        finally:
            engine.dispose()
    return sum(r.status == "failed" for r in results)


def describe_warehouse(engine: Engine, source: str) -> str:
    """A short text picture of what the warehouse holds for ``source``."""
    with engine.connect() as conn:
        statuses = conn.execute(
            text(
                "SELECT status, count(*) FROM vspc.backup_agent_jobs "
                "WHERE source = :s AND deleted_at IS NULL GROUP BY status ORDER BY 2 DESC"
            ),
            {"s": source},
        ).all()
        live, deleted = conn.execute(
            text(
                "SELECT count(*) FILTER (WHERE deleted_at IS NULL), "
                "count(*) FILTER (WHERE deleted_at IS NOT NULL) "
                "FROM vspc.backup_agent_jobs WHERE source = :s"
            ),
            {"s": source},
        ).one()
        versions = conn.execute(
            text("SELECT count(*) FROM vspc.backup_agent_job_snapshots WHERE source = :s"),
            {"s": source},
        ).scalar_one()
        rejects = conn.execute(text("SELECT count(*) FROM vspc.etl_rejects")).scalar_one()
    lines = [
        f"warehouse: {live} live jobs, {deleted} deleted, {versions} versions in history, "
        f"{rejects} rejected records",
        "live jobs by status: " + ", ".join(f"{s} {n}" for s, n in statuses),
    ]
    return "\n".join(lines)
