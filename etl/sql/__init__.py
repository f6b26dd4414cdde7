"""The current definition of every view, function and trigger of schema ``vspc``, one file each.

``functions/NAME.sql``, ``views/NAME.sql`` and ``triggers/TABLE.NAME.sql`` each hold one
``CREATE`` statement (``CREATE OR REPLACE`` for views and functions), then the object's
``COMMENT ON`` statements, if any. They are the source a reader and a new revision start
from; migrations never import them: a revision applies a frozen copy of the text it was
written with (``docs/sql.md``). ``tests/test_sql.py`` proves a database migrated to head
holds exactly these definitions, and ``migrations/env.py`` hands them to alembic_utils so
``alembic check`` and autogenerate compare them too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Literal

import sqlparse

Kind = Literal["function", "view", "trigger"]

# Creation order: views and triggers name functions; PL/pgSQL bodies are not resolved until run.
KINDS: tuple[tuple[Kind, str], ...] = (
    ("function", "functions"),
    ("view", "views"),
    ("trigger", "triggers"),
)
_CREATE = re.compile(r"CREATE\s+(OR\s+REPLACE\s+)?(FUNCTION|VIEW|TRIGGER)\b", re.IGNORECASE)
_LEADING_COMMENTS = re.compile(r"\A(\s*--[^\n]*\n)*\s*")


class SqlFileError(ValueError):
    """A file of ``etl/sql`` is not one CREATE statement followed by COMMENT ON statements."""


@dataclass(frozen=True)
class SqlObject:
    """One view, function or trigger as its file defines it."""

    kind: Kind
    name: str  # the file's stem: NAME, or TABLE.NAME for a trigger
    create: str  # the CREATE statement, without leading comments or the final semicolon
    comments: tuple[str, ...]  # its COMMENT ON statements, without their semicolons

    @property
    def sql(self) -> str:
        """Every statement of the file, each ended by a semicolon: what a revision freezes."""
        return "".join(f"{statement};\n" for statement in (self.create, *self.comments))


def parse(kind: Kind, name: str, text: str) -> SqlObject:
    """The object a file's text defines; SqlFileError naming the file if it is not one."""
    where = f"etl/sql: {kind} {name}"
    statements = [s.strip().rstrip(";").strip() for s in sqlparse.split(text)]
    statements = [s for s in statements if s]
    if not statements:
        raise SqlFileError(f"{where}: the file holds no statement")
    create = _LEADING_COMMENTS.sub("", statements[0], count=1)
    found = _CREATE.match(create)
    if found is None or found.group(2).lower() != kind:
        raise SqlFileError(f"{where}: the first statement must be CREATE {kind.upper()}")
    comments = tuple(statements[1:])
    for comment in comments:
        if not re.match(r"COMMENT\s+ON\b", comment, re.IGNORECASE):
            raise SqlFileError(f"{where}: after the CREATE only COMMENT ON statements may follow")
    return SqlObject(kind, name, create, comments)


def objects(root: Traversable | None = None) -> list[SqlObject]:
    """Every object, in an order they can be created in: functions, views, triggers."""
    base = root if root is not None else files(__name__)
    found: list[SqlObject] = []
    for kind, folder in KINDS:
        paths = sorted(
            (p for p in base.joinpath(folder).iterdir() if p.name.endswith(".sql")),
            key=lambda p: p.name,
        )
        found.extend(parse(kind, p.name.removesuffix(".sql"), p.read_text("utf-8")) for p in paths)
    return found
