"""Names for reports: organizations, backup agents (computers) and their management agents.

Read with the same client, pager and retries as the jobs, one collection after the other, by a
thread of their own beside the job pages. They are secondary:
if the console refuses them (a company-scoped account gets 403, an older console 404) or
fails to serve them, the run goes on and says so; the names already stored stay as they were.
Records are parsed leniently (a name is only a label): one without a usable ``instanceUid``
is skipped and counted, a value of the wrong type is read as unknown (null).
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import orjson

from etl import __version__
from etl.errors import SourceError
from etl.extract.client import VspcClient
from etl.extract.pager import PassReport, iter_pages
from etl.transform import parse_timestamp

log = logging.getLogger(__name__)

ORGANIZATIONS_PATH = "/api/v3/organizations"
AGENTS_PATH = "/api/v3/infrastructure/backupAgents"
"""Every platform's agents with their computer name (``/backupAgents/windows`` has none)."""
MANAGEMENT_AGENTS_PATH = "/api/v3/infrastructure/managementAgents"


def _spellings(*values: str) -> dict[str, str]:
    return {value.lower(): value for value in values}


_ORGANIZATION_TYPES = _spellings("Company", "Provider", "Reseller", "Unknown")
_PLATFORMS = _spellings("Windows", "Linux", "Mac", "Unknown")
_AGENT_STATUS = _spellings("Active", "NotRunning", "Unknown")
_OPERATION_MODES = _spellings("Server", "Workstation", "UnLicensed", "Unknown")
_MANAGEMENT_STATUS = _spellings("Healthy", "Warning", "Error", "Inaccessible", "Unknown")
_CONNECTION_STATUS = _spellings("Online", "Inaccessible", "Rejected", "Unknown")
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")  # PostgreSQL text holds neither
# The key holds the ETL version: a release that parses names differently re-stages them all.
_PAGE_KEY = f"vspc-etl {__version__} names".encode()[:64]

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
    """One backup agent of any platform; ``computer_name`` is the API's ``name``."""

    instance_uid: uuid.UUID
    computer_name: str | None
    organization_uid: uuid.UUID | None
    version: str | None
    status: str | None
    agent_platform: str | None = None
    management_agent_uid: uuid.UUID | None = None
    operation_mode: str | None = None


@dataclass(frozen=True)
class ManagementAgentRow:
    """One management agent: the console's link to a computer (connection, heartbeat)."""

    instance_uid: uuid.UUID
    host_name: str | None
    friendly_name: str | None
    organization_uid: uuid.UUID | None
    location_uid: uuid.UUID | None
    version: str | None
    status: str | None
    connection_status: str | None
    last_heartbeat_at: datetime | None


ORGANIZATIONS = "organizations"
AGENTS = "agents"
MANAGEMENT_AGENTS = "management_agents"
KINDS = (ORGANIZATIONS, AGENTS, MANAGEMENT_AGENTS)

Emit = Callable[[str, list[Any]], None]
"""Receives each page of parsed rows: (one of ``KINDS``, rows)."""


@dataclass
class Names:
    """What was read. ``complete`` names the collections read to the end without a refusal
    (only those may be written); a list is None when its endpoint could not be read (see
    ``warnings``) or when the rows went to an ``emit`` callback instead of being kept."""

    organizations: list[OrganizationRow] | None = None
    agents: list[AgentRow] | None = None
    management_agents: list[ManagementAgentRow] | None = None
    warnings: list[str] = field(default_factory=list)
    pages: int = 0
    skipped: int = 0
    complete: set[str] = field(default_factory=set)
    digests: dict[str, list[tuple[bytes, int]]] = field(default_factory=dict)
    """Per collection, (digest, records) of every page read that could be hashed."""
    unchanged_pages: int = 0
    """Pages whose digest was among the ``known`` ones: neither parsed nor handed over."""


def page_digest(items: list[Any]) -> bytes | None:
    """Keyed BLAKE2b-128 of one page of names as received; None if orjson cannot write it."""
    try:
        text = orjson.dumps(items)
    except TypeError:  # lone surrogates, non-string keys, integers beyond 64 bits
        return None
    return hashlib.blake2b(text, digest_size=16, key=_PAGE_KEY).digest()


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


def enum_or_none(value: object, spellings: Mapping[str, str]) -> str | None:
    """A string in the API's spelling (ASCII case folded), kept as received if unknown."""
    text = text_or_none(value)
    if text is None:
        return None
    return spellings.get(text.lower(), text) if text.isascii() else text


def timestamp_or_none(value: object) -> datetime | None:
    """An ISO-8601 timestamp (the jobs' rules, ``etl.transform.parse_timestamp``), else None."""
    if not isinstance(value, str):
        return None
    try:
        return parse_timestamp(value)
    except ValueError:
        return None


def agent_row(record: object) -> AgentRow | None:
    """A ``/infrastructure/backupAgents`` item as a row; None without a usable uid."""
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
        status=enum_or_none(record.get("status"), _AGENT_STATUS),
        agent_platform=enum_or_none(record.get("agentPlatform"), _PLATFORMS),
        management_agent_uid=uuid_or_none(record.get("managementAgentUid")),
        operation_mode=enum_or_none(record.get("operationMode"), _OPERATION_MODES),
    )


