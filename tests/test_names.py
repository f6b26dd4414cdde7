"""Organization and computer names: parsed leniently, refreshed by each sync, never required."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from datetime import UTC, datetime
from functools import partial
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, text

from etl.collections import RESTORE_POINTS, NamesRead, PageRead, ReadFailed
from etl.extract import ApiKeyAuth, RetryPolicy, VspcClient, reader
from etl.extract.names import (
    AGENTS,
    AGENTS_PATH,
    MANAGEMENT_AGENTS,
    MANAGEMENT_AGENTS_PATH,
    ORGANIZATIONS,
    ORGANIZATIONS_PATH,
    AgentRow,
    ManagementAgentRow,
    Names,
    OrganizationRow,
    agent_row,
    fetch_names,
    management_agent_row,
    organization_row,
    page_digest,
)
from etl.load.names import NameStage
from etl.pipeline import NAME_PAGES_WAITING, RunResult, run_once
from etl.simulator import Simulator
from tests.conftest import no_sleep

UID = "6b4cb242-4a23-d596-2217-beaddbc496cb"
ORG = "0cb1e29c-658c-da14-95e6-0af593bd04cf"


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (
            {"instanceUid": UID, "name": "ООО Ромашка", "alias": "romashka", "type": "company"},  # noqa: RUF001
            OrganizationRow(uuid.UUID(UID), "ООО Ромашка", "romashka", "Company"),  # noqa: RUF001
        ),
        (
            {"instanceUid": UID.upper(), "name": "A\x00B", "type": "Distributor"},
            OrganizationRow(uuid.UUID(UID), "A\ufffdB", None, "Distributor"),
        ),
        (
            {"instanceUid": UID, "name": 42, "alias": None},
            OrganizationRow(uuid.UUID(UID), None, None, None),
        ),
        ({"name": "no uid"}, None),
        ({"instanceUid": "not-a-uid", "name": "x"}, None),
        ({"instanceUid": UID.replace("-", ""), "name": "bare hex"}, None),
        (["not", "a", "record"], None),
    ],
)
def test_organization_row(record: Any, expected: OrganizationRow | None) -> None:
    assert organization_row(record) == expected


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (
            {
                "instanceUid": UID,
                "agentPlatform": "Windows",
                "name": "Сервер-1С",  # noqa: RUF001
                "organizationUid": ORG,
                "version": "6.3.0.177",
                "status": "Active",
            },
            AgentRow(
                uuid.UUID(UID),
                "Сервер-1С",  # noqa: RUF001
                uuid.UUID(ORG),
                "6.3.0.177",
                "Active",
                agent_platform="Windows",
            ),
        ),
        (
            {
                "instanceUid": UID,
                "agentPlatform": "linux",
                "name": "db01",
                "managementAgentUid": ORG,
                "status": "notrunning",
                "operationMode": "SERVER",
            },
            AgentRow(
                uuid.UUID(UID),
                "db01",
                None,
                None,
                "NotRunning",
                agent_platform="Linux",
                management_agent_uid=uuid.UUID(ORG),
                operation_mode="Server",
            ),
        ),
        (
            {"instanceUid": UID, "organizationUid": "garbage", "version": 6, "status": "Rebooting"},
            AgentRow(uuid.UUID(UID), None, None, None, "Rebooting"),
        ),
        ({"instanceUid": None, "name": "PC"}, None),
        (None, None),
    ],
)
def test_agent_row(record: Any, expected: AgentRow | None) -> None:
    assert agent_row(record) == expected


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (
            {
                "instanceUid": UID,
                "hostName": "SRV-01",
                "friendlyName": "SRV-01 (corp.local)",
                "organizationUid": ORG,
                "locationUid": ORG,
                "version": "9.1.0.29112",
                "status": "healthy",
                "connectionStatus": "INACCESSIBLE",
                "lastHeartbeatTime": "2026-10-31T20:29:18.1234567+03:30",
            },
            ManagementAgentRow(
                uuid.UUID(UID),
                "SRV-01",
                "SRV-01 (corp.local)",
                uuid.UUID(ORG),
                uuid.UUID(ORG),
                "9.1.0.29112",
                "Healthy",
                "Inaccessible",
                datetime(2026, 10, 31, 16, 59, 18, 123457, tzinfo=UTC),
            ),
        ),
        (
            {"instanceUid": UID, "connectionStatus": "Parked", "lastHeartbeatTime": "yesterday"},
            ManagementAgentRow(uuid.UUID(UID), None, None, None, None, None, None, "Parked", None),
        ),
        ({"hostName": "no uid"}, None),
        ("not a record", None),
    ],
)
def test_management_agent_row(record: Any, expected: ManagementAgentRow | None) -> None:
    assert management_agent_row(record) == expected


def sync(settings: Any, engine: Engine) -> RunResult:
    return run_once(settings, engine=engine, sleep=no_sleep)


def stored(engine: Engine, sql: str) -> dict[str, tuple[Any, ...]]:
    with engine.connect() as conn:
        return {str(r[0]): tuple(r[1:]) for r in conn.execute(text(sql))}


def test_sync_stores_the_consoles_names(
    fresh_db: Engine, settings: Any, simulator: Simulator
) -> None:
    result = sync(settings, fresh_db)
    assert (result.status, result.error) == ("success", None)
    orgs = {o["instanceUid"]: (o["name"], o["alias"], o["type"]) for o in simulator.organizations()}
    agents = {
        a["instanceUid"]: (a["name"], uuid.UUID(a["organizationUid"]), a["version"], a["status"])
        for a in simulator.agents()
    }
    assert stored(fresh_db, "SELECT instance_uid, name, alias, type FROM vspc.organizations") == (
        orgs
    )
    assert (
        stored(
            fresh_db,
            "SELECT instance_uid, computer_name, organization_uid, version, status "
            "FROM vspc.backup_agents",
        )
        == agents
    )
    expected = {
        j["instanceUid"]: (orgs[j["organizationUid"]][0], agents[j["backupAgentUid"]][0])
        for j in simulator.every_job()
    }
    named = stored(
        fresh_db, "SELECT instance_uid, organization_name, computer_name FROM vspc.job_sla_current"
    )
    assert named == expected
    # A rename reaches the views with the next sync; unchanged names are not rewritten.
    org_uid = next(iter(orgs))
    simulator.mutate_organization(org_uid, name="Renamed GmbH")
    assert sync(settings, fresh_db).status == "success"
    with fresh_db.connect() as conn:
        changed = conn.execute(
            text(
                "SELECT instance_uid::text, name FROM vspc.organizations "
                "WHERE updated_at > first_seen_at"
            )
        ).all()
    assert [tuple(r) for r in changed] == [(org_uid, "Renamed GmbH")]


def test_organizations_refused_403_sync_succeeds_names_null(
    fresh_db: Engine, settings: Any, simulator: Simulator
) -> None:
    simulator.faults.add("403", path="organizations", times=None)
    result = sync(settings, fresh_db)
    assert result.status == "success" and result.complete
    assert result.inserted == len(simulator.every_job())
    assert result.error is not None
    assert result.error.startswith(
        "organization names were not refreshed: The VSPC console denied access to "
        "/api/v3/organizations (403)"
    )
    with fresh_db.connect() as conn:
        row = conn.execute(
            text("SELECT status, error FROM vspc.etl_runs WHERE run_id = :id"),
            {"id": result.run_id},
        ).one()
        names = conn.execute(
            text(
                "SELECT count(*), count(organization_name), count(computer_name) "
                "FROM vspc.job_sla_current"
            )
        ).one()
        organizations = conn.execute(text("SELECT count(*) FROM vspc.organizations")).scalar()
    assert tuple(row) == ("success", result.error)
    assert tuple(names) == (len(simulator.every_job()), 0, len(simulator.every_job()))
    assert organizations == 0


def test_agents_missing_404_keeps_the_names_already_stored(
    fresh_db: Engine, settings: Any, simulator: Simulator
) -> None:
    assert sync(settings, fresh_db).error is None
    simulator.faults.add("404", path="backup_agents", times=None)
    result = sync(settings, fresh_db)
    assert result.status == "success"
    assert result.error == (
        "computer names (backup agents) were not refreshed: The VSPC console rejected GET "
        "/api/v3/infrastructure/backupAgents with HTTP 404: The requested resource "
        "was not found."
    )
    with fresh_db.connect() as conn:
        unnamed = conn.execute(
            text("SELECT count(*) FROM vspc.job_sla_current WHERE computer_name IS NULL")
        ).scalar()
    assert unnamed == 0


def test_the_names_warning_follows_withheld_deletions(
    fresh_db: Engine, settings: Any, simulator: Simulator
) -> None:
    sync(settings, fresh_db)
    for job in simulator.every_job()[: len(simulator.every_job()) * 2 // 3]:
        simulator.delete_job(job["instanceUid"])
    simulator.faults.add("403", path="organizations", times=None)
    result = sync(settings, fresh_db)
    assert result.status == "success" and result.deleted == 0
    assert result.error is not None
    withheld, names = result.error.split("; organization names were not refreshed: ")
    assert withheld.startswith("Windows deletions withheld: 40 of 42 live Windows jobs")
    assert names.startswith("The VSPC console denied access to /api/v3/organizations (403)")


def test_unchanged_name_pages_are_not_staged_again(
    fresh_db: Engine, settings: Any, simulator: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    staged: list[tuple[str, int]] = []
    add = NameStage.add

    def counting(self: NameStage, kind: str, rows: Any) -> None:
        staged.append((kind, len(rows)))
        add(self, kind, rows)

    monkeypatch.setattr(NameStage, "add", counting)
    organizations, agents = len(simulator.organizations()), len(simulator.agents())

    def staged_rows() -> dict[str, int]:
        counts = {ORGANIZATIONS: 0, AGENTS: 0, MANAGEMENT_AGENTS: 0}
        for kind, n in staged:
            counts[kind] += n
        staged.clear()
        return counts

    def names_in_warehouse() -> tuple[int, int]:
        with fresh_db.connect() as conn:
            return (
                conn.execute(text("SELECT count(*) FROM vspc.organizations")).scalar_one(),
                conn.execute(text("SELECT count(*) FROM vspc.backup_agents")).scalar_one(),
            )

    assert sync(settings, fresh_db).error is None
    managers = len(simulator.management_agents())
    assert staged_rows() == {
        ORGANIZATIONS: organizations,
        AGENTS: agents,
        MANAGEMENT_AGENTS: managers,
    }
    with fresh_db.connect() as conn:
        listed = dict(
            conn.execute(
                text(
                    "SELECT collection, sum(records) FROM vspc.etl_name_pages "
                    "WHERE source = :s GROUP BY collection"
                ),
                {"s": settings.source},
            ).all()
        )
    assert listed == {ORGANIZATIONS: organizations, AGENTS: agents, MANAGEMENT_AGENTS: managers}
    # Nothing changed: no name is parsed or staged, the names stay.
    assert sync(settings, fresh_db).error is None
    assert staged_rows() == {ORGANIZATIONS: 0, AGENTS: 0, MANAGEMENT_AGENTS: 0}
    assert names_in_warehouse() == (organizations, agents)
    # A rename changes one page: only that page is staged, and the name reaches the table.
    org_uid = simulator.organizations()[0]["instanceUid"]
    simulator.mutate_organization(org_uid, name="Renamed GmbH")
    assert sync(settings, fresh_db).error is None
    renamed = staged_rows()
    assert 1 <= renamed[ORGANIZATIONS] <= settings.vspc_page_size and renamed[AGENTS] == 0
    assert stored(fresh_db, "SELECT instance_uid, name FROM vspc.organizations")[org_uid] == (
        "Renamed GmbH",
    )
    # Rows deleted by hand: the stored digests are not trusted, every agent is staged again.
    with fresh_db.begin() as conn:
        conn.execute(
            text(
                "DELETE FROM vspc.backup_agents WHERE ctid IN "
                "(SELECT ctid FROM vspc.backup_agents LIMIT 2)"
            )
        )
    assert sync(settings, fresh_db).error is None
    assert staged_rows() == {ORGANIZATIONS: 0, AGENTS: agents, MANAGEMENT_AGENTS: 0}
    assert names_in_warehouse() == (organizations, agents)


def test_the_names_read_is_summed_up_at_debug_level(
    fresh_db: Engine, settings: Any, simulator: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    size = settings.vspc_page_size
    # the pager stops on a short page: every full page, then a short (or empty) one
    collections = (simulator.organizations(), simulator.agents(), simulator.management_agents())
    pages = sum(len(c) // size + 1 for c in collections)
    rows = sum(len(c) for c in collections)

    def summary() -> str:
        lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("names:")]
        caplog.clear()
        assert len(lines) == 1
        return lines[0]

    with caplog.at_level(logging.DEBUG, logger="etl.pipeline"):
        assert sync(settings, fresh_db).error is None
        first = summary()
        assert sync(settings, fresh_db).error is None
        second = summary()
    assert first.startswith(f"names: {pages} page(s) read, 0 of them unchanged")
    assert first.endswith(
        f"0 record(s) without a usable instanceUid skipped; {rows} name row(s) written"
    )
    assert second.startswith(f"names: {pages} page(s) read, {pages} of them unchanged")
    assert second.endswith("; 0 name row(s) written")


def test_a_refused_collection_keeps_its_page_digests(
    fresh_db: Engine, settings: Any, simulator: Simulator
) -> None:
    assert sync(settings, fresh_db).error is None
    query = "SELECT collection, page_digest FROM vspc.etl_name_pages ORDER BY 1, 2"
    with fresh_db.connect() as conn:
        before = conn.execute(text(query)).all()
    simulator.faults.add("404", path="backup_agents", times=None)
    assert sync(settings, fresh_db).error is not None
    with fresh_db.connect() as conn:
        assert conn.execute(text(query)).all() == before


# ---------------------------------------------------------------- the fetch, scripted
def scripted(handler: Any) -> VspcClient:
    http = httpx.Client(transport=httpx.MockTransport(handler), base_url="https://vspc.test")
    return VspcClient(http, ApiKeyAuth("k"), retry=RetryPolicy(max_attempts=1), sleep=no_sleep)


def one_per_page(request: httpx.Request) -> httpx.Response:
    """Three organizations or agents, one per page."""
    offset = int(request.url.params["offset"])
    uid = f"00000000-0000-4000-8000-{offset:012d}"
    data = [{"instanceUid": uid, "name": f"n{offset}"}] if offset < 3 else []
    paging = {"total": 3, "count": len(data), "offset": offset}
    return httpx.Response(200, json={"meta": {"pagingInfo": paging}, "data": data})


def test_fetch_reads_every_page_of_both_collections() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return one_per_page(request)

    names = fetch_names(scripted(handler), page_size=1)
    assert [o.name for o in names.organizations or []] == ["n0", "n1", "n2"]
    assert [a.computer_name for a in names.agents or []] == ["n0", "n1", "n2"]
    # the pager confirms the end with an empty page after the total
    assert (names.pages, names.skipped, names.warnings) == (12, 0, [])
    assert seen == [ORGANIZATIONS_PATH] * 4 + [AGENTS_PATH] * 4 + [MANAGEMENT_AGENTS_PATH] * 4


def test_pages_served_before_are_neither_parsed_nor_handed_over() -> None:
    first = fetch_names(scripted(one_per_page), page_size=1)
    assert first.digests[ORGANIZATIONS] == first.digests[AGENTS]  # the same pages
    assert [n for _, n in first.digests[ORGANIZATIONS]] == [1, 1, 1, 0]  # 0: the end page
    n1 = page_digest([{"instanceUid": "00000000-0000-4000-8000-000000000001", "name": "n1"}])
    assert first.digests[ORGANIZATIONS][1][0] == n1
    emitted: list[tuple[str, list[str]]] = []
    second = fetch_names(
        scripted(one_per_page),
        page_size=1,
        emit=lambda kind, rows: emitted.append((kind, [str(r.instance_uid)[-1] for r in rows])),
        known={ORGANIZATIONS: {n1}},
    )
    assert [e for e in emitted if e[0] == ORGANIZATIONS] == [
        (ORGANIZATIONS, ["0"]),
        (ORGANIZATIONS, ["2"]),
        (ORGANIZATIONS, []),
    ]
    assert len([e for e in emitted if e[0] == AGENTS]) == 4  # no digest known: all handed over
    assert second.unchanged_pages == 1
    assert second.digests == first.digests  # every page's digest, skipped or not


def test_a_stopped_fetch_reads_no_further_page() -> None:
    stop = threading.Event()
    stop.set()
    requests: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request.url.path)
        return one_per_page(request)

    names = fetch_names(scripted(handler), page_size=1, stop=stop)
    # the page in flight of each collection, no other
    assert requests == [ORGANIZATIONS_PATH, AGENTS_PATH, MANAGEMENT_AGENTS_PATH]
    assert (names.organizations, names.agents, names.pages) == ([], [], 0)


def read_names_in_a_reader(client: VspcClient, room: int) -> tuple[reader.Inbox, Any]:
    """The names read as a sync reads them: by a reader thread into a channel of the inbox."""
    inbox = reader.Inbox()
    channel = inbox.channel(room)
    work = partial(reader.read_names, client, channel, page_size=1, concurrency=1, known={})
    return inbox, reader.start("names", channel, work)


def test_an_unexpected_error_in_the_fetch_reaches_the_loader() -> None:
    def broken(request: httpx.Request) -> httpx.Response:
        raise ZeroDivisionError("a bug, not a console answer")

    inbox, thread = read_names_in_a_reader(scripted(broken), NAME_PAGES_WAITING)
    thread.join(5)
    item = inbox.get()
    assert isinstance(item, ReadFailed) and item.collection == "names"
    assert isinstance(item.error, ZeroDivisionError) and "a bug" in str(item.error)


def many_pages(requests: list[str]) -> Any:
    """40 organizations and 40 agents, one per page, counting the requests served."""

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request.url.path)
        offset = int(request.url.params["offset"])
        uid = f"00000000-0000-4000-8000-{offset:012d}"
        data = [{"instanceUid": uid, "name": f"n{offset}"}] if offset < 40 else []
        paging = {"total": 40, "count": len(data), "offset": offset}
        return httpx.Response(200, json={"meta": {"pagingInfo": paging}, "data": data})

    return handler


def test_the_fetch_reads_only_a_few_pages_ahead_of_the_loader() -> None:
    """Memory stays flat: the reader waits for the loader instead of holding every name."""
    requests: list[str] = []
    inbox, thread = read_names_in_a_reader(scripted(many_pages(requests)), 3)
    consumed: list[tuple[str, str | None]] = []
    ahead: list[int] = []
    summary: Names | None = None
    while summary is None:
        item = inbox.get()
        if not consumed:
            time.sleep(0.5)  # time enough to read all 123 pages, were nothing holding it back
        if isinstance(item, NamesRead):
            summary = item.names
            continue
        assert isinstance(item, PageRead)
        ahead.append(len(requests) - len(consumed))
        consumed.extend(
            (
                item.collection,
                getattr(r, "name", None) or getattr(r, "computer_name", None) or r.host_name,
            )
            for r in item.records
        )
    thread.join(5)
    assert summary.complete == {"organizations", "agents", "management_agents"}
    assert (summary.pages, summary.organizations, summary.agents) == (123, None, None)
    assert consumed[:80] == [("organizations", f"n{i}") for i in range(40)] + [
        ("agents", f"n{i}") for i in range(40)
    ]
    # the channel (3), the page the thread holds while waiting, the pager's page in hand, and
    # the empty last page of each collection before (no row to consume)
    assert max(ahead) <= 3 + 2 + 1
    assert len(requests) == 123


def test_stop_releases_a_fetch_waiting_for_room_in_the_channel() -> None:
    requests: list[str] = []
    inbox, thread = read_names_in_a_reader(scripted(many_pages(requests)), 2)
    deadline = time.monotonic() + 5
    while len(requests) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)  # the thread is now blocked on the full channel
    served = len(requests)
    assert served <= 2 + 2
    inbox.stop()
    thread.join(timeout=2)
    assert not thread.is_alive()
    assert len(requests) == served


def paths_of_a_sync(settings: Any, engine: Engine) -> tuple[RunResult, list[str]]:
    """Run a sync through an httpx client that records the path of every request, in order."""
    paths: list[str] = []
    http = httpx.Client(
        base_url=settings.vspc_url,
        event_hooks={"request": [lambda request: paths.append(request.url.path)]},
    )
    with http:
        result = run_once(settings, engine=engine, http=http, sleep=no_sleep)
    return result, paths


def test_names_are_read_once_the_first_job_page_came_back(
    fresh_db: Engine, settings: Any, simulator: Simulator
) -> None:
    jobs = "/api/v3/infrastructure/backupAgents/windows/jobs"
    result, paths = paths_of_a_sync(settings.model_copy(update={"vspc_page_size": 10}), fresh_db)
    assert result.status == "success" and result.inserted == 60
    assert paths[0] == jobs
    assert paths.count(ORGANIZATIONS_PATH) >= 1 and paths.count(AGENTS_PATH) >= 1
    platforms = {jobs.replace("windows", p) for p in ("windows", "linux", "mac")}
    assert set(paths) == platforms | {
        ORGANIZATIONS_PATH,
        AGENTS_PATH,
        MANAGEMENT_AGENTS_PATH,
        RESTORE_POINTS.path,
    }
    # a console that refuses every platform's jobs sends the run home before any name is
    # asked for
    for path in ("jobs", "linux_jobs", "mac_jobs"):
        simulator.faults.add("403", path=path, times=None)
    failed, paths = paths_of_a_sync(settings, fresh_db)
    assert failed.status == "failed" and "403" in (failed.error or "")
    assert sorted(paths) == sorted(platforms)


def test_names_known_from_the_last_read_are_read_while_the_merge_runs(
    fresh_db: Engine, settings: Any, simulator: Simulator
) -> None:
    """Once a complete read left page digests, the names wait for the job pages: beside them
    they competed for the same cores; during the merge only PostgreSQL works."""
    jobs = "/api/v3/infrastructure/backupAgents/windows/jobs"
    small = settings.model_copy(update={"vspc_page_size": 10})
    assert paths_of_a_sync(small, fresh_db)[0].status == "success"
    org_uid = simulator.organizations()[0]["instanceUid"]
    simulator.mutate_organization(org_uid, name="Renamed GmbH")
    result, paths = paths_of_a_sync(small, fresh_db)
    assert result.status == "success" and result.error is None
    last_job_page = max(i for i, p in enumerate(paths) if p == jobs)
    names = [i for i, p in enumerate(paths) if p in (ORGANIZATIONS_PATH, AGENTS_PATH)]
    assert paths.count(jobs) >= 5 and len(names) >= 2  # 42 Windows jobs, pages of 10
    assert min(names) > last_job_page
    with fresh_db.connect() as conn:  # the changed page was staged after the merge, and written
        name = conn.execute(
            text("SELECT name FROM vspc.organizations WHERE instance_uid = :u"), {"u": org_uid}
        ).scalar_one()
    assert name == "Renamed GmbH"
