"""Restore points end to end: the simulator over loopback HTTP, a real PostgreSQL, ``run_once``.

Full and incremental reads, the overlap that catches late-indexed points, ``gone_at`` set only
by a complete full read within the ratio, rejects, refusals and failures.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, unquote

import httpx
import pytest
from sqlalchemy import Engine, text

from etl.config import Settings
from etl.errors import ConfigError
from etl.load.points import IN_CHUNK, OVERLAP, SORT_BY_CREATION, PointsPlan
from etl.pipeline import RunResult, make_http_client, run_once
from etl.points import transform_point
from etl.simulator import Simulator, SimulatorServer
from etl.transform import Reject, parse_timestamp
from tests.conftest import make_settings, no_sleep

KEY = "points-key"
POINTS_PATH = "/api/v3/protectedWorkloads/computersManagedByConsole/restorePoints"


@pytest.fixture
def console() -> Simulator:
    return Simulator(jobs=40, seed=33, api_keys=(KEY,), delete_rate=0, add_rate=0)


@pytest.fixture
def console_server(console: Simulator) -> Any:
    with SimulatorServer(console, host="127.0.0.1", port=0) as server:
        yield server


def console_settings(database_url: Any, server: SimulatorServer, **env: Any) -> Settings:
    """Settings of a sync of source ``points`` from ``server``, plus ``env``."""
    return make_settings(
        database_url, None, VSPC_URL=server.url, VSPC_API_KEY=KEY, VSPC_SOURCE="points", **env
    )


class Sync:
    """Runs syncs against the console; remembers the restore-point requests' queries."""

    def __init__(self, database_url: Any, server: SimulatorServer, engine: Engine) -> None:
        self.database_url = database_url
        self.server = server
        self.engine = engine
        self.queries: list[dict[str, list[str]]] = []

    def __call__(self, **env: Any) -> RunResult:
        settings = console_settings(self.database_url, self.server, VSPC_MAX_ATTEMPTS=2, **env)
        self.queries = []

        def note(request: httpx.Request) -> None:
            if request.url.path == POINTS_PATH:
                self.queries.append(parse_qs(request.url.query.decode()))

        http = make_http_client(settings, event_hooks={"request": [note]})
        with http:
            return run_once(settings, engine=self.engine, http=http, sleep=no_sleep)


@pytest.fixture
def sync(database_url: Any, console_server: SimulatorServer, fresh_db: Engine) -> Sync:
    return Sync(database_url, console_server, fresh_db)


def stored(engine: Engine) -> dict[str, dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT instance_uid::text AS uid, job_uid::text AS job, creation_date, raw, "
                "first_seen_at, last_run_id, gone_at, source FROM vspc.restore_points"
            )
        ).mappings()
        return {r["uid"]: dict(r) for r in rows}


def run_row(engine: Engine, run_id: int) -> dict[str, Any]:
    with engine.connect() as conn:
        return dict(
            conn.execute(text("SELECT * FROM vspc.etl_runs WHERE run_id = :r"), {"r": run_id})
            .mappings()
            .one()
        )


def listed(console: Simulator) -> dict[str, dict[str, Any]]:
    return {p["instanceUid"].lower(): p for p in console.world.restore_points()}


def live(points: dict[str, dict[str, Any]]) -> set[str]:
    return {uid for uid, p in points.items() if p["gone_at"] is None}


