"""iter_pages against fake collections, honest and adversarial (httpx.MockTransport)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from etl.errors import ProtocolError
from etl.extract import (
    ApiKeyAuth,
    PassReport,
    PasswordAuth,
    RetryPolicy,
    VspcClient,
    iter_pages,
)

BASE = "https://vspc.example.com:1280"
JOBS = "/api/v3/infrastructure/backupAgents/windows/jobs"
SORT = '[{"property":"instanceUid","direction":"ascending"}]'


def job(i: int) -> dict[str, Any]:
    return {
        "instanceUid": f"{i:08d}-15f5-bf02-604d-20862fbafece",
        "status": "success",
        "backedUpSize": 12550788 * i,
        "futureField": {"nested": [i, None]},  # unknown fields must come through untouched
    }


class Collection:
    """A console serving ``jobs`` honestly; the hooks let a test make it lie."""

    def __init__(self, jobs: list[dict[str, Any]]) -> None:
        self.jobs = jobs
        self.asked: list[int] = []
        self.requests: list[httpx.Request] = []
        self.total: Callable[[int], int] = lambda offset: len(self.jobs)
        self.echo: Callable[[int], int | None] = lambda offset: offset
        self.count: Callable[[list[Any]], int] = len
        self.max_page_size = 10_000

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        limit = min(int(request.url.params["limit"]), self.max_page_size)
        offset = int(request.url.params["offset"])
        self.asked.append(offset)
        data = self.jobs[offset : offset + limit]
        paging: dict[str, Any] = {"total": self.total(offset), "count": self.count(data)}
        echoed = self.echo(offset)
        if echoed is not None:
            paging["offset"] = echoed
        return httpx.Response(200, json={"meta": {"pagingInfo": paging}, "data": data})


def client_for(handler: Callable[[httpx.Request], httpx.Response], **kwargs: Any) -> VspcClient:
    http = httpx.Client(transport=httpx.MockTransport(handler), base_url=BASE)
    kwargs.setdefault("auth", ApiKeyAuth("key-SECRET"))
    return VspcClient(http, retry=RetryPolicy(jitter=0.0), sleep=lambda seconds: None, **kwargs)


def read_pass(collection: Collection, page_size: int = 500, **kwargs: Any):
    report = PassReport()
    pages = list(
        iter_pages(client_for(collection), JOBS, page_size=page_size, report=report, **kwargs)
    )
    return pages, report


# -- stop rules ----------------------------------------------------------------------------


def test_short_last_page_ends_a_consistent_pass():
    jobs = [job(i) for i in range(1200)]
    collection = Collection(jobs)

    pages, report = read_pass(collection)

    assert collection.asked == [0, 500, 1000]
    assert [(p.offset, len(p.items), p.total) for p in pages] == [
        (0, 500, 1200),
        (500, 500, 1200),
        (1000, 200, 1200),
    ]
    assert [item for p in pages for item in p.items] == jobs
    assert report == PassReport(pages=3, items=1200, totals=[1200] * 3, finished=True)
    assert report.consistent


def test_reaching_the_total_on_a_full_page_asks_for_the_empty_page_after_it():
    # A stale total on a full page used to end the pass there; a job inserted before
    # it pushed the last job past the total, and the "complete" extract deleted that job.
    collection = Collection([job(i) for i in range(1000)])

    _pages, report = read_pass(collection)

    assert collection.asked == [0, 500, 1000]
    assert report.finished and report.consistent


def test_empty_collection_is_one_empty_page():
    collection = Collection([])

    pages, report = read_pass(collection)

    assert collection.asked == [0]
    assert [(p.offset, p.items, p.total) for p in pages] == [(0, [], 0)]
    assert report == PassReport(pages=1, items=0, totals=[0], finished=True)
    assert report.consistent


def test_query_has_limit_offset_and_compact_sort_plus_caller_params():
    collection = Collection([job(i) for i in range(3)])
    caller = {"filter": '[{"property":"status","operation":"equals","value":"Failed"}]',
              "sort": "ignored: the pass always sorts by instanceUid"}  # fmt: skip

    read_pass(collection, page_size=2, params=caller)

    first, second = collection.requests
    assert parse_qs(first.url.query.decode()) == {
        "filter": [caller["filter"]],
        "limit": ["2"],
        "offset": ["0"],
        "sort": [SORT],
    }
    encoded = b"%5B%7B%22property%22%3A%22instanceUid%22%2C%22direction%22%3A%22ascending%22%7D%5D"
    assert b"sort=" + encoded in first.url.query
    assert second.url.params["offset"] == "2"


def test_empty_page_before_the_reported_total_stops_with_a_problem():
    collection = Collection([job(i) for i in range(500)])
    collection.total = lambda offset: 1000

    _pages, report = read_pass(collection)

    assert collection.asked == [0, 500]
    assert report.finished
    assert report.problems == [
        "the console served 0 items at offset 500 when asked for 500, but reported a total of 1000"
    ]
    assert not report.consistent


def test_page_size_above_the_server_maximum_is_reported():
    # The console caps limit at its MaxPageSize: the "short" page is not the end.
    collection = Collection([job(i) for i in range(1200)])
    collection.max_page_size = 500

    _pages, report = read_pass(collection, page_size=1000)

    assert collection.asked == [0]
    assert report.finished
    assert report.problems == [
        "the console served 500 items at offset 0 when asked for 1000, but reported a total of 1200"
    ]
    assert not report.consistent


# -- what the console gets wrong -----------------------------------------------------------


def test_total_of_zero_with_data_is_unreliable_and_paging_stops_on_short_page():
    collection = Collection([job(i) for i in range(1200)])
    collection.total = lambda offset: 0

    _pages, report = read_pass(collection)

    assert collection.asked == [0, 500, 1000]
    assert report.items == 1200
    assert report.totals == [0, 0, 0]
    assert report.finished
    assert report.problems == [
        "the console reported a total of 0 while serving items (total unreliable)"
    ]
    assert not report.consistent


def test_total_of_zero_on_full_pages_stops_on_the_empty_page():
    collection = Collection([job(i) for i in range(1000)])
    collection.total = lambda offset: 0

    pages, report = read_pass(collection)

    assert collection.asked == [0, 500, 1000]
    assert [len(p.items) for p in pages] == [500, 500, 0]
    assert report.finished


def test_reserved_page_is_a_problem_and_ends_the_pass():
    collection = Collection([job(i) for i in range(1200)])
    collection.echo = lambda offset: 0  # ignores offset, re-serves page one

    pages, report = read_pass(collection)

    assert collection.asked == [0, 500]
    assert [p.offset for p in pages] == [0]
    assert report.pages == 1 and report.items == 500
    assert report.problems == ["the console re-served offset 0 when asked for offset 500"]
    assert not report.finished
    assert not report.consistent


def test_missing_offset_echo_is_not_a_problem():
    collection = Collection([job(i) for i in range(700)])
    collection.echo = lambda offset: None

    _pages, report = read_pass(collection)

    assert collection.asked == [0, 500]
    assert report.consistent


def test_changing_total_is_recorded_and_paging_goes_on():
    collection = Collection([job(i) for i in range(1003)])
    collection.total = lambda offset: 1000 if offset == 0 else 1003

    _pages, report = read_pass(collection)

    assert collection.asked == [0, 500, 1000]
    assert report.totals == [1000, 1003, 1003]
    assert report.items == 1003
    assert report.finished
    assert report.problems == [
        "the collection changed while paging: total was 1000 on the first page and 1003 on the last"
    ]
    assert not report.consistent


def test_count_differing_from_the_data_is_recorded():
    collection = Collection([job(i) for i in range(3)])
    collection.count = lambda data: 7

    _pages, report = read_pass(collection)

    assert report.problems == ["the console reported count 7 for 3 items at offset 0"]
    assert report.finished and not report.consistent


def test_max_pages_stops_an_endless_collection():
    def endless(request: httpx.Request) -> httpx.Response:
        offset, limit = int(request.url.params["offset"]), int(request.url.params["limit"])
        data = [job(offset + i) for i in range(limit)]
        return httpx.Response(
            200, json={"meta": {"pagingInfo": {"total": 0, "offset": offset}}, "data": data}
        )

    report = PassReport()
    pages = list(iter_pages(client_for(endless), JOBS, page_size=10, report=report, max_pages=5))

    assert [p.offset for p in pages] == [0, 10, 20, 30, 40]
    assert report.pages == 5
    assert not report.finished
    assert report.problems == [
        "the console reported a total of 0 while serving items (total unreliable)",
        f"stopped after 5 pages (max_pages) before the end of {JOBS}",
    ]


def paging(**info: Any) -> dict[str, Any]:
    return {"meta": {"pagingInfo": info}}


@pytest.mark.parametrize(
    ("body", "what"),
    [
        pytest.param([], "a JSON list", id="list"),
        pytest.param(paging(total=1), "no data list", id="no-data"),
        pytest.param({**paging(total=1), "data": {"a": 1}}, "no data list", id="data-object"),
        pytest.param({"data": []}, "no meta.pagingInfo", id="no-meta"),
        pytest.param({"data": [], "meta": {}}, "no meta.pagingInfo", id="no-paginginfo"),
        pytest.param({"data": [], "meta": {"pagingInfo": []}}, "no meta.pagingInfo", id="pi-list"),
        pytest.param({**paging(), "data": []}, "meta.pagingInfo.total = None", id="no-total"),
        pytest.param({**paging(total="12"), "data": []}, "meta.pagingInfo.total = '12'", id="str"),
        pytest.param({**paging(total=1.5), "data": []}, "meta.pagingInfo.total = 1.5", id="float"),
        pytest.param({**paging(total=True), "data": []}, "meta.pagingInfo.total = True", id="bool"),
        pytest.param({**paging(total=-1), "data": []}, "meta.pagingInfo.total = -1", id="neg"),
        pytest.param(
            {**paging(total=1, offset="500"), "data": []},
            "meta.pagingInfo.offset = '500'",
            id="offset-str",
        ),
        pytest.param(
            {**paging(total=1, count=None, offset=500), "data": []},
            None,
            id="null-count-is-fine",
        ),
    ],
)
def test_malformed_envelope_is_a_protocol_error_naming_path_and_offset(body, what):
    first = {**paging(total=1000, count=500, offset=0), "data": [job(i) for i in range(500)]}
    answers = iter([first, body])

    def console(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=next(answers))

    report = PassReport()
    pages = iter_pages(client_for(console), JOBS, page_size=500, report=report)
    assert next(pages).offset == 0

    if what is None:
        assert next(pages).items == []
        return
    with pytest.raises(ProtocolError) as caught:
        next(pages)
    assert str(caught.value) == (
        f"The VSPC console answered {JOBS} at offset 500 with {what}, "
        "not the documented {meta: {pagingInfo}, data: [...]} envelope."
    )
    assert report.pages == 1


def test_page_size_must_be_positive():
    with pytest.raises(ValueError, match="page_size must be at least 1"):
        next(iter_pages(client_for(Collection([])), JOBS, page_size=0, report=PassReport()))


# -- interruptions mid-paging --------------------------------------------------------------


def test_401_mid_paging_renews_the_token_and_retries_that_page_once():
    collection = Collection([job(i) for i in range(1200)])
    issued = iter(range(1, 10))
    trace: list[str] = []

    def console(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v3/token":
            grant = parse_qs(request.content.decode())["grant_type"][0]
            n = next(issued)
            trace.append(f"token {grant}")
            return httpx.Response(
                200,
                json={"access_token": f"a{n}", "refresh_token": f"r{n}", "expires_in": 3600},
            )
        bearer = request.headers["Authorization"]
        trace.append(f"{request.url.params['offset']} {bearer}")
        # Another application logs in with the same account while we read offset 500.
        if request.url.params["offset"] == "500" and bearer == "Bearer a1":
            return httpx.Response(401, json={"errors": [{"type": "security", "code": 401}]})
        return collection(request)

    report = PassReport()
    client = client_for(console, auth=PasswordAuth("etl", "pw-SECRET"))
    pages = list(iter_pages(client, JOBS, page_size=500, report=report))

    assert trace == [
        "token password",
        "0 Bearer a1",
        "500 Bearer a1",
        "token refresh_token",
        "500 Bearer a2",
        "1000 Bearer a2",
    ]
    assert [p.offset for p in pages] == [0, 500, 1000]
    assert report.consistent


def test_transient_failure_mid_paging_is_retried_transparently():
    collection = Collection([job(i) for i in range(1200)])
    failures = iter([httpx.Response(520)])

    def flaky(request: httpx.Request) -> httpx.Response:
        if request.url.params["offset"] == "500":
            failure = next(failures, None)
            if failure is not None:
                return failure
        return collection(request)

    sleeps: list[float] = []
    http = httpx.Client(transport=httpx.MockTransport(flaky), base_url=BASE)
    client = VspcClient(
        http, ApiKeyAuth("key-SECRET"), retry=RetryPolicy(jitter=0.0), sleep=sleeps.append
    )
    report = PassReport()
    pages = list(iter_pages(client, JOBS, page_size=500, report=report))

    assert collection.asked == [0, 500, 1000]
    assert sum(len(p.items) for p in pages) == 1200
    assert sleeps == [0.5]
    assert report.consistent


# -- adversarial servers -------------------------------------------------------------------

# One scripted answer: how many items, what total, which offset is echoed, what count.
answers = st.tuples(
    st.integers(min_value=0, max_value=12),
    st.sampled_from([0, 1, 5, 9, 10, 11, 50, 2**31 - 1]),
    st.sampled_from(["asked", "zero", "ahead", "behind", "absent"]),
    st.sampled_from(["right", "wrong", "absent"]),
)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(script=st.lists(answers, min_size=1, max_size=8))
def test_any_server_behaviour_ends_the_pass(script):
    limit, max_pages = 5, 20
    asked: list[int] = []

    def adversary(request: httpx.Request) -> httpx.Response:
        offset = int(request.url.params["offset"])
        asked.append(offset)
        n, total, echo, count = script[(len(asked) - 1) % len(script)]
        info: dict[str, Any] = {"total": total}
        echoed = {"asked": offset, "zero": 0, "ahead": offset + limit, "behind": offset - 1}
        if echo in echoed and echoed[echo] >= 0:
            info["offset"] = echoed[echo]
        if count != "absent":
            info["count"] = n if count == "right" else n + 1
        data = [job(offset + i) for i in range(n)]
        return httpx.Response(200, json={"meta": {"pagingInfo": info}, "data": data})

    report = PassReport()
    pages = list(
        iter_pages(client_for(adversary), JOBS, page_size=limit, report=report, max_pages=max_pages)
    )

    assert len(asked) <= max_pages
    assert asked == sorted(set(asked))  # the offset only ever moves forward
    assert report.pages == len(pages) <= max_pages
    assert report.items == sum(len(p.items) for p in pages)
    assert report.finished or report.problems  # an abnormal end always says why
    assert not report.consistent or (report.finished and len(set(report.totals)) <= 1)
