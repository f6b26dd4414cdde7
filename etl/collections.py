"""The collections a sync reads, declared once, and the items their readers hand the loader.

A collection is a path of the console read page by page. A *primary* collection is read to a
verifiable end (re-read when paging shifted under it); its failure fails the run, and only a
complete read of it may delete what it no longer lists (``deletes``). A *secondary* collection
only labels the primary one (names): the console refusing it is a warning, and it is upserted,
never deleted from.

Readers (``etl.extract.reader``) hand the loader one item at a time, a job pass straight from
its pager, the others over a bounded queue: a page of records of a named collection
(:class:`PageRead`), the end of a pass with its completeness facts (:class:`PassEnded`), the
end of the secondary read (:class:`NamesRead`), or a failure (:class:`ReadFailed`). Nothing
else travels between them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from etl.config import PLATFORMS
from etl.extract.jobs import decode_jobs_page, job_records
from etl.extract.names import (
    AGENTS,
    AGENTS_PATH,
    MANAGEMENT_AGENTS,
    MANAGEMENT_AGENTS_PATH,
    ORGANIZATIONS,
    ORGANIZATIONS_PATH,
    Names,
)
from etl.extract.pager import PassReport
from etl.transform import CONTRACTS, WINDOWS, Contract


@dataclass(frozen=True)
class Collection:
    """One collection of the console: its name (the items' key), path, how its page bodies
    are decoded (None: as every body) and its items made records, and its part in a run.
    A job collection has its platform's ``contract`` (its rows' ``system_type``)."""

    name: str
    path: str
    primary: bool
    deletes: bool
    decode: Callable[[bytes], Any] | None = None
    records: Callable[[list[Any]], list[Any]] | None = None
    contract: Contract = WINDOWS


def _jobs(platform: str) -> Collection:
    return Collection(
        f"{platform}_jobs",
        f"/api/v3/infrastructure/backupAgents/{platform}/jobs",
        primary=True,
        deletes=True,
        decode=decode_jobs_page,
        records=job_records,
        contract=CONTRACTS[{"windows": "Windows", "linux": "Linux", "mac": "Mac"}[platform]],
    )


JOB_COLLECTIONS = {platform: _jobs(platform) for platform in PLATFORMS}
"""Each platform's job collection: same table, its own completeness and deletions."""
JOBS = JOB_COLLECTIONS["windows"]
SECONDARY = (
    Collection(ORGANIZATIONS, ORGANIZATIONS_PATH, primary=False, deletes=False),
    Collection(AGENTS, AGENTS_PATH, primary=False, deletes=False),
    Collection(MANAGEMENT_AGENTS, MANAGEMENT_AGENTS_PATH, primary=False, deletes=False),
)
RESTORE_POINTS = Collection(
    "restore_points",
    "/api/v3/protectedWorkloads/computersManagedByConsole/restorePoints",
    primary=True,
    deletes=True,
)
"""Restore points: read after the jobs, in full or only the new ones (``etl.load.points``);
a complete full read marks the points it no longer lists gone (``gone_at``), never deletes."""
ALL = (*JOB_COLLECTIONS.values(), *SECONDARY, RESTORE_POINTS)


def job_collections(platforms: Iterable[str]) -> tuple[Collection, ...]:
    """The job collections of ``platforms`` (names of ``PLATFORMS``), in ``PLATFORMS`` order."""
    wanted = set(platforms)
    return tuple(c for p, c in JOB_COLLECTIONS.items() if p in wanted)


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
