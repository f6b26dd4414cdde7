"""Readers: each reads collections of the console as ``etl.collections`` items.

A reader never touches the database. :func:`pass_items` is one pass over a primary collection
as items, taken by the loader's thread itself where nothing else needs it (the job pages: the
pager's requests in flight are what reads ahead, and a thread between them and the loader
only added hand-offs of the interpreter's lock to every statement of the loader). The other
readers run in threads (:func:`start`) and put their items on the :class:`Inbox`, the queue
the loader takes from, through a :class:`Channel` of their own. A reader whose channel is full
waits, so memory stays flat however large the console; :meth:`Inbox.stop` ends every reader
at its next page without waiting for room.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Collection, Generator, Mapping, Sequence
from contextlib import closing

from etl.collections import Collection as ConsoleCollection
from etl.collections import Item, NamesRead, PageRead, PassEnded, ReadFailed
from etl.extract.client import VspcClient
from etl.extract.names import fetch_names
from etl.extract.pager import SORT_BY_INSTANCE_UID, PassReport, iter_pages
from etl.transform import is_uuid


class Stopped(Exception):
    """The inbox was stopped: the reader ends without waiting for room."""


class Inbox:
    """The queue between the readers and the loader: items in the order they were put, each
    reader within the room of its own :class:`Channel` (a reader with many pages waiting
    never keeps another's out)."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[Channel | None, Item]] = queue.SimpleQueue()
        self.stopped = threading.Event()

    def channel(self, room: int) -> Channel:
        """A reader's way in: at most ``room`` of its items wait for the loader at once."""
        return Channel(self, room)

    def get(self) -> Item:
        """The next item, waiting for it."""
        return self._took(self._queue.get())

    def poll(self) -> Item | None:
        """The next item if one is waiting, else None."""
        try:
            return self._took(self._queue.get_nowait())
        except queue.Empty:
            return None

    @staticmethod
    def _took(entry: tuple[Channel | None, Item]) -> Item:
        channel, item = entry
        if channel is not None:
            channel.room.release()
        return item

    def stop(self) -> None:
        """End every reader at its next page (they may still be reading one)."""
        self.stopped.set()


class Channel:
    """One reader's bounded share of the :class:`Inbox`."""

    def __init__(self, inbox: Inbox, room: int) -> None:
        self.inbox = inbox
        self.room = threading.Semaphore(room)

    def put(self, item: Item) -> None:
        """Hand ``item`` over, waiting for room; raises :class:`Stopped` once stopped."""
        while not self.room.acquire(timeout=0.1):
            if self.inbox.stopped.is_set():
                raise Stopped
        if self.inbox.stopped.is_set():
            self.room.release()
            raise Stopped
        self.inbox._queue.put((self, item))

    def fail(self, item: ReadFailed) -> None:
        """Hand over the reader's failure, its last item, without waiting for room."""
        self.inbox._queue.put((None, item))


def start(name: str, channel: Channel, work: Callable[[], None]) -> threading.Thread:
    """Run ``work`` in a thread; what it raises reaches the loader as a :class:`ReadFailed`."""

    def run() -> None:
        try:
            work()
        except Stopped:
            return
        except BaseException as exc:  # handed to the loader, which fails the run with it
            if not channel.inbox.stopped.is_set():
                channel.fail(ReadFailed(name, exc))

    thread = threading.Thread(target=run, name=f"vspc-{name}", daemon=True)
    thread.start()
    return thread


def pass_items(
    client: VspcClient,
    collection: ConsoleCollection,
    *,
    page_size: int,
    concurrency: int,
    params: Mapping[str, str] | None = None,
    sort: str | None = None,
) -> Generator[PageRead | PassEnded, None, None]:
    """One pass over a primary collection: its pages, then :class:`PassEnded` (a failure is
    raised). ``params`` add to the query (a filter), ``sort`` replaces the pager's order by
    ``instanceUid``. Close it to end the pass early: the pager's threads end then, not at GC."""
    report = PassReport()
    pages = iter_pages(
        client,
        collection.path,
        page_size=page_size,
        report=report,
        concurrency=concurrency,
        params=params,
        sort=sort or SORT_BY_INSTANCE_UID,
    )
    records = collection.records or list
    with closing(pages):
        for page in pages:
            yield PageRead(collection.name, records(page.items), page.offset, page.total)
    yield PassEnded(collection.name, report)


def put_each(items: Generator[Item, None, None], inbox: Channel) -> None:
    """Run ``items`` (a :func:`pass_items`) in a reader thread: each item put on ``inbox``."""
    with closing(items):
        for item in items:
            inbox.put(item)


def read_new_points(
    client: VspcClient,
    collection: ConsoleCollection,
    inbox: Channel,
    *,
    page_size: int,
    concurrency: int,
    sort: str,
    params: Mapping[str, str],
    overlap: Mapping[str, str],
    known: Collection[str],
    fetch: Callable[[Sequence[str]], Mapping[str, str]],
    chunk: int,
) -> None:
    """A *new* read of the restore points as one pass: the overlap listed by ``overlap`` (uids
    only; its pages handed over holding only the known points, which the loader counts as
    listed without staging them, and records without a valid uid, which it rejects: a console
    may refuse one in a filter), then
    the points of ``params`` in full, then the overlap's unknown points (``known``: lower-case
    uids) in full, ``chunk`` at a time by the query ``fetch`` gives; last a
    :class:`PassEnded` whose total is the overlap's and the listing's together."""
    window = PassReport()
    unknown: dict[str, None] = {}  # in the order listed, each once
    pages = iter_pages(
        client,
        collection.path,
        page_size=page_size,
        report=window,
        concurrency=concurrency,
        params=overlap,
        sort=sort,
    )
    with closing(pages):
        for page in pages:
            listed = []
            for record in page.items:
                uid = record.get("instanceUid") if isinstance(record, dict) else None
                if is_uuid(uid) and uid.lower() not in known:
                    unknown[uid] = None
                else:
                    listed.append(record)
            inbox.put(PageRead(collection.name, listed, page.offset, page.total))
    listing = PassReport()
    pages = iter_pages(
        client,
        collection.path,
        page_size=page_size,
        report=listing,
        concurrency=concurrency,
        params=params,
        sort=sort,
    )
    with closing(pages):
        for page in pages:
            inbox.put(PageRead(collection.name, page.items, page.offset, page.total))
    reports = [window, listing]
    wanted = list(unknown)
    fetched = 0
    for start_at in range(0, len(wanted), chunk):
        report = PassReport()
        reports.append(report)
        query = fetch(wanted[start_at : start_at + chunk])
        pages = iter_pages(
            client, collection.path, page_size=page_size, report=report, params=query, sort=sort
        )
        with closing(pages):
            for page in pages:
                fetched += len(page.items)
                inbox.put(PageRead(collection.name, page.items, page.offset, page.total))
    whole = PassReport(
        pages=sum(r.pages for r in reports),
        items=sum(r.items for r in reports),
        totals=[sum(r.totals[-1] if r.totals else 0 for r in (window, listing))],
        finished=all(r.finished for r in reports),
    )
    for report in reports:
        for problem in report.problems:
            whole.note(problem)
    if fetched != len(wanted):
        whole.note(
            f"{len(wanted)} point(s) of the overlap not stored yet were listed, "
            f"{fetched} came back when fetched by uid"
        )
    inbox.put(PassEnded(collection.name, whole))


def read_names(
    client: VspcClient,
    inbox: Channel,
    *,
    page_size: int,
    concurrency: int,
    known: Mapping[str, Collection[bytes]],
) -> None:
    """The secondary collections (``etl.extract.names``): their pages, then :class:`NamesRead`."""
    names = fetch_names(
        client,
        page_size=page_size,
        concurrency=concurrency,
        stop=inbox.inbox.stopped,
        emit=lambda kind, rows: inbox.put(PageRead(kind, rows)),
        known=known,
    )
    inbox.put(NamesRead(names))
