"""Alembic owns schema vspc: upgrade, downgrade to base, comments, metadata in step."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, Engine, create_engine, inspect, text
from sqlalchemy.dialects.postgresql import ARRAY, TEXT
from sqlalchemy.engine import URL

from etl.db import migrate
from etl.load.schema import metadata
from tests.conftest import create_database, drop_database

CORE = {"backup_agent_jobs", "backup_agent_job_snapshots", "etl_runs", "etl_rejects"}
REPORTING = {
    "organizations",
    "backup_agents",
    "job_run_facts",
    "sla_daily_counts",
    "sla_policy",
    "report_settings",
}
CACHE = {"etl_job_fingerprints", "etl_name_pages", "job_sla_state"}
PLATFORMS = {"management_agents"}  # revision 0008
POINTS = {"restore_points"}  # revision 0009
TABLES = CORE | REPORTING | CACHE | PLATFORMS | POINTS
REPORTING_VIEWS = {"job_runs", "job_sla_current", "sla_daily"}
VIEWS = REPORTING_VIEWS | {"computer_sla_current"}  # revision 0010
HEAD = "0012"


@pytest.fixture
def empty_db(server_url: URL) -> Iterator[URL]:
    """A database of its own, so downgrades do not disturb the session database."""
    url = create_database(server_url, "vspc_etl_mig")
    yield url
    drop_database(server_url, url)


def tables(url: URL) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names(schema="vspc")) - {"alembic_version"}
    finally:
        engine.dispose()


def views(url: URL) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_view_names(schema="vspc"))
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade(empty_db: URL) -> None:
    assert migrate(empty_db) == HEAD
    assert (tables(empty_db), views(empty_db)) == (TABLES, VIEWS)
    assert migrate(empty_db, "0002") == "0002"
    assert (tables(empty_db), views(empty_db)) == (CORE | REPORTING, REPORTING_VIEWS)
    assert migrate(empty_db, "0001") == "0001"
    assert (tables(empty_db), views(empty_db)) == (CORE, set())
    assert migrate(empty_db, "base") is None
    assert tables(empty_db) == set()
    assert migrate(empty_db) == HEAD
    assert (tables(empty_db), views(empty_db)) == (TABLES, VIEWS)


def test_head_matches_the_metadata(engine: Engine) -> None:
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn,
            opts={
                "include_schemas": True,
                "include_name": lambda name, type_, parents: (
                    name == "vspc" if type_ == "schema" else name != "alembic_version"
                ),
                "compare_type": True,
            },
        )
        assert compare_metadata(context, metadata) == []


def test_every_table_and_column_has_a_comment(engine: Engine) -> None:
    with engine.connect() as conn:
        missing = conn.execute(
            text(
                "SELECT c.relname, a.attname FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'vspc' "
                "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 "
                "AND NOT a.attisdropped "
                "WHERE c.relkind IN ('r', 'v', 'm') AND c.relname <> 'alembic_version' "
                "AND col_description(c.oid, a.attnum) IS NULL"
            )
        ).all()
        tables_without = conn.execute(
            text(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'vspc' AND c.relkind IN ('r', 'v', 'm') "
                "AND c.relname <> 'alembic_version' AND obj_description(c.oid) IS NULL"
            )
        ).all()
    assert missing == []
    assert tables_without == []


def test_contract_columns_and_types(engine: Engine) -> None:
    inspector = inspect(engine)
    columns = {c["name"]: c for c in inspector.get_columns("backup_agent_jobs", schema="vspc")}
    assert list(columns)[:2] == ["instance_uid", "source"]
    assert isinstance(columns["schedule_events"]["type"], ARRAY)
    assert isinstance(columns["schedule_events"]["type"].item_type, TEXT)
    assert str(columns["backed_up_size"]["type"]) == "BIGINT"
    assert str(columns["last_run"]["type"]) == "TIMESTAMP"
    assert columns["last_run"]["type"].timezone is True
    assert columns["status"]["nullable"] is False
    with engine.connect() as conn:
        enums = conn.execute(
            text(
                "SELECT count(*) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
                "WHERE n.nspname = 'vspc' AND t.typtype = 'e'"
            )
        ).scalar_one()
    assert enums == 0  # enum-like values are text, never PostgreSQL ENUMs


def test_two_migrators_at_once(empty_db: URL, tmp_path: Path) -> None:
    """Two `vspc-etl migrate` processes race; the advisory lock serializes them."""
    env = dict(os.environ, DATABASE_URL=empty_db.render_as_string(hide_password=False))
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "etl", "migrate"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert all(out.strip().endswith(f"is at revision {HEAD}") for out, _ in outputs)
    assert tables(empty_db) == TABLES


def test_0002_turns_existing_history_into_sessions(empty_db: URL) -> None:
    """A warehouse synced before 0002 gets its sessions and days when it upgrades."""
    from etl.load.reporting import rebuild
    from tests.history import insert, sla_history

    migrate(empty_db, "0001")
    engine = create_engine(empty_db)
    try:
        with engine.begin() as conn:
            insert(conn, sla_history())
        migrate(empty_db)
        query = [
            "SELECT * FROM vspc.job_run_facts ORDER BY 1, 2",
            "SELECT * FROM vspc.sla_daily_counts ORDER BY 1, 2",
        ]
        with engine.connect() as conn:
            upgraded = [conn.execute(text(q)).all() for q in query]
        with engine.begin() as conn:
            rebuild(conn)
            rebuilt = [conn.execute(text(q)).all() for q in query]
        assert len(upgraded[0]) == 5 + 4 + 2 + 1  # J2, J3, K1, M1 in tests/history.py
        assert upgraded == rebuilt
        migrate(empty_db, "0001")
        with engine.connect() as conn:
            kept = conn.execute(text("SELECT count(*) FROM vspc.backup_agent_job_snapshots"))
            assert kept.scalar_one() == len(sla_history())
    finally:
        engine.dispose()


def test_0008_upgrades_a_warehouse_with_history_and_downgrades(empty_db: URL) -> None:
    """Every job a warehouse held before 0008 came from the Windows collection: backfilled
    Windows, history and reporting intact; downgrade restores 0007's views verbatim."""
    from tests.history import insert, sla_history

    migrate(empty_db, "0007")
    engine = create_engine(empty_db)
    try:
        with engine.begin() as conn:
            insert(conn, sla_history())
            conn.execute(
                text(
                    "INSERT INTO vspc.backup_agent_jobs (instance_uid, source, status, raw, "
                    "first_seen_at, updated_at) SELECT DISTINCT ON (instance_uid) instance_uid, "
                    "source, status, raw, valid_from, valid_from "
                    "FROM vspc.backup_agent_job_snapshots ORDER BY instance_uid, valid_from DESC"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO vspc.job_run_facts (instance_uid, started_at, source, status, "
                    "run_id) SELECT DISTINCT instance_uid, last_run, source, 'Success', 1 "
                    "FROM vspc.backup_agent_job_snapshots WHERE last_run IS NOT NULL"
                )
            )
            before = conn.execute(
                text("SELECT * FROM vspc.job_sla_current ORDER BY instance_uid")
            ).all()
            old_columns = conn.execute(text("SELECT * FROM vspc.job_sla_current LIMIT 0")).keys()
            old_runs = conn.execute(text("SELECT * FROM vspc.job_runs ORDER BY 1, 8")).all()
        jobs = len({v.uid for v in sla_history()})
        assert before and jobs > 1
        assert migrate(empty_db) == HEAD
        with engine.connect() as conn:
            backfilled = conn.execute(
                text(
                    "SELECT (SELECT array_agg(DISTINCT system_type) FROM vspc.backup_agent_jobs),"
                    " (SELECT count(*) FROM vspc.backup_agent_jobs),"
                    " (SELECT array_agg(DISTINCT system_type)"
                    "  FROM vspc.backup_agent_job_snapshots),"
                    " (SELECT count(*) FROM vspc.backup_agent_job_snapshots)"
                )
            ).one()
            nullable = conn.execute(
                text(
                    "SELECT table_name, is_nullable, column_default "
                    "FROM information_schema.columns WHERE table_schema = 'vspc' "
                    "AND column_name = 'system_type' AND table_name LIKE 'backup%' "
                    "ORDER BY 1"
                )
            ).all()
            current = (
                conn.execute(text("SELECT * FROM vspc.job_sla_current ORDER BY instance_uid"))
                .mappings()
                .all()
            )
            runs = conn.execute(text("SELECT * FROM vspc.job_runs ORDER BY 1, 8")).mappings().all()
        assert tuple(backfilled) == (["Windows"], jobs, ["Windows"], len(sla_history()))
        assert nullable == [
            ("backup_agent_job_snapshots", "NO", None),
            ("backup_agent_jobs", "NO", None),
        ]
        assert len(current) == len(before)
        for old, new in zip(before, current, strict=True):
            assert tuple(new[c] for c in old_columns) == tuple(old)
            assert new["system_type"] == "Windows"
            assert new["agent_connection_status"] is None
            assert new["agent_last_heartbeat_at"] is None
        assert [r["system_type"] for r in runs] == ["Windows"] * len(old_runs)
        assert migrate(empty_db, "0007") == "0007"
        with engine.connect() as conn:
            restored = conn.execute(
                text("SELECT * FROM vspc.job_sla_current ORDER BY instance_uid")
            ).all()
            restored_columns = conn.execute(
                text("SELECT * FROM vspc.job_sla_current LIMIT 0")
            ).keys()
            restored_runs = conn.execute(text("SELECT * FROM vspc.job_runs ORDER BY 1, 8")).all()
            kept = conn.execute(
                text("SELECT count(*) FROM vspc.backup_agent_job_snapshots")
            ).scalar_one()
        assert list(restored_columns) == list(old_columns)
        assert restored == before and restored_runs == old_runs
        assert kept == len(sla_history())
        assert "management_agents" not in tables(empty_db)
        assert migrate(empty_db) == HEAD
    finally:
        engine.dispose()


def definitions(conn: Connection) -> dict[str, str]:
    """Every view, function and trigger of vspc as PostgreSQL renders it."""
    rows = conn.execute(
        text(
            "SELECT 'view ' || c.relname, pg_get_viewdef(c.oid) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'vspc' AND c.relkind = 'v' "
            "UNION ALL SELECT 'function ' || p.oid::regprocedure::text, pg_get_functiondef(p.oid) "
            "FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = 'vspc' "
            "UNION ALL SELECT 'trigger ' || t.tgname, pg_get_triggerdef(t.oid) FROM pg_trigger t "
            "JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'vspc' AND NOT t.tgisinternal"
        )
    ).all()
    return {name: body for name, body in rows}


def test_0010_upgrades_a_warehouse_with_history_and_downgrades(empty_db: URL) -> None:
    """The stored days gain the points created on them; the answers of jobs whose points add
    nothing to their sessions stay as they were; downgrade restores 0009's definitions."""
    from etl.load.reporting import rebuild
    from tests.history import ORG_A, at, day, insert, job, sla_history

    migrate(empty_db, "0009")
    engine = create_engine(empty_db)
    daily_columns = "day, organization_uid, jobs_protected, runs, jobs_meeting_rpo"
    try:
        with engine.begin() as conn:
            insert(conn, sla_history())
            conn.execute(
                text(
                    "INSERT INTO vspc.backup_agent_jobs (instance_uid, source, status, raw, "
                    "first_seen_at, updated_at, system_type) SELECT DISTINCT ON (instance_uid) "
                    "instance_uid, source, status, raw, valid_from, valid_from, system_type "
                    "FROM vspc.backup_agent_job_snapshots ORDER BY instance_uid, valid_from DESC"
                )
            )
            rebuild(conn)
            # a point of J2's session of day 4 (ended 03:30): the same evidence as the session
            conn.execute(
                text(
                    "INSERT INTO vspc.restore_points (instance_uid, source, job_uid, "
                    "creation_date, raw, first_seen_at) VALUES "
                    "(gen_random_uuid(), 'hand', :j, :t, '{}', now())"
                ),
                {"j": job(2), "t": at(4, 3, 30)},
            )
            before = conn.execute(
                text("SELECT * FROM vspc.job_sla_current ORDER BY instance_uid")
            ).all()
            # hours_since_success moves with the clock between the two reads
            old_columns = list(conn.execute(text("SELECT * FROM vspc.job_sla_current")).keys())
            kept = [c for c in old_columns if c != "hours_since_success"]
            old_daily = conn.execute(
                text(f"SELECT {daily_columns} FROM vspc.sla_daily ORDER BY 1, 2")
            ).all()
            old_definitions = definitions(conn)
        assert before and old_daily
        assert migrate(empty_db) == HEAD
        with engine.connect() as conn:
            current = (
                conn.execute(text("SELECT * FROM vspc.job_sla_current ORDER BY instance_uid"))
                .mappings()
                .all()
            )
            new_daily = conn.execute(
                text(f"SELECT {daily_columns} FROM vspc.sla_daily ORDER BY 1, 2")
            ).all()
            created = conn.execute(
                text(
                    "SELECT day, organization_uid, restore_points_created FROM vspc.sla_daily "
                    "WHERE restore_points_created > 0"
                )
            ).all()
            computers = conn.execute(
                text("SELECT count(*) FROM vspc.computer_sla_current")
            ).scalar_one()
        assert [tuple(r[c] for c in kept) for r in current] == [
            tuple(getattr(r, c) for c in kept) for r in before
        ]
        assert [r["last_restore_point_at"] for r in current if r["instance_uid"] == job(2)] == [
            at(4, 3, 30)
        ]
        assert new_daily == old_daily
        assert [tuple(r) for r in created] == [(day(4), ORG_A, 1)]
        assert computers == 1  # the hand-built history's one agent, with live jobs
        assert migrate(empty_db, "0009") == "0009"
        with engine.connect() as conn:
            restored = conn.execute(
                text("SELECT * FROM vspc.job_sla_current ORDER BY instance_uid")
            ).all()
            assert definitions(conn) == old_definitions
            assert (
                conn.execute(
                    text(f"SELECT {daily_columns} FROM vspc.sla_daily ORDER BY 1, 2")
                ).all()
                == old_daily
            )
        assert [tuple(getattr(r, c) for c in kept) for r in restored] == [
            tuple(getattr(r, c) for c in kept) for r in before
        ]
        assert "computer_sla_current" not in views(empty_db)
        assert migrate(empty_db) == HEAD
    finally:
        engine.dispose()
