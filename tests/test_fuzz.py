"""Fuzzing the whole run with hypothesis: random records and random page sequences go through
``run_once`` (a MockTransport console, the real PostgreSQL) and must come out right.

Records (valid, near-valid, hostile): each one is either loaded exactly (``raw`` equal to what
was sent, every column as the contract maps it) or rejected with a reason, never both, never
lost. Pages (duplicates, skips, re-served offsets, wrong counts, shrinking, growing or absurd
totals, short and empty pages): the run ends after a bounded number of requests, and an extract
it calls complete is really complete: a job the console no longer has is deleted then, and no
job it still has ever is.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, text
from sqlalchemy.engine import URL

from etl.pipeline import JOBS_PATH, RunResult, run_once
from etl.transform import FIELDS, MAX_DEPTH, Field, jsonb_safe
from tests.conftest import make_settings, no_sleep
from tests.test_pipeline import COLUMNS, expected_row
from tests.warehouse import assert_sound

SEED = json.loads((Path(__file__).parent / "data" / "seed_response.json").read_text())["data"][0]
# CI runs a fixed, derandomized sample; VSPC_FUZZ_EXAMPLES=5000 (bench/fuzz.sh) hunts longer.
LONG_RUN = int(os.environ.get("VSPC_FUZZ_EXAMPLES", "0"))
FUZZ = settings(
    max_examples=LONG_RUN or 40,
    deadline=None,
    derandomize=not LONG_RUN,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
ABSENT = object()


class Deep:
    """A value nested ``depth`` arrays deep, written into the body without recursion."""

    def __init__(self, depth: int) -> None:
        self.depth = depth

    def value(self) -> Any:
        nested: Any = []
        for _ in range(self.depth - 1):
            nested = [nested]
        return nested


# -- values -----------------------------------------------------------------------------------


def timestamps(offsets: list[str]) -> st.SearchStrategy[str]:
    def shape(dt: datetime, digits: int, offset: str) -> str:
        fraction = f".{dt.microsecond:06d}{dt.microsecond % 10}"[: digits + 1] if digits else ""
        return (
            f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt.hour:02d}:{dt.minute:02d}:"
            f"{dt.second:02d}{fraction}{offset}"
        )

    return st.builds(
        shape,
        st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
        st.integers(0, 7),
        st.sampled_from(offsets),
    )


def cases(word: str) -> st.SearchStrategy[str]:
    return st.sampled_from([word, word.lower(), word.upper(), word.swapcase()])


def valid(field: Field) -> st.SearchStrategy[Any]:
    spellings = list((field.spellings or {}).values())
    return {
        "uuid": st.uuids().map(str) | st.uuids().map(lambda u: str(u).upper()),
        "text": st.text(max_size=40),
        "enum": st.sampled_from(spellings).flatmap(cases) | st.text(min_size=1, max_size=12),
        "enum_list": st.lists(st.sampled_from(spellings).flatmap(cases), max_size=4),
        "int32": st.integers(-(2**31), 2**31 - 1) | st.integers(-1000, 1000).map(float),
        "int64": st.integers(-(2**63), 2**63 - 1),
        "bool": st.booleans(),
        "timestamp": timestamps(["Z", "+00:00", "+03:00", "-07:30", "+14:00", "-12:00", ""]),
    }[field.kind]


def near(field: Field) -> st.SearchStrategy[Any]:
    """Plausible mistakes: most are rejected, a few (unknown enum values) load as received."""
    return {
        "uuid": st.sampled_from(["{6a1f1f1f-1111-4111-8111-111111111111}", "6a1f" * 8, "", 7]),
        "text": st.sampled_from([12, True, ["a"], {"a": 1}]),
        "enum": st.sampled_from(["", "Succes", 3, ["Success"]]),
        "enum_list": st.sampled_from(["AtLock", [1], [None], {"a": "AtLock"}]),
        "int32": st.sampled_from([2**31, -(2**31) - 1, 1.5, "613", math.inf]),
        "int64": st.sampled_from([2**63, -(2**63) - 1, 2.0**60 + 1.0 * 2**10, "1"]),
        "bool": st.sampled_from([0, 1, "true", "False"]),
        "timestamp": st.sampled_from(
            [
                "2021-02-30T00:00:00Z",
                "2021-01-01 00:00:00Z",
                "2021-01-01T00:00:00+24:00",
                "0001-01-01T00:00:00+14:00",  # before .NET's first instant once made UTC
                "9999-12-31T23:59:59.9999999-14:00",  # after its last
                "yesterday",
                "",
            ]
        ),
    }[field.kind]


hostile = st.one_of(
    st.integers(50_000, 300_000).map(lambda n: "Ω" * n),  # huge
    st.text(max_size=5).map(lambda s: s + "\x00"),  # NUL
    st.sampled_from(["\ud800", "a\udfffb", "\udc00\ud800"]),  # lone surrogates
    st.integers(2**63, 2**200) | st.integers(-(2**200), -(2**63) - 1),  # beyond int64
    st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -0.0, 5e-324]),
    st.integers(2, MAX_DEPTH + 100).map(Deep),  # deep nesting, either side of the limit
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=5),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
        max_leaves=8,
    ),
)


@st.composite
def records(draw: st.DrawFn, index: int) -> Any:
    if draw(st.integers(0, 30)) == 0:  # the item is not even an object
        return draw(st.sampled_from([None, 5, "job", ["a"]]))
    record: dict[str, Any] = {"instanceUid": str(uuid.UUID(int=index + 1)), "status": "Success"}
    for field in FIELDS[1:]:
        value = draw(st.sampled_from(["valid", "valid", "valid", "null", "absent"]))
        if value == "valid":
            record[field.api] = draw(valid(field))
        elif value == "null":
            record[field.api] = None
    for field in draw(st.lists(st.sampled_from(FIELDS), max_size=2, unique_by=lambda f: f.api)):
        kind = draw(st.sampled_from(["near", "hostile", "case"]))
        if kind == "near":
            record[field.api] = draw(near(field))
        elif kind == "hostile":
            record[field.api] = draw(hostile)
        elif field.api == "instanceUid":
            record["instanceUid"] = record["instanceUid"].upper()
    uid = record["instanceUid"]
    if isinstance(uid, str) and uid.lower() != str(uuid.UUID(int=index + 1)):
        # Two records claiming one uid are one job served twice (the page fuzzing's subject,
        # where the last copy wins): keep each bad uid distinct, hostile content and all.
        record["instanceUid"] = f"{uid}#{index}"
    if draw(st.booleans()):
        record[draw(st.sampled_from(["futureField", "x", ""]))] = draw(hostile)
    return record


# -- the console ------------------------------------------------------------------------------


def to_json(value: Any) -> str:
    """JSON as a hostile console may send it: NaN, lone surrogates escaped, any depth."""
    deep: list[Deep] = []

    def mark(obj: Any) -> Any:
        if isinstance(obj, Deep):
            deep.append(obj)
            return f"\x01DEEP{len(deep) - 1}\x01"
        raise TypeError(type(obj).__name__)

    body = json.dumps(value, default=mark, ensure_ascii=True)
    for number, item in enumerate(deep):
        body = body.replace(f'"\\u0001DEEP{number}\\u0001"', "[" * item.depth + "]" * item.depth, 1)
    return body


def numbers_as_decimals(value: Any) -> Any:
    """JSON equality: 1e+308 sent, 1000...0 (the same number) read back from jsonb."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return Decimal(repr(value))
    if isinstance(value, dict):
        return {k: numbers_as_decimals(v) for k, v in value.items()}
    return [numbers_as_decimals(v) for v in value]


