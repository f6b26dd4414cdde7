"""The unchanged-record fast path: a fingerprint let re-syncs skip the transform, not the truth."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import psycopg
import pytest
from psycopg.pq import TransactionStatus
from sqlalchemy import Engine, text

import etl.load.stage
import etl.pipeline
import etl.simulator.wire
import etl.transform
from etl.errors import RecordRejected
from etl.load.stage import Stage, StagedReject
from etl.simulator import Simulator
from etl.transform import fingerprint, transform_with_raw
from tests.test_pipeline import assert_mirrors, snapshots, sync


@pytest.fixture
def transformed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The instanceUids the pipeline sends through the full transform (the typed path, or the
    general one, which a record the typed path cannot vouch for goes on to), in order."""
    seen: list[str] = []
    general: Callable[..., Any] = etl.transform.transform_with_raw
    typed: Callable[..., Any] = etl.transform.transform_typed

    def counting(record: object, dumped: bytes | None = None, **options: Any) -> Any:
        seen.append(record.get("instanceUid") if isinstance(record, dict) else None)
        return general(record, dumped, **options)

    def counting_typed(values: tuple[Any, ...], text: bytes, *contract: Any) -> Any:
        result = typed(values, text, *contract)  # NotTyped: the general path counts it
        seen.append(values[etl.transform.UID_AT])
        return result

    monkeypatch.setattr(etl.transform, "transform_with_raw", counting)
    monkeypatch.setattr(etl.transform, "transform_typed", counting_typed)
    return seen


def stored(engine: Engine) -> dict[str, bytes]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT instance_uid::text, fingerprint FROM vspc.etl_job_fingerprints")
        ).all()
    return {uid: bytes(fp) for uid, fp in rows}


def job_xmins(engine: Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                text("SELECT instance_uid, xmin::text FROM vspc.backup_agent_jobs ORDER BY 1")
            )
        ]


def test_first_sync_stores_the_fingerprint_of_every_job(
    fresh_db: Engine, settings: Any, simulator: Simulator
) -> None:
    sync(settings, fresh_db)
    expected = {}
    for job in simulator.every_job():
        print_ = fingerprint(job)
        assert print_ is not None
        expected[print_[0]] = print_[1]
    assert stored(fresh_db) == expected
    assert len(expected) == 60


def test_unchanged_resync_transforms_nothing_and_a_change_only_that_job(
    fresh_db: Engine, settings: Any, simulator: Simulator, transformed: list[str]
) -> None:
    sync(settings, fresh_db)
    assert len(transformed) == 60
    transformed.clear()

    again = sync(settings, fresh_db)
    assert transformed == []
    assert (again.seen, again.unchanged, again.inserted, again.updated, again.deleted) == (
        60,
        60,
        0,
        0,
        0,
    )

    uid = sorted(j["instanceUid"] for j in simulator.every_job())[10]
    simulator.mutate(uid, name="renamed on the console")
    versions_before = len(snapshots(fresh_db))
    third = sync(settings, fresh_db)
    assert transformed == [uid]
    assert (third.updated, third.unchanged) == (1, 59)
    assert len(snapshots(fresh_db)) == versions_before + 1
    record = next(j for j in simulator.every_job() if j["instanceUid"] == uid)
    assert stored(fresh_db)[uid] == fingerprint(record)[1]  # type: ignore[index]
    assert_mirrors(fresh_db, simulator)


