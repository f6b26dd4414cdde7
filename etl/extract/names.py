"""Names for reports: organizations and Windows backup agents (computers).

Read with the same client, pager and retries as the jobs, after the jobs. They are secondary:
if the console refuses them (a company-scoped account gets 403, an older console 404) or
fails to serve them, the run goes on and says so; the names already stored stay as they were.
Records are parsed leniently (a name is only a label): one without a usable ``instanceUid``
is skipped and counted, a value of the wrong type is read as unknown (null).
"""

from __future__ import annotations

import logging
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from etl.errors import SourceError
from etl.extract.client import VspcClient
from etl.extract.pager import PassReport, iter_pages

log = logging.getLogger(__name__)

ORGANIZATIONS_PATH = "/api/v3/organizations"
AGENTS_PATH = "/api/v3/infrastructure/backupAgents/windows"

_ORGANIZATION_TYPES = {t.lower(): t for t in ("Company", "Provider", "Reseller", "Unknown")}
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")  # PostgreSQL text holds neither

T = TypeVar("T")


@dataclass(frozen=True)
class OrganizationRow:
    """One organization: company, reseller or provider."""

    instance_uid: uuid.UUID
    name: str | None
    alias: str | None
    type: str | None


@dataclass(frozen=True)
class AgentRow:
    """One Windows backup agent; ``computer_name`` is the API's ``name``."""

    instance_uid: uuid.UUID
    computer_name: str | None
    organization_uid: uuid.UUID | None
    version: str | None
    status: str | None


@dataclass
class Names:
    """What was read. A list is None when its endpoint could not be read (see ``warnings``)."""

    organizations: list[OrganizationRow] | None = None
    agents: list[AgentRow] | None = None
    warnings: list[str] = field(default_factory=list)
    pages: int = 0
    skipped: int = 0


def text_or_none(value: object) -> str | None:
    """A string as PostgreSQL can store it; anything else is unknown."""
    if not isinstance(value, str):
        return None
    return _UNSTORABLE.sub("\ufffd", value)


def uuid_or_none(value: object) -> uuid.UUID | None:
    """A hyphenated uuid string as a UUID, else None."""
    if not isinstance(value, str) or len(value) != 36:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def organization_row(record: object) -> OrganizationRow | None:
    """An ``/organizations`` item as a row; None without a usable ``instanceUid``."""
    if not isinstance(record, dict):
        return None
    uid = uuid_or_none(record.get("instanceUid"))
    if uid is None:
        return None
    kind = text_or_none(record.get("type"))
    return OrganizationRow(
        instance_uid=uid,
        name=text_or_none(record.get("name")),
        alias=text_or_none(record.get("alias")),
        type=_ORGANIZATION_TYPES.get(kind.lower(), kind) if kind is not None else None,
    )


def agent_row(record: object) -> AgentRow | None:
    """A ``/infrastructure/backupAgents/windows`` item as a row; None without a usable uid."""
    if not isinstance(record, dict):
        return None
    uid = uuid_or_none(record.get("instanceUid"))
    if uid is None:
        return None
    return AgentRow(
        instance_uid=uid,
        computer_name=text_or_none(record.get("name")),
        organization_uid=uuid_or_none(record.get("organizationUid")),
        version=text_or_none(record.get("version")),
        status=text_or_none(record.get("status")),
    )


def fetch_names(
    client: VspcClient,
    *,
    page_size: int,
    concurrency: int = 1,
    stop: threading.Event | None = None,
) -> Names:
    """Read both name collections; a SourceError on one becomes a warning, not a failure.

    ``stop`` ends the reading between two pages (what was read is returned).
    """
    names = Names()
    names.organizations = _read(
        client,
        names,
        ORGANIZATIONS_PATH,
        organization_row,
        "organization names",
        page_size,
        concurrency,
        stop,
    )
    names.agents = _read(
        client,
        names,
        AGENTS_PATH,
        agent_row,
        "computer names (backup agents)",
        page_size,
        concurrency,
        stop,
    )
    return names


class NamesFetch:
    """:func:`fetch_names` in a thread of its own, so the HTTP reads overlap the merge.

    ``result()`` waits for it and re-raises what it raised (a SourceError is already a
    warning inside); ``stop()`` asks it to end at the next page and does not wait.
    """

    def __init__(self, client: VspcClient, *, page_size: int, concurrency: int = 1) -> None:
        self._stop = threading.Event()
        self._done = threading.Event()
        self._names: Names | None = None
        self._error: BaseException | None = None

        def work() -> None:
            try:
                self._names = fetch_names(
                    client, page_size=page_size, concurrency=concurrency, stop=self._stop
                )
            except BaseException as exc:  # handed to the caller by result()
                self._error = exc
            finally:
                self._done.set()

        threading.Thread(target=work, name="vspc-names", daemon=True).start()

    def result(self) -> Names:
        """The names read; raises what the fetch raised."""
        self._done.wait()
        if self._error is not None:
            raise self._error
        assert self._names is not None
        return self._names

    def stop(self) -> None:
        """End the fetch at the next page boundary (it may still be reading one)."""
        self._stop.set()


def _read(
    client: VspcClient,
    names: Names,
    path: str,
    parse: Callable[[object], T | None],
    what: str,
    page_size: int,
    concurrency: int,
    stop: threading.Event | None,
) -> list[T] | None:
    report = PassReport()
    rows: list[T] = []
    try:
        for items in _pages(client, path, page_size, concurrency, report):
            if stop is not None and stop.is_set():
                break
            names.pages += 1
            for record in items:
                row = parse(record)
                if row is None:
                    names.skipped += 1
                else:
                    rows.append(row)
    except SourceError as exc:
        warning = f"{what} were not refreshed: {exc}"
        log.warning("%s; the job sync goes on, names stay as they were", warning)
        names.warnings.append(warning)
        return None
    if report.problems:
        # Names are upserted, never deleted: a shifted page can only leave one name stale.
        log.warning("reading %s: %s", what, "; ".join(report.problems))
    return rows


def _pages(
    client: VspcClient, path: str, page_size: int, concurrency: int, report: PassReport
) -> Iterator[list[Any]]:
    pages = iter_pages(client, path, page_size=page_size, report=report, concurrency=concurrency)
    try:
        for page in pages:
            yield page.items
    finally:
        pages.close()
