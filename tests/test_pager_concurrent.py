"""iter_pages with concurrency > 1: the same checks, pages in any order, adaptive to 429
and to logouts."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import httpx
import pytest

from etl.extract import PassReport, PasswordAuth, VspcClient, iter_pages
from etl.extract.pager import Throttle
from tests.test_pager import JOBS, Collection, client_for, job


def read(collection: Any, page_size: int = 10, concurrency: int = 4, **kwargs: Any):
    report = PassReport()
    pages = list(
        iter_pages(
            client_for(collection),
            JOBS,
            page_size=page_size,
            report=report,
            concurrency=concurrency,
            **kwargs,
        )
    )
    return pages, report


def uids(pages: list[Any]) -> list[str]:
    return sorted(item["instanceUid"] for page in pages for item in page.items)


def test_every_page_is_read_once_and_the_pass_is_consistent() -> None:
    collection = Collection([job(i) for i in range(95)])
    pages, report = read(collection)
    assert sorted(collection.asked) == list(range(0, 100, 10))
    assert len(collection.asked) == 10
    assert uids(pages) == sorted(job(i)["instanceUid"] for i in range(95))
    assert report.consistent
    assert (report.pages, report.items) == (10, 95)


def test_requests_really_overlap() -> None:
    """With concurrency 4, four requests are in the server at once."""
    inside = 0
    peak = 0
    lock = threading.Lock()
    gate = threading.Barrier(4, timeout=5)
    collection = Collection([job(i) for i in range(50)])

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal inside, peak
        with lock:
            inside += 1
            peak = max(peak, inside)
        if request.url.params["offset"] != "0" and int(request.url.params["offset"]) <= 40:
            gate.wait()  # only returns once four requests are waiting together
        with lock:
            inside -= 1
        return collection(request)

    pages, report = read(handler)
    assert peak == 4
    assert report.consistent
    assert len(uids(pages)) == 50


def test_a_growing_collection_is_read_to_its_new_end() -> None:
    collection = Collection([job(i) for i in range(30)])
    grown = [False]

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.params["offset"] == "10" and not grown[0]:
            grown[0] = True
            collection.jobs.extend(job(i) for i in range(30, 45))
        return collection(request)

    _pages, report = read(handler, concurrency=2)
    assert max(collection.asked) == 40  # planned from total 30, extended to 45
    assert not report.consistent
    assert "total was 30 on the first page and 45 on the last" in report.problems[0]


def test_a_re_served_page_stops_the_pass() -> None:
    collection = Collection([job(i) for i in range(100)])
    collection.echo = lambda offset: 0
    _pages, report = read(collection)
    assert report.finished is False
    assert "re-served offset 0 when asked for offset" in report.problems[0]
    assert len(collection.asked) <= 1 + 4  # the first page and what was already in flight


def test_short_page_in_the_middle_is_a_problem() -> None:
    collection = Collection([job(i) for i in range(50)])
    real = collection.__call__

    def handler(request: httpx.Request) -> httpx.Response:
        response = real(request)
        if request.url.params["offset"] == "20":
            body = response.json()
            body["data"] = body["data"][:3]
            body["meta"]["pagingInfo"]["count"] = 3
            return httpx.Response(200, json=body)
        return response

    pages, report = read(handler)
    assert not report.consistent
    assert any("served 3 items at offset 20" in p for p in report.problems)
    assert len(uids(pages)) == 43


def test_total_zero_falls_back_to_sequential_paging() -> None:
    collection = Collection([job(i) for i in range(25)])
    collection.total = lambda offset: 0
    pages, report = read(collection)
    assert collection.asked == [0, 10, 20]
    assert len(uids(pages)) == 25
    assert "total unreliable" in report.problems[0]


def test_errors_propagate_and_stop_the_pass() -> None:
    collection = Collection([job(i) for i in range(100)])

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.params["offset"] == "30":
            return httpx.Response(404, json={"errors": [{"message": "gone", "type": "logical"}]})
        return collection(request)

    with pytest.raises(Exception, match="HTTP 404"):
        read(handler)


def test_max_pages_bounds_the_pass() -> None:
    collection = Collection([job(i) for i in range(100)])
    _pages, report = read(collection, max_pages=5)
    assert report.pages == 5
    assert not report.finished
    assert "stopped after 5 pages" in report.problems[0]


def test_429_halves_concurrency_then_it_recovers() -> None:
    throttle = Throttle(4)
    throttle.observe(0)
    assert throttle.limit == 4
    throttle.observe(1)
    assert throttle.limit == 2
    throttle.observe(3)
    assert throttle.limit == 1
    throttle.observe(3)
    throttle.observe(3)
    assert throttle.limit == 2  # regained after 2 x limit calm pages
    for _ in range(4):
        throttle.observe(3)
    assert throttle.limit == 3


def test_429_storm_is_survived_and_everything_read() -> None:
    collection = Collection([job(i) for i in range(80)])
    seen: dict[str, int] = {}
    lock = threading.Lock()

    def handler(request: httpx.Request) -> httpx.Response:
        offset = request.url.params["offset"]
        with lock:
            seen[offset] = seen.get(offset, 0) + 1
            first_time = seen[offset] == 1
        if first_time and offset != "0":
            body = {"errors": [{"type": "transport", "code": 429, "retryAfter": 0}]}
            return httpx.Response(429, json=body)
        return collection(request)

    pages, report = read(handler)
    assert report.consistent
    assert len(uids(pages)) == 80
    assert all(n == 2 for offset, n in seen.items() if offset != "0")


# -- logouts -------------------------------------------------------------------------------

REVOKED = {"errors": [{"message": "The access token is invalid or was revoked.",
                       "type": "security", "code": 401}]}  # fmt: skip


class Sessions:
    """A console whose sessions answer ``uses`` requests each, one session at a time: every
    login or refresh ends the session before it, as another application's login would."""

    def __init__(self, collection: Collection, uses: int) -> None:
        self.collection = collection
        self.uses = uses
        self.lock = threading.Lock()
        self.current: str | None = None
        self.left = 0
        self.issued = 0
        self.needless = 0  # renewals while the session still had requests left

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v3/token":
            with self.lock:
                self.needless += self.left > 0
                self.issued += 1
                self.current, self.left = f"access-{self.issued}", self.uses
                pair = {"access_token": self.current, "refresh_token": f"refresh-{self.issued}"}
            return httpx.Response(200, json={**pair, "token_type": "bearer", "expires_in": 3600})
        time.sleep(0.002)  # on the wire: lets the four threads overlap
        bearer = request.headers["Authorization"].removeprefix("Bearer ")
        with self.lock:
            if bearer != self.current or self.left == 0:
                return httpx.Response(401, json=REVOKED)
            self.left -= 1
        return self.collection(request)


