"""The collections a sync reads, declared once, and the items their readers hand the loader.

A collection is a path of the console read page by page. A *primary* collection is read to a
verifiable end (re-read when paging shifted under it); its failure fails the run, and only a
complete read of it may delete what it no longer lists (``deletes``). A *secondary* collection
only labels the primary one (names): the console refusing it is a warning, and it is upserted,
never deleted from.

Reader threads (``etl.extract.reader``) hand the loader one item at a time over a bounded
queue: a page of records of a named collection (:class:`PageRead`), the end of a pass with its
completeness facts (:class:`PassEnded`), the end of the secondary read (:class:`NamesRead`), or
a failure (:class:`ReadFailed`). Nothing else travels between them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from etl.extract.jobs import decode_jobs_page, job_records
from etl.extract.names import AGENTS, AGENTS_PATH, ORGANIZATIONS, ORGANIZATIONS_PATH, Names
from etl.extract.pager import PassReport


@dataclass(frozen=True)
class Collection:
    """One collection of the console: its name (the items' key), path, how its page bodies
    are decoded (None: as every body) and its items made records, and its part in a run."""

    name: str
    path: str
    primary: bool
    deletes: bool
    decode: Callable[[bytes], Any] | None = None
    records: Callable[[list[Any]], list[Any]] | None = None


JOBS = Collection(
    "jobs",
    "/api/v3/infrastructure/backupAgents/windows/jobs",
    primary=True,
    deletes=True,
    decode=decode_jobs_page,
    records=job_records,
)
SECONDARY = (
    Collection(ORGANIZATIONS, ORGANIZATIONS_PATH, primary=False, deletes=False),
    Collection(AGENTS, AGENTS_PATH, primary=False, deletes=False),
)
ALL = (JOBS, *SECONDARY)


@dataclass(frozen=True, slots=True)
class PageRead:
    """One page of a collection: its records (``JobRecord`` for jobs, rows for names), the
    offset it was asked at and the total the console reported (0 where not known)."""

    collection: str
    records: list[Any]
    offset: int = 0
    total: int = 0


@dataclass(frozen=True, slots=True)
class PassEnded:
    """A pass over a primary collection ended; ``report`` says what it saw."""

    collection: str
    report: PassReport


@dataclass(frozen=True, slots=True)
class NamesRead:
    """The secondary collections are read (as far as the console let them be)."""

    names: Names


@dataclass(frozen=True, slots=True)
class ReadFailed:
    """A reader failed; the run fails with ``error``."""

    collection: str
    error: BaseException


Item = PageRead | PassEnded | NamesRead | ReadFailed