def resolved(value: Any) -> Any:
    """``value`` with its Deep placeholders made real (as the console's body decodes)."""
    if isinstance(value, Deep):
        return value.value()
    if isinstance(value, dict):
        return {k: resolved(v) for k, v in value.items()}
    if isinstance(value, list):
        return [resolved(v) for v in value]
    return value


def envelope(items: list[Any], total: int, offset: int | None, count: int | None) -> str:
    paging: dict[str, Any] = {"total": total}
    if offset is not None:
        paging["offset"] = offset
    if count is not None:
        paging["count"] = count
    return (
        '{"meta":{"pagingInfo":'
        + json.dumps(paging)
        + '},"data":['
        + ",".join(to_json(item) for item in items)
        + '],"errors":null}'
    )


def console(pages: Any) -> tuple[httpx.Client, list[int]]:
    """A console whose jobs answer is ``pages(offset, limit)``; every other collection empty."""
    asked: list[int] = []

    def handle(request: httpx.Request) -> httpx.Response:
        params = request.url.params
        if request.url.path != JOBS_PATH:
            return httpx.Response(200, text=envelope([], 0, int(params["offset"]), 0))
        offset, limit = int(params["offset"]), int(params["limit"])
        asked.append(offset)
        if len(asked) > 200:  # a pager that does not stop fails the run instead of the suite
            return httpx.Response(400, json={"errors": [{"message": "unbounded", "type": "x"}]})
        return httpx.Response(200, text=pages(offset, limit))

    transport = httpx.MockTransport(handle)
    return httpx.Client(transport=transport, base_url="https://fuzz.example"), asked


