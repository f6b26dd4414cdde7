"""The job COPY left open across pages: one COPY for consecutive pages, ended before anything
else runs on the connection, abandoned cleanly after a failure."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, text

from etl.load.stage import Stage, StagedReject, distinct_keys
from etl.simulator import Simulator
from etl.transform import transform_with_raw


@pytest.fixture
def copies(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The COPY statements started on any psycopg cursor, in order."""
    started: list[str] = []
    real = psycopg.Cursor.copy

    @contextmanager
    def counting(self: psycopg.Cursor[Any], statement: Any, *args: Any, **kw: Any) -> Iterator[Any]:
        started.append(str(statement).split(" (")[0])
        with real(self, statement, *args, **kw) as copy:
            yield copy

    monkeypatch.setattr(psycopg.Cursor, "copy", counting)
    return started


def pages(simulator: Simulator, size: int) -> list[tuple[list[Any], list[str], list[None]]]:
    out = []
    jobs = simulator.jobs("windows")  # each row ends with its system_type
    for start in range(0, len(jobs), size):
        made = [transform_with_raw(record) for record in jobs[start : start + size]]
        rows = [(*row, "Windows") for row, _ in made]
        out.append((rows, [raw for _, raw in made], [None] * len(made)))
    return out


def staged(conn: Any) -> list[tuple[int, str]]:
    return [
        (int(seq), str(uid))
        for seq, uid in conn.execute(text("SELECT seq, instance_uid FROM stage_jobs ORDER BY seq"))
    ]


def test_consecutive_pages_share_one_copy_until_another_statement(
    fresh_db: Engine, simulator: Simulator, copies: list[str]
) -> None:
    first, second, third, *_ = pages(simulator, 10)
    with fresh_db.connect() as conn:
        stage = Stage(conn)
        stage.create()
        stage.add(*first, [])
        stage.add(*second, [])
        assert copies == ["COPY stage_jobs"]
        # a statement of the stage's own ends the COPY first: it sees both pages
        assert stage.distinct_keys() == 20
        stage.add(*third, [])
        assert copies == ["COPY stage_jobs"] * 2
        stage.commit()
        uids = [str(row[0]).lower() for page in (first, second, third) for row in page[0]]
        assert staged(conn) == list(enumerate(uids, start=1))


def test_rejects_end_the_job_copy_first(
    fresh_db: Engine, simulator: Simulator, copies: list[str]
) -> None:
    first, second, *_ = pages(simulator, 10)
    with fresh_db.connect() as conn:
        stage = Stage(conn)
        stage.create()
        stage.add(*first, [StagedReject(None, "a reason", {"instanceUid": None})])
        stage.add(*second, [])
        assert copies == ["COPY stage_jobs", "COPY stage_rejects", "COPY stage_jobs"]
        stage.end_copy()
        stage.end_copy()  # nothing open: nothing to do
        assert [seq for seq, _ in staged(conn)] == [*range(1, 11), *range(12, 22)]
        assert conn.execute(text("SELECT seq FROM stage_rejects")).scalar_one() == 11


def test_a_failure_with_the_copy_open_rolls_back_and_the_connection_goes_on(
    fresh_db: Engine, simulator: Simulator
) -> None:
    first, second, *_ = pages(simulator, 10)
    with fresh_db.connect() as conn:
        stage = Stage(conn)
        stage.create()
        stage.add(*first, [])
        stage.abort_copy(RuntimeError("the console went away"))
        stage.abort_copy(RuntimeError("twice"))  # nothing open any more: nothing to do
        # the COPY went through the driver, which SQLAlchemy does not see (as the pipeline does)
        conn.rollback()
        conn.connection.driver_connection.rollback()  # type: ignore[union-attr]
        assert staged(conn) == []  # the rows of the abandoned COPY are gone
        stage.add(*second, [])
        stage.commit()
        assert [seq for seq, _ in staged(conn)] == list(range(11, 21))


def test_distinct_keys_count_each_job_once_per_pass_and_collection(
    fresh_db: Engine, simulator: Simulator
) -> None:
    """A job staged twice counts once; a reject counts once by its uid in any case, not at
    all if that job is staged too, and once each without a uid; passes and collections are
    counted apart."""
    first, second, third, *_ = pages(simulator, 10)
    staged_uid = str(first[0][0][0])
    other = "9E5A2C4B-0D1F-4A3B-8C7D-6E5F4A3B2C1D"
    rejects = [
        StagedReject(staged_uid.upper(), "bad field", {}),  # the job is staged: no more
        StagedReject("not-a-uuid", "bad uid", {}),
        StagedReject("NOT-A-UUID", "bad uid", {}),  # the same key
        StagedReject(None, "no uid", {}),
        StagedReject(None, "no uid", {}),  # each counts
        StagedReject(other, "bad field", {}),
        StagedReject(other.lower(), "bad field", {}),  # the same job
    ]
    linux_rows = [(*row[:-1], "Linux") for row in third[0]]
    with fresh_db.connect() as conn:
        stage = Stage(conn)
        stage.create()
        stage.add(*first, rejects)
        stage.add(*first, [])  # the same page served twice
        stage.add(linux_rows, third[1], third[2], [], system_type="Linux")
        assert stage.distinct_keys() == 10 + 1 + 2 + 1
        assert stage.distinct_keys("Linux") == 10
        assert stage.distinct_keys("Mac") == 0
        stage.next_pass()
        stage.add(*second, [StagedReject(None, "no uid", {})])
        assert stage.distinct_keys() == 10 + 1
        assert stage.distinct_keys("Linux") == 10  # its own pass is still the first
        # everything staged, every pass and collection: 30 uids, the rejects' 2 uids and 3
        # records without one
        assert distinct_keys(conn) == 30 + 2 + 3
