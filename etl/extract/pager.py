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
import logging
import sys
from collections.abc import Generator, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from etl.errors import ProtocolError
from etl.extract.client import VspcClient

_log = logging.getLogger(__name__)

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
    concurrency: int = 1,
    sort: str = SORT_BY_INSTANCE_UID,
) -> Generator[Page, None, None]:
    """Yield the pages of one pass over ``path``; ``report`` is filled in as it goes.

    ``params`` add to the query (``filter``, ``select``); ``limit`` and ``offset`` are the
    pager's own, and so is ``sort`` (by ``instanceUid`` unless given). With ``concurrency`` > 1,
    the pages after the first are fetched that many at a time once the first page has told
    the total; they are yielded as they arrive, not in offset order.
    """
    if page_size < 1:
        raise ValueError("page_size must be at least 1")
    query = {**(params or {}), "sort": sort}
    try:
        if concurrency <= 1:
            yield from _pass(client, path, page_size, report, query, max_pages)
        else:
            yield from _concurrent_pass(
                client, path, page_size, report, query, max_pages, concurrency
            )
    finally:
        if len(set(report.totals)) > 1:
            report.note(
                f"the collection changed while paging: total was {report.totals[0]} on the "
                f"first page and {report.totals[-1]} on the last"
            )


def _fetch(
    client: VspcClient, path: str, params: Mapping[str, str] | None, page_size: int, offset: int
) -> _Envelope:
    given = dict(params or {})
    sort = given.pop("sort", SORT_BY_INSTANCE_UID)
    query: dict[str, str | int] = {**given, "limit": page_size, "offset": offset, "sort": sort}
    return _envelope(client.get_json(path, query), path, offset)


def _accept(page: _Envelope, report: PassReport, offset: int, page_size: int) -> Page | None:
    """Check a page and count it in ``report``; None if the console re-served another offset."""
    if page.offset is not None and page.offset != offset:
        report.note(f"the console re-served offset {page.offset} when asked for offset {offset}")
        return None
    _check(page, report, offset)
    report.pages += 1
    report.items += len(page.items)
    report.totals.append(page.total)
    served_to = offset + len(page.items)
    if len(page.items) < page_size and page.total > served_to:
        report.note(
            f"the console served {len(page.items)} items at offset {offset} when asked "
            f"for {page_size}, but reported a total of {page.total}"
        )
    return Page(offset=offset, items=page.items, total=page.total)


def _pass(
    client: VspcClient,
    path: str,
    page_size: int,
    report: PassReport,
    params: Mapping[str, str] | None,
    max_pages: int,
    offset: int = 0,
) -> Iterator[Page]:
    for _ in range(max_pages - report.pages):
        page = _accept(_fetch(client, path, params, page_size, offset), report, offset, page_size)
        if page is None:
            return  # never step on from a re-served page: that server would loop forever
        yield page
        # Only a short page ends a pass. A full page that reaches a stale total may hide a
        # job inserted meanwhile: calling that extract complete would delete the job pushed
        # past the total. Costs one empty page when the total is a multiple of the page size.
        if len(page.items) < page_size:
            report.finished = True
            return
        offset += len(page.items)
    report.note(f"stopped after {max_pages} pages (max_pages) before the end of {path}")


def _concurrent_pass(
    client: VspcClient,
    path: str,
    page_size: int,
    report: PassReport,
    params: Mapping[str, str] | None,
    max_pages: int,
    concurrency: int,
) -> Iterator[Page]:
    first = _accept(_fetch(client, path, params, page_size, 0), report, 0, page_size)
    if first is None:
        return
    yield first
    if len(first.items) < page_size:  # only a short page ends a pass (see _pass)
        report.finished = True
        return
    if first.total == 0:
        # No usable total to plan with: walk on one page at a time.
        yield from _pass(client, path, page_size, report, params, max_pages, len(first.items))
        return
    throttle = Throttle(concurrency)
    # Plan through the page holding offset ``total``: the last page must come back short.
    end, next_offset, stop = first.total + 1, page_size, False
    data_end = sys.maxsize  # where a short page showed the data to end: plan nothing past it
    in_flight: dict[Future[_Envelope], int] = {}
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="vspc-pager")
    try:
        while True:
            while not stop and len(in_flight) < throttle.limit and next_offset < min(end, data_end):
                if report.pages + len(in_flight) >= max_pages:
                    report.note(
                        f"stopped after {max_pages} pages (max_pages) before the end of {path}"
                    )
                    stop = True
                    break
                future = pool.submit(_fetch, client, path, params, page_size, next_offset)
                in_flight[future] = next_offset
                next_offset += page_size
            if not in_flight:
                break
            done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in sorted(done, key=in_flight.__getitem__):
                offset = in_flight.pop(future)
                page = _accept(future.result(), report, offset, page_size)
                throttle.observe(client.stats.pushback)
                if page is None:
                    stop = True
                    continue
                end = max(end, page.total + 1)  # the collection grew: plan extra pages too
                if len(page.items) < page_size:  # a total can lie (2**31 - 1): data cannot
                    data_end = min(data_end, offset + len(page.items))
                yield page
        report.finished = not stop
    finally:
        # On an error or an early close, pages still in flight are abandoned, not awaited.
        pool.shutdown(wait=False, cancel_futures=True)


class Throttle:
    """How many pages may be in flight: halved on every new 429 or logout, then regained one
    by one.

    The console limits requests per user and per IP; backing off as a whole, not just per
    request, is what lets it recover. Logouts (see ``ClientStats.logouts``) count too: while
    another application keeps ending the session, fewer requests share each new one.
    """

    def __init__(self, ceiling: int) -> None:
        self.ceiling = ceiling
        self.limit = ceiling
        self._throttled = 0
        self._calm = 0

    def observe(self, throttled_total: int) -> None:
        """Feed the client's running count of 429 answers and logouts after each page."""
        if throttled_total > self._throttled:
            self._throttled = throttled_total
            self.limit = max(1, self.limit // 2)
            self._calm = 0
            _log.info(
                "the console throttles us (429) or ends our session (401): "
                "%d page(s) in flight now",
                self.limit,
            )
            return
        self._calm += 1
        if self.limit < self.ceiling and self._calm >= 2 * self.limit:
            self.limit += 1
            self._calm = 0


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