def fuzz_settings(database_url: URL, **env: Any) -> Any:
    return make_settings(
        database_url,
        None,
        VSPC_URL="https://fuzz.example",
        VSPC_API_KEY="fuzz-key-123",
        VSPC_SOURCE="fuzz",
        **env,
    )


def empty(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "TRUNCATE vspc.backup_agent_jobs, vspc.backup_agent_job_snapshots, "
                "vspc.etl_runs, vspc.etl_rejects, vspc.etl_job_fingerprints "
                "RESTART IDENTITY CASCADE"
            )
        )


def run(engine: Engine, database_url: URL, pages: Any, **env: Any) -> tuple[RunResult, list[int]]:
    http, asked = console(pages)
    with http:
        result = run_once(
            fuzz_settings(database_url, **env), engine=engine, http=http, sleep=no_sleep
        )
    return result, asked


# -- records ----------------------------------------------------------------------------------


def exact(record: dict[str, Any]) -> dict[str, Any]:
    """The typed columns the contract promises for ``record`` (naive timestamps are UTC)."""
    row = expected_row(record)
    return {
        k: v.replace(tzinfo=UTC) if isinstance(v, datetime) and v.tzinfo is None else v
        for k, v in row.items()
    }


def seed(i: int = 0, **changes: Any) -> dict[str, Any]:
    return {**SEED, "instanceUid": str(uuid.UUID(int=i + 1)), **changes}


# Cases the fuzzing found, kept (each failed before its fix; see CHANGELOG.md).
@example(items=(seed(futureField=2**64), seed(1, status=None, futureField=-(2**70))))  # orjson
@example(items=(None, None))  # two equal records without a uid were one reject
@example(items=(seed(lastModifiedDate="9999-12-31T23:59:59.9999999-14:00"),))  # year 10000 UTC
@example(items=(seed(lastRun="2000-01-01T00:00:00Z", lastEndTime="2068-02-01T00:00:00Z"),))
@example(items=(seed(x=Deep(1000)), seed(1, x=Deep(MAX_DEPTH - 1))))  # json.dumps recursed
@example(items=(seed(instanceUid="Ω" * 3000), seed(1)))  # btree index row size
@FUZZ
@given(st.integers(1, 6).flatmap(lambda n: st.tuples(*(records(i) for i in range(n)))))
def test_every_record_is_loaded_exactly_or_rejected_with_a_reason(
    engine: Engine, database_url: URL, items: tuple[Any, ...]
) -> None:
    empty(engine)

    def honest(offset: int, limit: int) -> str:
        page = list(items[offset : offset + limit])
        return envelope(page, len(items), offset, len(page))

    result, _ = run(engine, database_url, honest)
    assert result.status == "success", result.error
    assert result.complete
    with engine.connect() as conn:
        loaded = {
            str(r["instance_uid"]): dict(r)
            for r in conn.execute(
                text(f"SELECT {', '.join(COLUMNS)}, raw FROM vspc.backup_agent_jobs")
            ).mappings()
        }
        rejects = [
            (uid, reason, raw)
            for uid, reason, raw in conn.execute(
                text("SELECT instance_uid, reason, raw FROM vspc.etl_rejects ORDER BY reject_id")
            )
        ]
    assert len(loaded) + len(rejects) == len(items)
    unmatched = list(rejects)
    for item in items:
        record = resolved(item)
        uid = record.get("instanceUid") if isinstance(record, dict) else None
        row = loaded.get(uid.lower()) if isinstance(uid, str) else None
        if row is not None:
            assert numbers_as_decimals(row.pop("raw")) == numbers_as_decimals(record)
            assert row == exact(record)
            continue
        kept = numbers_as_decimals(jsonb_safe(record, max_depth=MAX_DEPTH))
        match = next((r for r in unmatched if numbers_as_decimals(r[2]) == kept), None)
        assert match is not None, f"record neither loaded nor rejected: {str(record)[:200]}"
        unmatched.remove(match)
        reason = match[1]
        assert reason and "\n" not in reason and "\x00" not in reason
    assert unmatched == []
    assert_sound(engine)


