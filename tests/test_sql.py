"""etl/sql is the source: a database migrated to head holds exactly its definitions.

The catalog of the session database (migrated to head) is read, every view, function and
trigger of schema vspc is dropped, the files of ``etl/sql`` are applied, and the catalog is
read again: PostgreSQL's own rendering (``pg_get_viewdef``, ``pg_get_functiondef``,
``pg_get_triggerdef``) and every comment must be the same. All in one transaction, rolled
back.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from importlib.resources.abc import Traversable
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic_utils.pg_view import PGView
from alembic_utils.replaceable_entity import registry
from sqlalchemy import Connection, Engine, text

from etl import sql
from etl.load.schema import metadata
from migrations.entities import ENTITY_TYPES, sql_entities

# Every object's rendering and comment, keyed by kind and identity.
CATALOG = """
SELECT 'view ' || c.relname, pg_get_viewdef(c.oid, true), obj_description(c.oid, 'pg_class')
FROM pg_class c WHERE c.relnamespace = 'vspc'::regnamespace AND c.relkind = 'v'
UNION ALL
SELECT 'column ' || c.relname || '.' || a.attname, format_type(a.atttypid, a.atttypmod),
       col_description(c.oid, a.attnum)
FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0
WHERE c.relnamespace = 'vspc'::regnamespace AND c.relkind = 'v'
UNION ALL
SELECT 'function ' || p.oid::regprocedure::text, pg_get_functiondef(p.oid),
       obj_description(p.oid, 'pg_proc')
FROM pg_proc p WHERE p.pronamespace = 'vspc'::regnamespace
UNION ALL
SELECT 'trigger ' || t.tgname || ' ON ' || t.tgrelid::regclass::text,
       pg_get_triggerdef(t.oid, true), obj_description(t.oid, 'pg_trigger')
FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
WHERE c.relnamespace = 'vspc'::regnamespace AND NOT t.tgisinternal
"""

HEAD_OBJECTS = {"function": 12, "view": 4, "trigger": 9}


def catalog(conn: Connection) -> dict[str, tuple[str, str | None]]:
    return {
        name: (definition, comment) for name, definition, comment in conn.execute(text(CATALOG))
    }


def drop_every_object(conn: Connection) -> None:
    """Drop the views, functions and triggers of vspc (functions CASCADE takes the rest)."""
    for (signature,) in conn.execute(
        text(
            "SELECT p.oid::regprocedure::text FROM pg_proc p "
            "WHERE p.pronamespace = 'vspc'::regnamespace"
        )
    ).all():
        conn.execute(text(f"DROP FUNCTION IF EXISTS {signature} CASCADE"))
    for (view,) in conn.execute(
        text("SELECT viewname FROM pg_views WHERE schemaname = 'vspc'")
    ).all():
        conn.execute(text(f"DROP VIEW vspc.{view} CASCADE"))


@pytest.fixture
def rolled_back(engine: Engine) -> Iterator[Connection]:
    """A connection to the session database whose transaction is always rolled back."""
    with engine.connect() as conn:
        conn.begin()
        try:
            yield conn
        finally:
            conn.rollback()


def apply(conn: Connection, objects: list[sql.SqlObject]) -> None:
    for obj in objects:
        conn.exec_driver_sql(obj.sql)


def test_head_holds_exactly_the_definitions_of_etl_sql(rolled_back: Connection) -> None:
    at_head = catalog(rolled_back)
    drop_every_object(rolled_back)
    assert catalog(rolled_back) == {}
    apply(rolled_back, sql.objects())
    from_files = catalog(rolled_back)
    assert sorted(from_files) == sorted(at_head)
    for name, (definition, comment) in at_head.items():
        assert from_files[name] == (definition, comment), name
    # Every view, every view column and every function but the trigger function of 0002
    # says what it is.
    undocumented = sorted(name for name, (_, comment) in at_head.items() if comment is None)
    assert [n for n in undocumented if not n.startswith("trigger ")] == [
        "function vspc.sla_settings_changed()"
    ]


def test_every_object_has_one_file() -> None:
    objects = sql.objects()
    counted = {kind: sum(o.kind == kind for o in objects) for kind in HEAD_OBJECTS}
    assert counted == HEAD_OBJECTS
    names = [o.name for o in objects]
    assert len(names) == len(set(names))
    assert {o.name for o in objects if o.kind == "view"} == {
        "computer_sla_current",
        "job_runs",
        "job_sla_current",
        "sla_daily",
    }
    # functions first, then views, then triggers: the order they can be created in
    assert [o.kind for o in objects] == sorted(
        (o.kind for o in objects), key=["function", "view", "trigger"].index
    )


def test_the_comparison_sees_a_changed_body(rolled_back: Connection) -> None:
    before = catalog(rolled_back)
    [today] = [o for o in sql.objects() if o.name == "sla_daily_today"]
    changed = today.create.replace("BEGIN", "BEGIN\n  -- a comment inside the body", 1)
    rolled_back.exec_driver_sql(changed)
    after = catalog(rolled_back)
    assert [name for name in before if before[name] != after[name]] == [
        "function vspc.sla_daily_today()"
    ]


def test_alembic_check_sees_an_edited_definition(engine: Engine) -> None:
    """What `alembic check` compares: an edited file is a difference until a revision."""
    [job_runs] = [o for o in sql.objects() if o.name == "job_runs"]
    edited = PGView.from_sql(job_runs.create.replace(" AS day,\n", " AS day, 1 AS extra,\n", 1))
    assert "extra" in edited.definition
    opts = {
        "include_schemas": True,
        "include_name": lambda name, type_, parents: (
            name == "vspc"
            if type_ == "schema"
            else name != "alembic_version"
            and (type_ not in ENTITY_TYPES or parents.get("schema_name") == "vspc")
        ),
    }
    registry.register(sql_entities(), entity_types=list(ENTITY_TYPES.values()))
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts=opts)
        assert compare_metadata(context, metadata) == []
        registry.register([edited])
        try:
            diff = compare_metadata(context, metadata)
        finally:
            registry.register(sql_entities())
        assert compare_metadata(context, metadata) == []
    assert [(kind, identity) for kind, identity, _ in diff] == [
        ("replace_or_revert_entity", "PGView: vspc.job_runs")
    ]
    assert "1 AS extra" in str(diff[0][2])


@pytest.mark.parametrize(
    ("text_", "message"),
    [
        ("", "etl/sql: view broken: the file holds no statement"),
        ("SELECT 1;", "etl/sql: view broken: the first statement must be CREATE VIEW"),
        (
            "CREATE FUNCTION vspc.f() RETURNS int LANGUAGE sql AS $$ SELECT 1; $$;",
            "etl/sql: view broken: the first statement must be CREATE VIEW",
        ),
        (
            "CREATE VIEW vspc.broken AS SELECT 1;\nDROP TABLE vspc.etl_runs;",
            "etl/sql: view broken: after the CREATE only COMMENT ON statements may follow",
        ),
    ],
)
def test_a_file_that_is_not_one_definition_is_refused(text_: str, message: str) -> None:
    with pytest.raises(sql.SqlFileError) as refused:
        sql.parse("view", "broken", text_)
    assert str(refused.value) == message


def test_a_file_is_read_as_its_create_and_its_comments(tmp_path: Path) -> None:
    for folder in ("functions", "views", "triggers"):
        (tmp_path / folder).mkdir()
    (tmp_path / "functions" / "f.sql").write_text(
        "-- why it exists\n"
        "CREATE OR REPLACE FUNCTION vspc.f() RETURNS int LANGUAGE plpgsql AS $$\n"
        "BEGIN RETURN 1; END\n$$;\n\n"
        "COMMENT ON FUNCTION vspc.f() IS 'one; always';\n"
    )
    (tmp_path / "views" / "notes.txt").write_text("not a definition")
    root: Traversable = tmp_path  # a Path is a Traversable
    [f] = sql.objects(root)
    assert (f.kind, f.name) == ("function", "f")
    assert f.create == (
        "CREATE OR REPLACE FUNCTION vspc.f() RETURNS int LANGUAGE plpgsql AS $$\n"
        "BEGIN RETURN 1; END\n$$"
    )
    assert f.comments == ("COMMENT ON FUNCTION vspc.f() IS 'one; always'",)
    assert f.sql == f"{f.create};\n{f.comments[0]};\n"


def test_no_revision_imports_the_live_definitions() -> None:
    """A revision applies its own frozen copy: what it meant when written, not today's file."""
    versions = Path(__file__).resolve().parent.parent / "migrations" / "versions"
    revisions = sorted(versions.glob("0*.py"))
    assert len(revisions) >= 7
    importing = [
        path.name
        for path in revisions
        if re.search(r"^\s*(from etl(\.sql)? import|import etl)", path.read_text(), re.MULTILINE)
        or "etl/sql" in path.read_text()
    ]
    assert importing == []