def test_the_first_sync_stores_every_listed_point_as_received(
    sync: Sync, console: Simulator, fresh_db: Engine
) -> None:
    result = sync()
    assert result.status == "success"
    truth = listed(console)
    points = stored(fresh_db)
    assert len(truth) > 200
    assert set(points) == set(truth)
    for uid, point in truth.items():
        row = points[uid]
        assert row["raw"] == point
        assert row["creation_date"] == parse_timestamp(point["creationDate"])
        assert row["job"] == (point["jobUid"].lower() if point["jobUid"] else None)
        assert row["gone_at"] is None and row["last_run_id"] == result.run_id
        assert row["source"] == "points"
    assert any(p["jobUid"] is None for p in truth.values())  # points of no job are kept too
    run = run_row(fresh_db, result.run_id)
    assert run["restore_points_read"] == "full"
    assert run["restore_points_seen"] == len(truth)
    assert run["restore_points_inserted"] == len(truth)
    assert run["restore_points_gone"] == 0
    assert f"restore points (full read): {len(truth)} seen, {len(truth)} new, 0 gone" in (
        result.summary()
    )
    assert result.log_fields()["restore_points"]["seen"] == len(truth)
    assert sync.queries and all(
        json.loads(q["sort"][0]) == [{"property": "creationDate", "direction": "ascending"}]
        for q in sync.queries
    )
    assert all("filter" not in q for q in sync.queries)


def test_a_later_sync_reads_only_the_new_points(
    sync: Sync, console: Simulator, fresh_db: Engine
) -> None:
    sync()
    newest = max(p["creation_date"] for p in stored(fresh_db).values())
    before = set(stored(fresh_db))
    console.advance(6)
    truth = listed(console)
    since = newest - OVERLAP
    expected = {u for u, p in truth.items() if parse_timestamp(p["creationDate"]) >= since}
    result = sync()
    assert result.status == "success"
    overlap, listing, fetches = shapes(sync.queries)
    assert [(n["operation"], parse_timestamp(n["value"])) for n in overlap] == [
        ("greaterThanOrEqual", since),
        ("lessThan", newest),
    ]
    assert [(n["operation"], parse_timestamp(n["value"])) for n in listing] == [
        ("greaterThanOrEqual", newest)
    ]
    # Fetched by uid: exactly the points of the overlap window the first sync did not store.
    window = {u for u, p in truth.items() if since <= parse_timestamp(p["creationDate"]) < newest}
    assert {u.lower() for chunk in fetches for u in chunk} == window - before
    run = run_row(fresh_db, result.run_id)
    assert run["restore_points_read"] == "new"
    assert run["restore_points_seen"] == len(expected) < len(truth) / 3
    new = set(truth) - before
    assert new and run["restore_points_inserted"] == len(new)
    assert set(stored(fresh_db)) == before | new
    assert run["restore_points_gone"] is None