def test_nesting_beyond_the_decoder_fails_the_run_cleanly(
    engine: Engine, database_url: URL
) -> None:
    """Deeper than Python's JSON decoder goes: one readable sentence, no traceback, no retry."""
    empty(engine)
    record = {"instanceUid": str(uuid.UUID(int=1)), "status": "Success", "x": Deep(5000)}
    result, asked = run(engine, database_url, lambda offset, _: envelope([record], 1, offset, 1))
    assert result.status == "failed"
    assert result.error == (
        f"The VSPC console answered {JOBS_PATH} with JSON nested too deeply to decode "
        "(more than about 1,000 levels)."
    )
    assert asked == [0]


# -- pages ------------------------------------------------------------------------------------

BEHAVIOURS = [
    "ok", "dup", "skip", "reserve", "echo_wrong", "echo_none", "count_wrong",
    "total_up", "total_down", "total_huge", "total_zero", "short", "empty",
]  # fmt: skip
LIMIT = 5


def job(i: int) -> dict[str, Any]:
    return {**SEED, "instanceUid": str(uuid.UUID(int=i + 1)), "name": f"job {i}"}


def adversary(truth: list[dict[str, Any]], script: dict[tuple[int, int], str]) -> Any:
    """Answers the ``n``-th request for an offset as ``script[(offset, n)]`` says (else ok)."""
    seen: dict[int, int] = {}
    n = len(truth)

    def pages(offset: int, limit: int) -> str:
        nth = seen[offset] = seen.get(offset, -1) + 1
        how = script.get((offset, nth), "ok")
        items, total, echo = truth[offset : offset + limit], n, offset
        count: int | None = len(items)
        if how == "dup" and offset > 0:  # as if a job was inserted before this page
            items = truth[offset - 1 : offset - 1 + limit]
        elif how == "skip":  # as if a job before this page was deleted
            items = truth[offset + 1 : offset + 1 + limit]
        elif how == "reserve":  # a server that ignores offset
            items, echo = truth[:limit], 0
        elif how == "echo_wrong":
            echo = offset + 1
        elif how == "echo_none":
            echo = None
        elif how == "count_wrong":
            count = len(items) + 1
        elif how == "total_up":
            total = n + 1
        elif how == "total_down":
            total = max(0, n - 1)
        elif how == "total_huge":
            total = 2**31 - 1
        elif how == "total_zero":
            total = 0
        elif how == "short":
            items = items[:-1]
        elif how == "empty":
            items = []
        if how not in ("count_wrong",):
            count = len(items) if count is not None else None
        return envelope(items, total, echo, count)

    return pages


@example(n=5, concurrency=4, script={(0, 0): "total_huge"})  # paged on to 2**31 - 1
@example(n=6, concurrency=1, script={(0, 0): "total_down"})  # stale total: job 6 deleted
@example(n=10, concurrency=4, script={(0, 0): "total_down"})
@FUZZ
@given(
    n=st.integers(0, 17),
    concurrency=st.sampled_from([1, 4]),
    script=st.dictionaries(
        st.tuples(st.integers(0, 4).map(lambda p: p * LIMIT), st.integers(0, 2)),
        st.sampled_from(BEHAVIOURS),
        max_size=6,
    ),
)
def test_any_page_sequence_ends_and_complete_means_complete(
    engine: Engine,
    database_url: URL,
    n: int,
    concurrency: int,
    script: dict[tuple[int, int], str],
) -> None:
    truth = [job(i) for i in range(n)]
    vanished = job(999)  # in the warehouse, no longer on the console
    empty(engine)
    everything = sorted([*truth, vanished], key=lambda j: j["instanceUid"])
    first, _ = run(engine, database_url, adversary(everything, {}), VSPC_PAGE_SIZE=LIMIT)
    assert first.status == "success" and first.complete

    env = {"VSPC_PAGE_SIZE": LIMIT, "VSPC_CONCURRENCY": concurrency, "VSPC_MAX_DELETE_RATIO": 1}
    result, asked = run(engine, database_url, adversary(truth, script), **env)

    passes = 3  # VSPC_MAX_PASSES
    assert len(asked) <= passes * (n // LIMIT + 2 + concurrency), asked  # never loops on
    assert result.status == "success", result.error
    with engine.connect() as conn:
        live = set(
            conn.execute(
                text(
                    "SELECT instance_uid::text FROM vspc.backup_agent_jobs WHERE deleted_at IS NULL"
                )
            ).scalars()
        )
    expected = {j["instanceUid"] for j in truth}
    # complete: exactly the console's jobs remain; incomplete: nothing was deleted
    assert live == (expected if result.complete else expected | {vanished["instanceUid"]})
    if not script or set(script.values()) <= {"ok", "echo_none"}:
        assert result.complete  # an honest console is always read completely
    assert_sound(engine)