def password_client(handler: Any) -> VspcClient:
    return client_for(handler, auth=PasswordAuth("etl", "pw"))


@pytest.mark.parametrize("uses", [1, 2, 3])
def test_sessions_ending_every_few_requests_are_renewed_once_per_ended_session(
    uses: int,
) -> None:
    collection = Collection([job(i) for i in range(200)])
    console = Sessions(collection, uses)
    client = password_client(console)
    report = PassReport()

    pages = list(iter_pages(client, JOBS, page_size=10, report=report, concurrency=4))

    assert report.consistent
    assert uids(pages) == sorted(job(i)["instanceUid"] for i in range(200))
    assert sorted(page.offset for page in pages) == list(range(0, 210, 10))
    assert sorted(collection.asked) == list(range(0, 210, 10))  # each page served once
    # Threads refused with the same token share one renewal: none ends a live session, so
    # every session but the last served all its requests.
    assert console.needless == 0
    assert (console.issued - 1) * uses <= len(collection.asked) <= console.issued * uses


def test_a_logout_halves_the_pages_in_flight(caplog: pytest.LogCaptureFixture) -> None:
    collection = Collection([job(i) for i in range(100)])
    refusals = {"30": 2}  # the page at offset 30: its first send and the one after renewal
    lock = threading.Lock()
    issued = iter(range(1, 100))

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v3/token":
            n = next(issued)
            body = {"access_token": f"a{n}", "refresh_token": f"r{n}", "expires_in": 3600}
            return httpx.Response(200, json=body)
        with lock:
            left = refusals.get(request.url.params["offset"], 0)
            refusals[request.url.params["offset"]] = max(0, left - 1)
        return httpx.Response(401, json=REVOKED) if left else collection(request)

    client = password_client(handler)
    report = PassReport()
    with caplog.at_level(logging.INFO, logger="etl.extract.pager"):
        pages = list(iter_pages(client, JOBS, page_size=10, report=report, concurrency=4))

    assert report.consistent
    assert len(uids(pages)) == 100
    assert client.stats.logouts == 1
    assert client.stats.by_outcome["429"] == 0
    assert [r.getMessage() for r in caplog.records] == [
        "the console throttles us (429) or ends our session (401): 2 page(s) in flight now"
    ]