def shapes(
    queries: list[dict[str, list[str]]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[list[str]]]:
    """The filters of a *new* read's requests: the overlap's (asserted uid-only and the same
    on every page), the full listing's, and the uids of each fetch by uid (in order)."""
    overlaps, listings, fetches = set(), set(), []
    for q in queries:
        assert json.loads(q["sort"][0]) == [{"property": "creationDate", "direction": "ascending"}]
        nodes = json.loads(q["filter"][0])
        if "select" in q:
            assert json.loads(q["select"][0]) == [{"propertyPath": "instanceUid"}]
            overlaps.add(q["filter"][0])
        elif nodes[0]["property"] == "instanceUid":
            assert [n["operation"] for n in nodes] == ["in"]
            assert int(q["offset"][0]) == 0
            fetches.append(nodes[0]["value"])
        else:
            listings.add(q["filter"][0])
    assert len(overlaps) == 1 and len(listings) == 1
    return json.loads(overlaps.pop()), json.loads(listings.pop()), fetches


def test_a_point_indexed_late_is_caught_by_the_overlap(
    sync: Sync, console: Simulator, fresh_db: Engine
) -> None:
    sync()
    waiting: list[tuple[str, datetime]] = []
    for _ in range(48):
        console.advance(1)
        waiting = console.world.pending_points()
        if waiting:
            break
    assert waiting, "the simulator indexes about one point in thirty late"
    _, created = waiting[0]
    assert sync().status == "success"  # reads around it: the point is not listed yet
    missing = {
        u for u, p in listed(console).items() if parse_timestamp(p["creationDate"]) == created
    }
    assert not missing & set(stored(fresh_db))
    console.advance(9)  # now it is listed, created before the newest point stored
    late = {u for u, p in listed(console).items() if parse_timestamp(p["creationDate"]) == created}
    assert late
    newest = max(p["creation_date"] for p in stored(fresh_db).values())
    assert created < newest
    result = sync()
    assert run_row(fresh_db, result.run_id)["restore_points_read"] == "new"
    _, _, fetches = shapes(sync.queries)
    assert late <= {u.lower() for chunk in fetches for u in chunk}  # found by uid, fetched
    points, truth = stored(fresh_db), listed(console)
    assert all(points[u]["raw"] == truth[u] for u in late)  # whole, not the uid-only listing
    assert set(truth) <= set(points)


def test_the_unknown_points_of_the_overlap_are_fetched_by_uid_in_chunks(
    sync: Sync, console: Simulator, fresh_db: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    sync()
    console.advance(2)
    sync()
    points = stored(fresh_db)
    newest = max(p["creation_date"] for p in points.values())
    window = sorted(u for u, p in points.items() if newest - OVERLAP <= p["creation_date"] < newest)
    assert len(window) >= 9
    lost = set(window[:9])  # as if the console had listed them only now
    with fresh_db.begin() as conn:
        conn.execute(
            text("DELETE FROM vspc.restore_points WHERE instance_uid::text = ANY(:u)"),
            {"u": sorted(lost)},
        )
    monkeypatch.setattr("etl.pipeline.IN_CHUNK", 4)
    result = sync()
    _, _, fetches = shapes(sync.queries)
    assert sorted(len(chunk) for chunk in fetches) == [1, 4, 4]
    assert {u.lower() for chunk in fetches for u in chunk} == lost
    run = run_row(fresh_db, result.run_id)
    assert run["restore_points_read"] == "new" and run["restore_points_inserted"] == 9
    truth = listed(console)
    after = stored(fresh_db)
    assert all(after[u]["raw"] == truth[u] for u in lost)
    assert set(truth) <= set(after)


def test_a_fetch_by_uid_keeps_its_query_string_under_2048_characters() -> None:
    uids = [str(uuid.UUID(int=(1 << 128) - 1 - i)) for i in range(IN_CHUNK)]
    params = {
        **PointsPlan.fetch_params(uids),
        "sort": SORT_BY_CREATION,
        "limit": "500",
        "offset": "0",
    }
    query = httpx.URL("https://console.example:1280/", params=params).query
    assert 1500 < len(query) < 2048
    assert json.loads(parse_qs(query.decode())["filter"][0])[0]["value"] == uids


def test_gone_at_is_set_only_by_a_complete_full_read(
    sync: Sync, console: Simulator, fresh_db: Engine
) -> None:
    first = sync()
    console.advance(72)  # retention merges the oldest points away
    truth = listed(console)
    merged = set(stored(fresh_db)) - set(truth)
    assert merged

    incremental = sync()
    assert run_row(fresh_db, incremental.run_id)["restore_points_read"] == "new"
    assert live(stored(fresh_db)) >= merged  # an incremental read sets no gone_at

    console.faults.add("short", path="restore_points", times=None)
    incomplete = sync(VSPC_RESTORE_POINTS_FULL_EVERY=0)
    console.faults.clear()
    run = run_row(fresh_db, incomplete.run_id)
    assert incomplete.status == "success"
    assert run["restore_points_read"] == "full" and run["restore_points_gone"] is None
    assert "could not be verified complete" in run["error"]
    assert live(stored(fresh_db)) >= merged

    above = sync(VSPC_RESTORE_POINTS_FULL_EVERY=0, VSPC_MAX_DELETE_RATIO=0.001)
    run = run_row(fresh_db, above.run_id)
    assert run["restore_points_gone"] is None
    assert "restore points gone withheld" in run["error"]
    assert "VSPC_MAX_DELETE_RATIO=0.001" in run["error"]
    assert live(stored(fresh_db)) >= merged
    # A full read that could not apply gone_at is followed by another one.
    full = sync()
    points = stored(fresh_db)
    run = run_row(fresh_db, full.run_id)
    assert run["restore_points_read"] == "full"
    assert run["restore_points_gone"] == len(merged)
    assert {u for u, p in points.items() if p["gone_at"] is not None} == merged
    assert live(points) == set(truth)
    start = run["started_at"]
    assert all(points[u]["gone_at"] == start for u in merged)
    assert all(
        points[u]["first_seen_at"] == run_row(fresh_db, first.run_id)["started_at"] for u in merged
    )
    # and then, within FULL_EVERY, reads are incremental again
    assert run_row(fresh_db, sync().run_id)["restore_points_read"] == "new"


def test_a_point_listed_again_is_live_again(
    sync: Sync, console: Simulator, fresh_db: Engine
) -> None:
    sync()
    uid = next(iter(listed(console)))
    with fresh_db.begin() as conn:
        conn.execute(
            text("UPDATE vspc.restore_points SET gone_at = now() WHERE instance_uid = :u"),
            {"u": uid},
        )
    result = sync(VSPC_RESTORE_POINTS_FULL_EVERY=0)
    point = stored(fresh_db)[uid]
    assert point["gone_at"] is None and point["last_run_id"] == result.run_id
    assert run_row(fresh_db, result.run_id)["restore_points_gone"] == 0


def test_every_sync_is_full_with_full_every_zero(
    sync: Sync, console: Simulator, fresh_db: Engine
) -> None:
    reads = []
    for _ in range(3):
        result = sync(VSPC_RESTORE_POINTS_FULL_EVERY=0)
        reads.append(run_row(fresh_db, result.run_id)["restore_points_read"])
        assert all("filter" not in q for q in sync.queries)
        console.advance(2)
    assert reads == ["full", "full", "full"]


@pytest.mark.parametrize("kind", ["403", "404"])
def test_a_refused_path_is_a_warning_and_leaves_the_points(
    sync: Sync, console: Simulator, fresh_db: Engine, kind: str
) -> None:
    sync()
    before = stored(fresh_db)
    console.advance(24)
    console.faults.add(kind, path="restore_points", times=None)
    result = sync(VSPC_RESTORE_POINTS_FULL_EVERY=0)
    assert result.status == "success"
    run = run_row(fresh_db, result.run_id)
    assert run["restore_points_read"] == "refused"
    assert run["restore_points_seen"] is None and run["restore_points_gone"] is None
    assert "restore points were not read" in run["error"]
    assert stored(fresh_db) == before
    assert run["jobs_seen"] == len(console.jobs("windows")) + len(console.jobs("linux")) + len(
        console.jobs("mac")
    )


def test_a_failed_point_read_fails_the_run_and_commits_nothing(
    sync: Sync, console: Simulator, fresh_db: Engine
) -> None:
    console.faults.add("520", path="restore_points", times=None)
    result = sync()
    assert result.status == "failed"
    with fresh_db.connect() as conn:
        counts = conn.execute(
            text(
                "SELECT (SELECT count(*) FROM vspc.restore_points), "
                "(SELECT count(*) FROM vspc.backup_agent_jobs), "
                "(SELECT count(*) FROM vspc.etl_rejects)"
            )
        ).one()
    assert tuple(counts) == (0, 0, 0)
    assert run_row(fresh_db, result.run_id)["status"] == "failed"


class Damaging(httpx.BaseTransport):
    """The real HTTP transport, with chosen restore points of each page damaged on the way."""

    def __init__(self, damage: dict[int, dict[str, Any]]) -> None:
        self.inner = httpx.HTTPTransport()
        self.damage = damage

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.url.path != POINTS_PATH or response.status_code != 200:
            return response
        body = json.loads(response.read())
        for index, change in self.damage.items():
            if index < len(body["data"]):
                body["data"][index].update(change)
        return httpx.Response(200, json=body, headers={"Content-Type": "application/json"})


def test_bad_points_are_rejects_naming_the_field_and_the_rest_loads(
    database_url: Any, console_server: SimulatorServer, console: Simulator, fresh_db: Engine
) -> None:
    settings = console_settings(database_url, console_server, VSPC_CONCURRENCY=1)
    damage = {0: {"instanceUid": "not-a-uid"}, 1: {"creationDate": "yesterday"}}
    with make_http_client(settings, transport=Damaging(damage)) as http:
        result = run_once(settings, engine=fresh_db, http=http, sleep=no_sleep)
    assert result.status == "success"
    pages = -(-len(listed(console)) // settings.vspc_page_size)
    with fresh_db.connect() as conn:
        rejects = conn.execute(
            text(
                "SELECT instance_uid, reason, raw FROM vspc.etl_rejects "
                "WHERE collection = 'restore_points' ORDER BY reject_id"
            )
        ).all()
    assert len(rejects) == 2 * pages
    assert {r.reason.split(":")[0] for r in rejects} == {"field instanceUid", "field creationDate"}
    bad_uid = [r for r in rejects if r.reason.startswith("field instanceUid")]
    assert bad_uid[0].instance_uid == "not-a-uid" and "is not a UUID" in bad_uid[0].reason
    assert all("'yesterday'" in r.reason for r in rejects if "creationDate" in r.reason)
    assert len(stored(fresh_db)) == len(listed(console)) - 2 * pages
    assert result.points is not None and result.points.rejected == 2 * pages


def test_job_rejects_name_their_collection(
    database_url: Any, console_server: SimulatorServer, console: Simulator, fresh_db: Engine
) -> None:
    console.mutate(console.jobs("windows")[0]["instanceUid"], restorePoints="four")
    settings = console_settings(database_url, console_server)
    result = run_once(settings, engine=fresh_db, sleep=no_sleep)
    assert result.rejected == 1
    with fresh_db.connect() as conn:
        assert conn.execute(text("SELECT collection FROM vspc.etl_rejects")).scalars().all() == [
            "windows_jobs"
        ]


@pytest.mark.parametrize(
    ("record", "field"),
    [
        ({"creationDate": "2026-01-01T00:00:00Z"}, "instanceUid"),
        ({"instanceUid": None, "creationDate": "2026-01-01T00:00:00Z"}, "instanceUid"),
        ({"instanceUid": "1234", "creationDate": "2026-01-01T00:00:00Z"}, "instanceUid"),
        ({"instanceUid": "0c0e9a0e-1111-2222-3333-444455556666"}, "creationDate"),
        (
            {"instanceUid": "0c0e9a0e-1111-2222-3333-444455556666", "creationDate": 5},
            "creationDate",
        ),
        (
            {
                "instanceUid": "0c0e9a0e-1111-2222-3333-444455556666",
                "creationDate": "2026-02-30T00:00:00Z",
            },
            "creationDate",
        ),
        (
            {
                "instanceUid": "0c0e9a0e-1111-2222-3333-444455556666",
                "creationDate": "2026-01-01T00:00:00Z",
                "size": "big",
            },
            "size",
        ),
    ],
)
def test_transform_point_rejects_name_the_field(record: dict[str, Any], field: str) -> None:
    result = transform_point(record)
    assert isinstance(result, Reject)
    assert result.reason.startswith(f"field {field}:")
    assert result.raw == record


def test_transform_point_keeps_a_good_point() -> None:
    record = {
        "instanceUid": "0C0E9A0E-1111-2222-3333-444455556666",
        "backupAgentUid": "0c0e9a0e-1111-2222-3333-444455550000",
        "jobUid": None,
        "backedupItems": "C:\\",
        "destination": "\\\\nas\\backup",
        "size": 2**40,
        "incrementRawDataSize": 12,
        "sourceSize": 2**41,
        "creationDate": "2026-03-01T02:03:04.1234567+03:00",
        "futureField": {"a": 1},
    }
    row = transform_point(record)
    assert not isinstance(row, Reject)
    assert row[:8] == (
        "0C0E9A0E-1111-2222-3333-444455556666",
        "0c0e9a0e-1111-2222-3333-444455550000",
        None,
        "C:\\",
        "\\\\nas\\backup",
        2**40,
        12,
        2**41,
    )
    assert row[8] == parse_timestamp("2026-03-01T02:03:04.1234567+03:00")
    assert row[8].utcoffset() == timedelta(hours=3)
    assert json.loads(row[9]) == record


@pytest.mark.parametrize("value", ["soon", "-1h", "1w"])
def test_an_invalid_full_every_is_a_config_error_naming_it(database_url: Any, value: str) -> None:
    with pytest.raises(ConfigError, match="VSPC_RESTORE_POINTS_FULL_EVERY"):
        make_settings(database_url, None, VSPC_RESTORE_POINTS_FULL_EVERY=value)


@pytest.mark.parametrize(("value", "seconds"), [("0", 0), ("24h", 86_400), ("1d12h", 129_600)])
def test_full_every_is_a_duration(database_url: Any, value: str, seconds: int) -> None:
    settings = make_settings(database_url, None, VSPC_RESTORE_POINTS_FULL_EVERY=value)
    assert settings.vspc_restore_points_full_every == seconds


def test_a_short_page_of_the_overlap_makes_the_new_read_read_again(
    sync: Sync, console: Simulator, fresh_db: Engine
) -> None:
    sync()
    console.advance(6)
    before = set(stored(fresh_db))
    console.faults.add("short", path="restore_points", times=1, count=0)
    result = sync()
    assert result.status == "success"
    overlaps = [q for q in sync.queries if "select" in q]
    assert [int(q["offset"][0]) for q in overlaps] == [0, 0]  # the pass, then its re-read
    run = run_row(fresh_db, result.run_id)
    truth = listed(console)
    assert run["restore_points_read"] == "new"
    assert run["restore_points_inserted"] == len(set(truth) - before) > 0
    assert set(truth) <= set(stored(fresh_db))


@pytest.mark.parametrize(
    "bad",
    # the second is a UUID to Python's uuid.UUID, not in the form the contract accepts
    ["not-a-uid", "{1b4e28ba-2fa1-11d2-883f-0016d3cca427}"],
    ids=["not-a-uid", "braced"],
)
def test_a_bad_uid_in_the_overlap_is_a_reject_and_never_sent_in_a_filter(
    database_url: Any,
    console_server: SimulatorServer,
    console: Simulator,
    fresh_db: Engine,
    bad: str,
) -> None:
    settings = console_settings(database_url, console_server)
    assert run_once(settings, engine=fresh_db, sleep=no_sleep).status == "success"
    console.advance(3)
    sent: list[str] = []

    def note(request: httpx.Request) -> None:
        if request.url.path == POINTS_PATH:
            sent.append(request.url.query.decode())

    damage = Damaging({0: {"instanceUid": bad}})
    with make_http_client(settings, transport=damage, event_hooks={"request": [note]}) as http:
        result = run_once(settings, engine=fresh_db, http=http, sleep=no_sleep)
    assert result.status == "success" and result.points is not None
    assert result.points.read == "new" and result.points.rejected >= 1
    assert not any(bad in unquote(q) for q in sent)
    with fresh_db.connect() as conn:
        reasons = conn.execute(
            text("SELECT reason FROM vspc.etl_rejects WHERE run_id = :r AND instance_uid = :bad"),
            {"r": result.run_id, "bad": bad},
        ).scalars()
        assert [r.split(":")[0] for r in reasons] == ["field instanceUid"]
