"""The views, functions and triggers of ``etl/sql`` as alembic_utils entities.

``env.py`` registers them, so autogenerate and ``alembic check`` compare each with the
database's own (alembic_utils creates the file's version in a savepoint and compares what
PostgreSQL made of both). Only these three kinds are compared: grants (``vspc-etl grant``)
and policies belong to the operator, not to the migrations.
"""

from __future__ import annotations

from alembic_utils.pg_function import PGFunction
from alembic_utils.pg_trigger import PGTrigger
from alembic_utils.pg_view import PGView
from alembic_utils.replaceable_entity import ReplaceableEntity

from etl import sql

ENTITY_TYPES: dict[str, type[ReplaceableEntity]] = {
    "function": PGFunction,
    "view": PGView,
    "trigger": PGTrigger,
}


def sql_entities() -> list[ReplaceableEntity]:
    """Every definition of ``etl/sql``, in creation order."""
    return [ENTITY_TYPES[o.kind].from_sql(o.create) for o in sql.objects()]