def test_a_fingerprint_from_another_release_never_matches(
    fresh_db: Engine,
    settings: Any,
    simulator: Simulator,
    transformed: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sync(settings, fresh_db)
    old = stored(fresh_db)
    xmins = job_xmins(fresh_db)
    transformed.clear()
    monkeypatch.setattr(etl.transform, "_FINGERPRINT_KEY", b"vspc-etl 99.0 transform 1")

    upgraded = sync(settings, fresh_db)
    assert len(transformed) == 60  # every job compared in full again
    assert (upgraded.unchanged, upgraded.updated) == (60, 0)
    assert job_xmins(fresh_db) == xmins  # and still nothing rewritten
    new = stored(fresh_db)
    assert set(new) == set(old) and all(new[u] != old[u] for u in new)


def test_emptied_cache_means_a_full_comparison_that_refills_it(
    fresh_db: Engine, settings: Any, simulator: Simulator, transformed: list[str]
) -> None:
    sync(settings, fresh_db)
    full = stored(fresh_db)
    versions = snapshots(fresh_db)
    with fresh_db.begin() as conn:
        conn.execute(text("TRUNCATE vspc.etl_job_fingerprints"))
    transformed.clear()
    again = sync(settings, fresh_db)
    assert len(transformed) == 60
    assert again.unchanged == 60
    assert snapshots(fresh_db) == versions
    assert stored(fresh_db) == full


def test_a_record_changed_and_changed_back_is_compared_each_time(
    fresh_db: Engine, settings: Any, simulator: Simulator, transformed: list[str]
) -> None:
    """An old fingerprint must not vouch for a row a later record rewrote: here one with an
    integer beyond 64 bits (orjson refuses it; its page's text is hashed as received)."""
    sync(settings, fresh_db)
    uid = sorted(j["instanceUid"] for j in simulator.every_job())[5]
    original = next(j for j in simulator.every_job() if j["instanceUid"] == uid)
    simulator.mutate(uid, vendorCounter=2**70)
    changed = sync(settings, fresh_db)
    assert changed.updated == 1
    assert stored(fresh_db).get(uid) != fingerprint(original)[1]  # type: ignore[index]

    # Back to exactly the first record: the warehouse holds the big-number one, so this must
    # be compared (and versioned), not waved through by the first record's fingerprint.
    simulator.mutate(uid, vendorCounter=etl.simulator.wire.ABSENT)
    assert next(j for j in simulator.every_job() if j["instanceUid"] == uid) == original
    transformed.clear()
    back = sync(settings, fresh_db)
    assert transformed == [uid]
    assert (back.updated, back.unchanged) == (1, 59)
    assert stored(fresh_db)[uid] == fingerprint(original)[1]  # type: ignore[index]
    assert_mirrors(fresh_db, simulator)


def test_only_canonical_uids_take_the_fast_path() -> None:
    uid = "0b4a3b1e-1111-2222-3333-444455556666"
    assert fingerprint({"instanceUid": uid, "status": "Success"}) is not None
    assert fingerprint({"instanceUid": uid.upper(), "status": "Success"}) is None
    assert fingerprint({"instanceUid": uid + " ", "status": "Success"}) is None
    assert fingerprint({"instanceUid": 7, "status": "Success"}) is None
    assert fingerprint(["not", "a", "record"]) is None
    assert fingerprint({"instanceUid": uid, "text": "\ud800"}) is None  # lone surrogate
    a = fingerprint({"instanceUid": uid, "status": "Success"})
    b = fingerprint({"instanceUid": uid, "status": "Failed"})
    assert a is not None and b is not None and a[1] != b[1] and len(a[1]) == 16


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"scheduleEvents": ["AtLock"], "nested": {"a": [1, {"b": None}]}},  # the slow walk
        {"note": "NUL \x00 inside"},  # orjson writes it; PostgreSQL cannot store it
        {"ratio": 0.5},
    ],
)
def test_reusing_the_fingerprint_text_transforms_exactly_alike(extra: dict[str, Any]) -> None:
    record = {"instanceUid": "0b4a3b1e-1111-2222-3333-444455556666", "status": "Success", **extra}
    print_ = fingerprint(record)
    assert print_ is not None
    assert print_.text == orjson.dumps(record)

    def outcome(*args: Any) -> Any:
        try:
            return transform_with_raw(*args)
        except RecordRejected as exc:
            return exc.reason

    assert outcome(record, print_.text) == outcome(record)
    if "note" in extra:  # rejected either way, with the same reason
        assert "NUL" in outcome(record, print_.text)


def test_lookup_answers_the_same_for_sorted_and_shuffled_pages(
    fresh_db: Engine, settings: Any, simulator: Simulator
) -> None:
    sync(settings, fresh_db)
    everything = stored(fresh_db)
    uids = sorted(everything)[5:25]
    gone = uids[3]
    with fresh_db.begin() as conn:
        conn.execute(
            text("UPDATE vspc.backup_agent_jobs SET deleted_at = now() WHERE instance_uid = :u"),
            {"u": gone},
        )
    wrong = uids[7]  # a record that changed since: its digest differs

    def page(order: list[str]) -> list[tuple[str, bytes]]:
        return [(u, b"\x00" * 16 if u == wrong else everything[u]) for u in order]

    def same_uids(stage: Stage, order: list[str], source: str) -> list[str]:
        pairs = page(order)
        return sorted(pairs[i][0] for i in stage.add_same(pairs, source))

    expected = sorted(u for u in uids if u not in (gone, wrong))
    with fresh_db.connect() as conn:
        stage = Stage(conn)
        stage.create()
        in_order = same_uids(stage, uids, "test-console")
        shuffled = same_uids(stage, [*uids[10:], *uids[:10]], "test-console")
        sparse = same_uids(stage, uids[::4], "test-console")  # the range holds others too
        other_source = same_uids(stage, uids, "another-console")
        staged = conn.execute(
            text("SELECT seq, instance_uid::text, same FROM stage_jobs ORDER BY seq")
        ).all()
    assert in_order == expected
    assert shuffled == expected
    assert sparse == sorted(u for u in uids[::4] if u not in (gone, wrong))
    assert other_source == []
    # each match staged once per call, by uid only, at its position on the page
    assert [r.instance_uid for r in staged] == [
        u
        for order in (uids, [*uids[10:], *uids[:10]], uids[::4])
        for u in order
        if u not in (gone, wrong)
    ]
    assert all(r.same for r in staged)
    shuffled_seq = {r.instance_uid: r.seq for r in staged[len(expected) : 2 * len(expected)]}
    assert shuffled_seq[uids[10]] == len(uids) + 1  # first on the second page