def management_agent_row(record: object) -> ManagementAgentRow | None:
    """A ``/infrastructure/managementAgents`` item as a row; None without a usable uid."""
    if not isinstance(record, dict):
        return None
    uid = uuid_or_none(record.get("instanceUid"))
    if uid is None:
        return None
    return ManagementAgentRow(
        instance_uid=uid,
        host_name=text_or_none(record.get("hostName")),
        friendly_name=text_or_none(record.get("friendlyName")),
        organization_uid=uuid_or_none(record.get("organizationUid")),
        location_uid=uuid_or_none(record.get("locationUid")),
        version=text_or_none(record.get("version")),
        status=enum_or_none(record.get("status"), _MANAGEMENT_STATUS),
        connection_status=enum_or_none(record.get("connectionStatus"), _CONNECTION_STATUS),
        last_heartbeat_at=timestamp_or_none(record.get("lastHeartbeatTime")),
    )


def fetch_names(
    client: VspcClient,
    *,
    page_size: int,
    concurrency: int = 1,
    stop: threading.Event | None = None,
    emit: Emit | None = None,
    known: Mapping[str, Collection[bytes]] | None = None,
) -> Names:
    """Read both name collections; a SourceError on one becomes a warning, not a failure.

    With ``emit`` each page of rows goes to it as it is read and nothing is kept (memory does
    not grow with the console); without, the rows are returned in the lists of ``Names``.
    ``stop`` ends the reading between two pages (what was read is returned). A page whose
    digest (:func:`page_digest`) is in ``known[collection]`` (pages the warehouse already
    holds, see ``etl.load.names``) is neither parsed nor handed over; every page's digest is
    kept in ``Names.digests``.
    """
    names = Names()
    kept: dict[str, list[Any]] = {kind: [] for kind in KINDS}
    lock = threading.Lock()

    def keep(kind: str, rows: list[Any]) -> None:
        with lock:
            kept[kind].extend(rows)

    def read(kind: str, path: str, parse: Callable[[object], Any], what: str) -> None:
        ok = _read(
            client,
            names,
            kind,
            path,
            parse,
            what,
            page_size,
            concurrency,
            stop,
            emit or keep,
            (known or {}).get(kind, ()),
            lock,
        )
        if ok:
            with lock:
                names.complete.add(kind)

    for args in (
        (ORGANIZATIONS, ORGANIZATIONS_PATH, organization_row, "organization names"),
        (AGENTS, AGENTS_PATH, agent_row, "computer names (backup agents)"),
        (
            MANAGEMENT_AGENTS,
            MANAGEMENT_AGENTS_PATH,
            management_agent_row,
            "agent health (management agents)",
        ),
    ):
        read(*args)
    if emit is None:
        if ORGANIZATIONS in names.complete:
            names.organizations = kept[ORGANIZATIONS]
        if AGENTS in names.complete:
            names.agents = kept[AGENTS]
        if MANAGEMENT_AGENTS in names.complete:
            names.management_agents = kept[MANAGEMENT_AGENTS]
    return names


def _read(
    client: VspcClient,
    names: Names,
    kind: str,
    path: str,
    parse: Callable[[object], T | None],
    what: str,
    page_size: int,
    concurrency: int,
    stop: threading.Event | None,
    emit: Emit,
    known: Collection[bytes],
    lock: threading.Lock,
) -> bool:
    """Read one collection page by page into ``emit``; False if the console refused it.
    ``lock`` guards the counters of ``names``, which the other collections' threads share."""
    report = PassReport()
    with lock:
        digests = names.digests.setdefault(kind, [])
    try:
        for items in _pages(client, path, page_size, concurrency, report):
            if stop is not None and stop.is_set():
                break
            digest = page_digest(items)
            rows: list[T] = []
            skipped = 0
            if digest is None or digest not in known:
                for record in items:
                    row = parse(record)
                    if row is None:
                        skipped += 1
                    else:
                        rows.append(row)
            with lock:
                names.pages += 1
                names.skipped += skipped
                if digest is not None:
                    digests.append((digest, len(items)))
                    if digest in known:
                        names.unchanged_pages += 1
                        continue
            emit(kind, rows)
    except SourceError as exc:
        warning = f"{what} were not refreshed: {exc}"
        log.warning("%s; the job sync goes on, names stay as they were", warning)
        with lock:
            names.warnings.append(warning)
        return False
    if report.problems:
        # Names are upserted, never deleted: a shifted page can only leave one name stale.
        log.warning("reading %s: %s", what, "; ".join(report.problems))
    return True


def _pages(
    client: VspcClient, path: str, page_size: int, concurrency: int, report: PassReport
) -> Iterator[list[Any]]:
    pages = iter_pages(client, path, page_size=page_size, report=report, concurrency=concurrency)
    try:
        for page in pages:
            yield page.items
    finally:
        pages.close()
