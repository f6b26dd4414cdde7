"""One pass over a VSPC collection with ``limit``/``offset``, sorted by ``instanceUid``.

Offset paging over a live collection can skip or repeat items, some collections report a
total of 0, and some servers ignore ``offset`` and re-serve page one. The pager notes every
such symptom in a ``PassReport`` as a readable sentence and stops where going on could loop;
whether to trust or re-read the pass is the caller's decision. Whatever the server answers,
the pass ends: every page either stops it or moves the offset forward, and ``max_pages``
bounds the number of pages.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from etl.errors import ProtocolError
from etl.extract.client import VspcClient

# Compact JSON, as the console's examples spell it; httpx URL-encodes it.
SORT_BY_INSTANCE_UID = json.dumps(
    [{"property": "instanceUid", "direction": "ascending"}], separators=(",", ":")
)


@dataclass
class Page:
    """One page as served: the offset asked for, the ``data`` array untouched, its total."""

    offset: int
    items: list[Any]
    total: int


@dataclass
class PassReport:
    """What one pass saw. ``problems`` are sentences for the operator, each recorded once."""

    pages: int = 0
    items: int = 0
    totals: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    finished: bool = False

    @property
    def consistent(self) -> bool:
        """The pass ended normally, saw no problem, and the total never changed."""
        return self.finished and not self.problems and len(set(self.totals)) <= 1

    def note(self, problem: str) -> None:
        """Record ``problem`` unless the same sentence is already there."""
        if problem not in self.problems:
            self.problems.append(problem)


@dataclass(frozen=True)
class _Envelope:
    items: list[Any]
    total: int
    offset: int | None  # echoed by the console; None when it does not say
    count: int | None


def iter_pages(
    client: VspcClient,
    path: str,
    *,
    page_size: int,
    report: PassReport,
    params: Mapping[str, str] | None = None,
    max_pages: int = 1_000_000,
) -> Iterator[Page]:
    """Yield the pages of one pass over ``path``; ``report`` is filled in as it goes.

    ``params`` add to the query (``filter``, ``select``); ``limit``, ``offset`` and ``sort``
    are the pager's own.
    """
    if page_size < 1:
        raise ValueError("page_size must be at least 1")
    try:
        yield from _pass(client, path, page_size, report, params, max_pages)
    finally:
        if len(set(report.totals)) > 1:
            report.note(
                f"the collection changed while paging: total was {report.totals[0]} on the "
                f"first page and {report.totals[-1]} on the last"
            )


def _pass(
    client: VspcClient,
    path: str,
    page_size: int,
    report: PassReport,
    params: Mapping[str, str] | None,
    max_pages: int,
) -> Iterator[Page]:
    offset = 0
    for _ in range(max_pages):
        query: dict[str, str | int] = {
            **(params or {}),
            "limit": page_size,
            "offset": offset,
            "sort": SORT_BY_INSTANCE_UID,
        }
        page = _envelope(client.get_json(path, query), path, offset)
        if page.offset is not None and page.offset != offset:
            # Never step on from here: a server that ignores offset would loop forever.
            report.note(
                f"the console re-served offset {page.offset} when asked for offset {offset}"
            )
            return
        _check(page, report, offset)
        report.pages += 1
        report.items += len(page.items)
        report.totals.append(page.total)
        yield Page(offset=offset, items=page.items, total=page.total)

        served_to = offset + len(page.items)
        if len(page.items) < page_size:
            if page.total > served_to:
                report.note(
                    f"the console served {len(page.items)} items at offset {offset} when asked "
                    f"for {page_size}, but reported a total of {page.total}"
                )
            report.finished = True
            return
        if 0 < page.total <= served_to:
            report.finished = True
            return
        offset = served_to
    report.note(f"stopped after {max_pages} pages (max_pages) before the end of {path}")


def _check(page: _Envelope, report: PassReport, offset: int) -> None:
    if page.total == 0 and page.items:
        report.note("the console reported a total of 0 while serving items (total unreliable)")
    if page.count is not None and page.count != len(page.items):
        report.note(
            f"the console reported count {page.count} for {len(page.items)} items "
            f"at offset {offset}"
        )


def _envelope(body: Any, path: str, offset: int) -> _Envelope:
    def malformed(what: str) -> ProtocolError:
        return ProtocolError(
            f"The VSPC console answered {path} at offset {offset} with {what}, "
            "not the documented {meta: {pagingInfo}, data: [...]} envelope."
        )

    if not isinstance(body, dict):
        raise malformed(f"a JSON {type(body).__name__}")
    items = body.get("data")
    if not isinstance(items, list):
        raise malformed("no data list")
    meta = body.get("meta")
    paging = meta.get("pagingInfo") if isinstance(meta, dict) else None
    if not isinstance(paging, dict):
        raise malformed("no meta.pagingInfo")
    total = paging.get("total")
    if not _is_count(total):
        raise malformed(f"meta.pagingInfo.total = {total!r}")
    echoed, count = paging.get("offset"), paging.get("count")
    for name, value in (("offset", echoed), ("count", count)):
        if value is not None and not _is_count(value):
            raise malformed(f"meta.pagingInfo.{name} = {value!r}")
    return _Envelope(items=items, total=total, offset=echoed, count=count)


def _is_count(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