def test_staged_pages_are_committed_at_most_once_a_second(
    fresh_db: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(etl.load.stage, "_clock", lambda: clock[0])
    reject = [StagedReject(None, "a reason", {"instanceUid": None})]
    with fresh_db.connect() as conn:
        stage = Stage(conn)
        stage.create()
        stage.add([], [], [], reject)
        clock[0] += 0.5
        stage.add([], [], [], reject)
        status = conn.connection.driver_connection.info.transaction_status  # type: ignore[union-attr]
        assert status == TransactionStatus.INTRANS  # two pages within a second: not committed
        clock[0] += 0.6
        stage.add([], [], [], reject)
        status = conn.connection.driver_connection.info.transaction_status  # type: ignore[union-attr]
        assert status == TransactionStatus.IDLE  # a second since the last commit: committed
        assert conn.execute(text("SELECT count(*) FROM stage_rejects")).scalar_one() == 3


def test_a_uid_twice_on_a_page_is_matched_by_position(
    fresh_db: Engine, settings: Any, simulator: Simulator
) -> None:
    sync(settings, fresh_db)
    uid, digest = sorted(stored(fresh_db).items())[0]
    with fresh_db.connect() as conn:
        stage = Stage(conn)
        stage.create()
        # the stale copy first, then the current one: only the second is unchanged
        assert stage.add_same([(uid, b"\x01" * 16), (uid, digest)], "test-console") == {1}
        assert stage.add_same([(uid, digest), (uid, b"\x01" * 16)], "test-console") == {0}


def test_a_source_without_live_jobs_is_not_looked_up(
    fresh_db: Engine, settings: Any, simulator: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first sync (no live job of its source) cannot match a fingerprint: no query per page,
    and the positions are numbered as if the lookups had run."""
    sync(settings, fresh_db)
    pairs = sorted(stored(fresh_db).items())[:5]
    with fresh_db.begin() as conn:
        conn.execute(text("UPDATE vspc.backup_agent_jobs SET deleted_at = now()"))
    # the lookups would fail if they ran
    monkeypatch.setattr(etl.load.stage, "_SAME_RANGE", "SELECT no_such_column")
    monkeypatch.setattr(etl.load.stage, "_SAME_EACH", "SELECT no_such_column")
    with fresh_db.connect() as conn:
        stage = Stage(conn)
        stage.create()
        assert stage.add_same(pairs, "test-console") == set()
        assert stage.add_same(pairs[::-1], "another-console") == set()
        stage.add([], [], [], [StagedReject(None, "a reason", {"instanceUid": None})])
        assert conn.execute(text("SELECT seq FROM stage_rejects")).scalar_one() == 11


def test_a_source_with_live_jobs_is_looked_up(
    fresh_db: Engine, settings: Any, simulator: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    sync(settings, fresh_db)
    pairs = sorted(stored(fresh_db).items())[:5]
    monkeypatch.setattr(etl.load.stage, "_SAME_RANGE", "SELECT no_such_column")
    with fresh_db.connect() as conn:
        stage = Stage(conn)
        stage.create()
        with pytest.raises(psycopg.errors.UndefinedColumn):
            stage.add_same(pairs, "test-console")


def test_pages_orjson_decoded_take_the_shortcut_and_others_do_not(
    fresh_db: Engine, settings: Any, simulator: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The simulator's pages take the typed path; a page holding a NaN is refused by msgspec
    and decoded by the standard library, and its records (the bad one rejected) take the
    general path, told that orjson did not decode them."""
    flags: list[bool] = []
    real: Callable[..., Any] = etl.transform.transform_with_raw

    def recording(record: object, dumped: bytes | None = None, **options: Any) -> Any:
        flags.append(options["by_orjson"])
        return real(record, dumped, **options)

    monkeypatch.setattr(etl.transform, "transform_with_raw", recording)
    first = sync(settings, fresh_db)
    assert first.status == "success" and first.inserted == 60
    assert flags == []  # all typed
    uid = sorted(stored(fresh_db))[0]
    simulator.world.mutate(uid, restorePoints=float("nan"))
    second = sync(settings, fresh_db)
    assert second.status == "success" and second.rejected == 1
    # the other 59 are unchanged: the orjson text of each is the text its typed page was
    # hashed from (the simulator writes with orjson), so they skip the transform
    assert flags == [False]
    assert second.unchanged == 59
    assert flags and not any(flags)
