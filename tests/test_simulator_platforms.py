"""The simulator as a real console serves it beyond Windows jobs: Linux and Mac jobs, the
agents (with and without names), management agents and restore points, their consistency
over virtual time, and the same faults as every other collection, over HTTP on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from etl.simulator import Simulator, SimulatorServer
from etl.simulator.cli import simulate
from etl.simulator.data import World, job_counts
from tests.test_simulator import served_at, simulate_command

API = "/api/v3"
API_KEY = {"Authorization": "Bearer sim-api-key"}
PATHS = {
    "jobs": "/infrastructure/backupAgents/windows/jobs",
    "linux_jobs": "/infrastructure/backupAgents/linux/jobs",
    "mac_jobs": "/infrastructure/backupAgents/mac/jobs",
    "agents": "/infrastructure/backupAgents/windows",
    "linux_agents": "/infrastructure/backupAgents/linux",
    "mac_agents": "/infrastructure/backupAgents/mac",
    "backup_agents": "/infrastructure/backupAgents",
    "management_agents": "/infrastructure/managementAgents",
    "restore_points": "/protectedWorkloads/computersManagedByConsole/restorePoints",
}
NEW = [name for name in PATHS if name not in ("jobs", "agents")]


def words(text: str) -> set[str]:
    return set(text.split())


# The vendor's models (VSPC REST API 3.6/3.7), written out here as the second source.
WINDOWS_JOB_KEYS = words(
    """instanceUid backupAgentUid organizationUid name description configUid backupPolicyUid
    backupPolicyName backupPolicyAssignStatus backupPolicyFailureMessage status operationMode
    destination restorePoints lastRun lastEndTime lastDuration nextRun avgDuration backupMode
    targetType isEnabled scheduleType scheduleEvents lastModifiedDate lastModifiedBy
    failureMessage backedUpSize freeSpace"""
)
UNIX_JOB_KEYS = WINDOWS_JOB_KEYS - {"scheduleEvents"}
OLD_CONSOLE_ABSENT = {"description", "backupPolicyName", "backupPolicyAssignStatus"}
DETAILED_TARGETS = {"BackupRepository", "CloudRepository", "LocalFolder", "SharedFolder", "Unknown"}
BACKUP_AGENT_KEYS = words(
    """instanceUid agentPlatform status managementAgentStatus managementAgentUid siteUid
    organizationUid name operationMode platform version versionStatus activationTime
    managementMode installationType totalJobsCount runningJobsCount successJobsCount
    guiMode"""
)
MANAGEMENT_AGENT_KEYS = words(
    """instanceUid locationUid organizationUid hostName friendlyName lastHeartbeatTime version
    discoveryTime tag status type computerInfo connectionStatus isRebootRequired
    connectionAccount versionStatus role"""
)
COMPUTER_INFO_KEYS = words(
    """uniqueUid biosUuid hostName fqdn guestOs guestOsType guestOsVersion guestOsSku
    platformType ipAddresses macAddresses applications"""
)
RESTORE_POINT_KEYS = words(
    """instanceUid backupAgentUid jobUid backedupItems destination size incrementRawDataSize
    sourceSize creationDate"""
)
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6,7})?[+-]\d\d:\d\d")
EVERY = ("windows", "linux", "mac")


def instant(text: str) -> datetime:
    # fromisoformat in 3.11 takes at most 6 fractional digits
    return datetime.fromisoformat(re.sub(r"(\.\d{6})\d", r"\1", text))


def http(**kwargs: Any) -> httpx.Client:
    return httpx.Client(verify=False, **{"timeout": 5, **kwargs})


@pytest.fixture
def sim() -> Simulator:
    return Simulator(jobs=300, seed=5, platforms=EVERY, outage_rate=0.2)


@pytest.fixture
def server(sim: Simulator) -> Any:
    with SimulatorServer(sim) as running:
        yield running


@pytest.fixture
def client(server: SimulatorServer) -> Any:
    with http(base_url=server.url + API, headers=API_KEY) as api:
        yield api


def read_all(client: httpx.Client, name: str, **params: Any) -> list[dict[str, Any]]:
    """Every item of a collection, paged 100 at a time."""
    items: list[dict[str, Any]] = []
    while True:
        response = client.get(PATHS[name], params={"limit": 100, "offset": len(items), **params})
        assert response.status_code == 200, response.text
        body = response.json()
        items += body["data"]
        if len(items) >= body["meta"]["pagingInfo"]["total"]:
            return items


# ------------------------------------------------------------------ compatibility
def world_fingerprint(seed: int, jobs: int) -> str:
    """A digest of everything a Windows-only World serves along a fixed series of calls."""
    world = World(jobs=jobs, seed=seed, platforms=("windows",))
    digest = hashlib.sha256()

    def snap() -> None:
        # the agents as the generator drew them (what /backupAgents/windows served before it
        # followed the vendor)
        agents = [dict(a) for a in world._agents.values()]
        for rows in (world.jobs(), agents, world.organizations()):
            digest.update(json.dumps(rows, ensure_ascii=False).encode())
        digest.update(world.now.isoformat().encode())

    snap()
    for hours in (24, 6.5, 0.25, 72):
        digest.update(json.dumps(world.advance(hours).as_dict()).encode())
        snap()
    digest.update(json.dumps(world.touch(0.1)).encode())
    world.add_job()
    world.add_job(first=True)
    snap()
    world.advance(24 * 9)
    snap()
    return digest.hexdigest()


@pytest.mark.parametrize(
    ("seed", "jobs", "expected"),
    [
        # Computed with the simulator before it knew other platforms: a Windows-only World
        # must stay byte for byte what it was, for every test and benchmark built on it.
        (7, 120, "7b3f2178a213b04331d039109504f1329645c723030098aede7b7315fe1cfb73"),
        (20261101, 400, "49b798b4d9b9d7389a8aa43c5fc0bf5840545b3b0d92d2b6abd27029ebf2165f"),
    ],
)
def test_a_windows_only_world_is_the_one_it_always_was(seed: int, jobs: int, expected: str) -> None:
    assert world_fingerprint(seed, jobs) == expected


def test_other_platforms_do_not_change_the_windows_records_drawn_before_them() -> None:
    alone = World(jobs=100, seed=3, platforms=("windows",))
    mixed = World(jobs=100, seed=3, platforms=("linux",))
    assert mixed.jobs() == [] and alone.jobs("linux") == []
    assert mixed.organizations() == alone.organizations()  # same main stream, same order


def test_jobs_are_split_over_the_platforms_most_to_windows() -> None:
    assert job_counts(100, EVERY) == {"windows": 70, "linux": 20, "mac": 10}
    assert job_counts(7, ("linux", "mac")) == {"linux": 5, "mac": 2}
    world = World(jobs=100, seed=1, platforms=EVERY)
    assert [len(world.jobs(p)) for p in EVERY] == [70, 20, 10]


@pytest.mark.parametrize("platforms", [(), ("windows", "beos")])
def test_unknown_platforms_are_refused(platforms: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="platforms must be some of windows, linux, mac"):
        World(jobs=1, seed=1, platforms=platforms)


# ------------------------------------------------------------------ shapes
@pytest.mark.parametrize("platform", ["linux", "mac"])
def test_linux_and_mac_jobs_follow_their_own_contract(client: httpx.Client, platform: str) -> None:
    jobs = read_all(client, f"{platform}_jobs")
    assert len(jobs) == {"linux": 60, "mac": 30}[platform]
    for job in jobs:
        keys = set(job)
        assert "scheduleEvents" not in keys
        assert keys >= UNIX_JOB_KEYS - OLD_CONSOLE_ABSENT
        assert keys - UNIX_JOB_KEYS <= {"futureField", "immutability"}
        assert job["targetType"].casefold() in {t.casefold() for t in DETAILED_TARGETS}
        destination = job["destination"]
        if destination is not None and not destination.startswith(("Backup", "Cloud")):
            assert "\\" not in destination and destination.startswith(("/", "nfs01:", "smb://"))
    spelled = {job["targetType"] for job in jobs}
    assert {value.casefold() for value in spelled} <= {t.casefold() for t in DETAILED_TARGETS}
    assert spelled & DETAILED_TARGETS  # the specification's spelling appears
    assert any(value.islower() for value in spelled)  # and the casings consoles send
    assert sum(set(job) == UNIX_JOB_KEYS for job in jobs) > len(jobs) // 2


def test_every_detailed_target_type_appears_on_a_large_platform() -> None:
    jobs = World(jobs=250, seed=2, platforms=("linux",)).jobs("linux")
    assert {job["targetType"].casefold() for job in jobs} == {
        t.casefold() for t in DETAILED_TARGETS
    }


def test_backup_agents_serve_the_vendors_fields_for_every_computer(client: httpx.Client) -> None:
    agents = read_all(client, "backup_agents")
    jobs = [job for name in ("jobs", "linux_jobs", "mac_jobs") for job in read_all(client, name)]
    assert all(set(agent) == BACKUP_AGENT_KEYS for agent in agents)
    by_uid = {agent["instanceUid"]: agent for agent in agents}
    for name, platform in (("jobs", "Windows"), ("linux_jobs", "Linux"), ("mac_jobs", "Mac")):
        for job in read_all(client, name):
            assert by_uid[job["backupAgentUid"]]["agentPlatform"] == platform
            assert by_uid[job["backupAgentUid"]]["organizationUid"] == job["organizationUid"]
    counted = Counter(job["backupAgentUid"] for job in jobs)
    successes = Counter(
        job["backupAgentUid"] for job in jobs if job["status"].casefold() == "success"
    )
    for agent in agents:
        assert agent["totalJobsCount"] == counted[agent["instanceUid"]]
        assert agent["successJobsCount"] == successes[agent["instanceUid"]]
        assert agent["name"]
        assert TIMESTAMP.fullmatch(agent["activationTime"])
    assert {a["agentPlatform"] for a in agents} == {"Windows", "Linux", "Mac"}
    assert {a["status"] for a in agents} <= {"Active", "NotRunning", "Unknown"}
    assert {a["operationMode"] for a in agents} <= {"Server", "Workstation", "UnLicensed"}
    assert {a["guiMode"] for a in agents} <= {"Full", "ReadOnly", "Unknown"}


def test_windows_agents_are_served_as_the_vendor_serves_them_without_names(
    client: httpx.Client, sim: Simulator
) -> None:
    vendor = read_all(client, "agents")
    platforms = {a["instanceUid"]: a["agentPlatform"] for a in read_all(client, "backup_agents")}
    windows = [uid for uid, platform in platforms.items() if platform == "Windows"]
    assert vendor and sorted(a["instanceUid"] for a in vendor) == sorted(windows)
    assert all(set(a) == {"instanceUid", "managementAgentUid", "cbtDriverStatus"} for a in vendor)
    assert {a["cbtDriverStatus"] for a in vendor} <= {"Installed", "NotInstalled", "Error"}
    response = client.get(PATHS["agents"], params={"select": '[{"propertyPath":"name"}]'})
    assert response.status_code == 400  # the vendor has no such property there


@pytest.mark.parametrize("platform", ["linux", "mac"])
def test_linux_and_mac_agents_have_no_name(client: httpx.Client, platform: str) -> None:
    agents = read_all(client, f"{platform}_agents")
    assert agents and all(set(a) == {"instanceUid", "managementAgentUid"} for a in agents)
    platforms = {a["instanceUid"]: a["agentPlatform"] for a in read_all(client, "backup_agents")}
    assert {platforms[a["instanceUid"]] for a in agents} == {platform.capitalize()}


def test_management_agents_one_per_computer_and_a_few_without_one(
    client: httpx.Client, sim: Simulator
) -> None:
    sim.advance(48)  # some computers go offline
    managers = read_all(client, "management_agents")
    agents = read_all(client, "backup_agents")
    assert all(set(m) == MANAGEMENT_AGENT_KEYS for m in managers)
    assert all(set(m["computerInfo"]) == COMPUTER_INFO_KEYS for m in managers)
    by_uid = {m["instanceUid"]: m for m in managers}
    for agent in agents:
        manager = by_uid[agent["managementAgentUid"]]
        assert manager["hostName"] == agent["name"] == manager["computerInfo"]["hostName"]
        assert manager["organizationUid"] == agent["organizationUid"]
    lone = set(by_uid) - {agent["managementAgentUid"] for agent in agents}
    assert lone and len(managers) == len(agents) + len(lone)
    statuses = {m["connectionStatus"] for m in managers}
    assert statuses <= {"Online", "Inaccessible", "Rejected", "Unknown"}
    assert {"Online", "Inaccessible"} <= statuses
    per_org = {}
    for manager in managers:
        assert (
            per_org.setdefault(manager["organizationUid"], manager["locationUid"])
            == (manager["locationUid"])
        )
        assert TIMESTAMP.fullmatch(manager["lastHeartbeatTime"])


def test_restore_points_have_the_vendors_fields(client: httpx.Client, sim: Simulator) -> None:
    points = read_all(client, "restore_points")
    assert points == sim.world.restore_points()
    assert all(set(point) == RESTORE_POINT_KEYS for point in points)
    assert all(TIMESTAMP.fullmatch(point["creationDate"]) for point in points)
    assert all(point["size"] > 0 and point["sourceSize"] > 0 for point in points)
    assert len({point["instanceUid"] for point in points}) == len(points)
    created = [instant(point["creationDate"]) for point in points]
    assert created == sorted(created) and created[-1] <= sim.now
    assert any(point["jobUid"] is None for point in points)  # an agent's own job
    agents = {agent["instanceUid"] for agent in read_all(client, "backup_agents")}
    assert {point["backupAgentUid"] for point in points} <= agents


# ------------------------------------------------------------------ restore points over time
def points_by_job(world: World) -> tuple[Counter[str | None], dict[str, list[datetime]]]:
    listed = Counter(point["jobUid"] for point in world.restore_points())
    times: dict[str, list[datetime]] = {}
    for key, created in world.pending_points():
        times.setdefault(key, []).append(created)
    for point in world.restore_points():
        if point["jobUid"] is not None:
            times.setdefault(point["jobUid"], []).append(instant(point["creationDate"]))
    return listed, times


def check_points_agree_with_jobs(world: World) -> None:
    listed, times = points_by_job(world)
    pending = Counter(key for key, _ in world.pending_points())
    every = [job for platform in EVERY for job in world.jobs(platform)]
    for job in every:
        uid = job["instanceUid"]
        assert job["restorePoints"] == listed[uid] + pending[uid], uid
        status = job["status"].casefold()
        if status in ("success", "warning") and job["lastEndTime"]:
            assert instant(job["lastEndTime"]) == max(times[uid])  # made at the session's end
        elif status == "failed" and uid in times:
            assert instant(job["lastEndTime"]) not in times[uid]  # a failure makes none
    assert set(listed) - {None} <= {job["instanceUid"] for job in every}


def test_restore_points_follow_the_jobs_as_time_passes() -> None:
    world = World(jobs=300, seed=11, platforms=EVERY, outage_rate=0.1)
    check_points_agree_with_jobs(world)
    before = world.restore_points()
    assert len(before) > 2 * 300  # a new World already has history
    seen_late = False
    for hours in (6, 6, 12, 24, 1.5, 48):
        t0 = world.now
        old = {point["instanceUid"] for point in world.restore_points()}
        summary = world.advance(hours)
        check_points_agree_with_jobs(world)
        points = world.restore_points()
        assert not {p["jobUid"] for p in points} & set(summary.deleted)
        fresh = [p for p in points if p["instanceUid"] not in old]
        assert fresh and all(instant(p["creationDate"]) <= world.now for p in fresh)
        seen_late |= any(instant(p["creationDate"]) <= t0 for p in fresh)
    assert seen_late  # a point listed only after a listing that came after its creation


def test_retention_merges_the_oldest_points_away() -> None:
    world = World(jobs=60, seed=4, platforms=("linux",), change_rate=0, delete_rate=0)
    daily = {
        job["instanceUid"]
        for job in world.jobs("linux")
        if job["scheduleType"].casefold() == "daily" and job["isEnabled"]
    }
    first = {p["instanceUid"] for p in world.restore_points() if p["jobUid"] in daily}
    assert len(daily) > 5 and first
    world.advance(24 * 40)  # longer than any retention: every old point is merged away
    check_points_agree_with_jobs(world)  # the counter is the points listed or being indexed
    assert all(
        job["restorePoints"] > 0 for job in world.jobs("linux") if job["instanceUid"] in daily
    )
    now = {p["instanceUid"] for p in world.restore_points() if p["jobUid"] in daily}
    assert now and not first & now


def test_an_offline_computer_runs_no_jobs_and_stops_its_heartbeat() -> None:
    world = World(jobs=400, seed=9, platforms=EVERY, outage_rate=0.5)
    start = world.now
    world.advance(24)
    world.advance(24)
    managers = {m["instanceUid"]: m for m in world.rows("management_agents")}
    agents = world.rows("backup_agents")
    offline = [(a, world.computer_offline_since(a["instanceUid"])) for a in agents]
    offline = [(a, since) for a, since in offline if since is not None]
    assert offline and len(offline) < len(agents)
    points = world.restore_points() + [
        {"jobUid": key, "creationDate": created.isoformat()}
        for key, created in world.pending_points()
    ]
    jobs_of = {}
    for platform in EVERY:
        for job in world.jobs(platform):
            jobs_of.setdefault(job["backupAgentUid"], set()).add(job["instanceUid"])
    for agent, since in offline:
        assert since > start
        mine = jobs_of.get(agent["instanceUid"], set())
        assert not [p for p in points if p["jobUid"] in mine and instant(p["creationDate"]) > since]
        manager = managers[agent["managementAgentUid"]]
        if agent["status"] == "Unknown":  # the host is unreachable
            assert manager["connectionStatus"] == "Inaccessible"
            assert agent["managementAgentStatus"] == "Inaccessible"
            assert instant(manager["lastHeartbeatTime"]) <= since
        else:  # the agent's service stopped; the host still reports
            assert agent["status"] == "NotRunning"
            assert manager["connectionStatus"] == "Online"
    online = [a for a in agents if a["status"] == "Active"]
    for agent in online:
        beat = instant(managers[agent["managementAgentUid"]]["lastHeartbeatTime"])
        assert world.now - timedelta(seconds=60) < beat <= world.now


def test_heartbeats_move_with_time() -> None:
    world = World(jobs=40, seed=1, platforms=EVERY)
    before = {m["instanceUid"]: m["lastHeartbeatTime"] for m in world.rows("management_agents")}
    world.advance(3)
    after = world.rows("management_agents")
    online = [m for m in after if m["connectionStatus"] == "Online"]
    assert online
    for manager in online:
        assert instant(manager["lastHeartbeatTime"]) > instant(before[manager["instanceUid"]])
    for manager in after:
        if manager["connectionStatus"] != "Online":  # a lone agent that went silent long ago
            assert manager["lastHeartbeatTime"] == before[manager["instanceUid"]]


def test_deleting_a_job_takes_its_points_along() -> None:
    world = World(jobs=30, seed=2, platforms=("mac",))
    job = next(j for j in world.jobs("mac") if j["restorePoints"])
    world.delete_job(job["instanceUid"])
    assert job["instanceUid"] not in {p["jobUid"] for p in world.restore_points()}


# ------------------------------------------------------------------ queries
def test_restore_points_filter_and_sort_by_creation_date(
    client: httpx.Client, sim: Simulator
) -> None:
    truth = sim.world.restore_points()
    middle = truth[len(truth) // 2]["creationDate"]
    cut = instant(middle)

    def newer(operation: str) -> list[dict[str, Any]]:
        flt = [{"property": "creationDate", "operation": operation, "value": middle}]
        sort = [{"property": "creationDate", "direction": "descending"}]
        return read_all(client, "restore_points", filter=json.dumps(flt), sort=json.dumps(sort))

    strictly, inclusive = newer("greaterThan"), newer("greaterThanOrEqual")
    assert {p["instanceUid"] for p in strictly} == {
        p["instanceUid"] for p in truth if instant(p["creationDate"]) > cut
    }
    assert len(inclusive) == len(strictly) + sum(instant(p["creationDate"]) == cut for p in truth)
    created = [instant(p["creationDate"]) for p in inclusive]
    assert created == sorted(created, reverse=True) and created[-1] == cut


def test_new_collections_filter_and_select(client: httpx.Client) -> None:
    flt = json.dumps([{"property": "agentPlatform", "operation": "equals", "value": "linux"}])
    linux = read_all(client, "backup_agents", filter=flt)
    assert linux and {a["agentPlatform"] for a in linux} == {"Linux"}
    selected = client.get(
        PATHS["management_agents"],
        params={"select": '[{"propertyPath":"hostName"},{"propertyPath":"connectionStatus"}]'},
    ).json()["data"]
    assert selected and all(set(m) == {"hostName", "connectionStatus"} for m in selected)


# ------------------------------------------------------------------ faults
@pytest.mark.parametrize("name", NEW)
@pytest.mark.parametrize(
    ("kind", "status"), [("429", 429), ("520", 520), ("403", 403), ("404", 404), ("503", 503)]
)
def test_error_faults_on_every_new_collection(
    client: httpx.Client, sim: Simulator, name: str, kind: str, status: int
) -> None:
    sim.faults.add(kind, path=name)
    assert client.get(PATHS["jobs"]).status_code == 200  # another collection is untouched
    assert client.get(PATHS[name]).status_code == status
    assert client.get(PATHS[name]).status_code == 200


@pytest.mark.parametrize("name", NEW)
def test_401_202_and_paging_faults_on_every_new_collection(
    server: SimulatorServer, client: httpx.Client, sim: Simulator, name: str
) -> None:
    grant = client.post(
        "/token", data={"grant_type": "password", "username": "admin", "password": "sim-password"}
    ).json()
    bearer = {"Authorization": f"Bearer {grant['access_token']}"}
    sim.faults.add("401", path=name)
    assert client.get(PATHS[name], headers=bearer).status_code == 401
    assert client.get(PATHS[name], headers=bearer).status_code == 401  # the token was revoked

    direct = client.get(PATHS[name], params={"limit": 4}).json()
    sim.faults.add("202", path=name, polls=1)
    accepted = client.get(PATHS[name], params={"limit": 4})
    assert accepted.status_code == 202
    location = accepted.headers["location"].removeprefix(server.url + API)
    assert client.get(location).json()["data"]["status"] == "running"
    assert client.get(location).json()["data"]["status"] == "succeed"
    assert client.get(location + "/result").json() == direct

    total = direct["meta"]["pagingInfo"]["total"]
    sim.faults.add("short", path=name, count=1)
    assert client.get(PATHS[name], params={"limit": 4}).json()["meta"]["pagingInfo"] == {
        "total": total,
        "count": 1,
        "offset": 0,
    }
    sim.faults.add("total_zero", path=name)
    zero = client.get(PATHS[name], params={"limit": 4}).json()
    assert zero["meta"]["pagingInfo"]["total"] == 0 and len(zero["data"]) == 4
    sim.faults.add("bad_offset", path=name)
    again = client.get(PATHS[name], params={"limit": 4, "offset": 8}).json()
    assert again["meta"]["pagingInfo"]["offset"] == 0 and again["data"] == direct["data"]


@pytest.mark.parametrize("name", NEW)
def test_shift_moves_items_between_pages_of_every_new_collection(
    client: httpx.Client, sim: Simulator, name: str
) -> None:
    truth = [item["instanceUid"] for item in read_all(client, name)]
    sim.faults.add("shift", path=name, after=1, op="delete")
    first = client.get(PATHS[name], params={"limit": 5}).json()
    second = client.get(PATHS[name], params={"limit": 5, "offset": 5}).json()
    assert second["meta"]["pagingInfo"]["total"] == len(truth) - 1
    served = [item["instanceUid"] for item in first["data"] + second["data"]]
    assert served == truth[:5] + truth[6:11]  # truth[5] moved to page one: never served

    sim.faults.add("shift", path=name, op="insert")
    inserted = client.get(PATHS[name], params={"limit": 5}).json()
    assert inserted["meta"]["pagingInfo"]["total"] == len(truth)
    assert inserted["data"][0]["instanceUid"] not in truth  # a new item at the very front


def test_latency_is_added_to_every_answer(client: httpx.Client, sim: Simulator) -> None:
    sim.latency = 0.2
    for name in ("jobs", "linux_jobs", "mac_jobs", "backup_agents", "management_agents"):
        assert client.get(PATHS[name], params={"limit": 1}).elapsed >= timedelta(seconds=0.2)
    sim.latency = 0.0
    assert client.get(PATHS["backup_agents"]).elapsed < timedelta(seconds=0.2)


# ------------------------------------------------------------------ control and CLI
def test_control_endpoint_serves_each_platforms_truth(
    server: SimulatorServer, sim: Simulator
) -> None:
    with http(base_url=server.url) as api:
        assert api.get("/_sim/jobs", params={"platform": "mac"}).json()["data"] == sim.jobs("mac")
        assert api.get("/_sim/jobs", params={"platform": "beos"}).status_code == 400


def test_simulate_command_serves_the_platforms_asked_for() -> None:
    with simulate_command("--jobs", "20", "--platforms", "linux,Mac") as line:
        assert "20 jobs (linux,mac)" in line
        with http(base_url=served_at(line) + API, headers=API_KEY) as api:
            totals = {
                name: api.get(PATHS[name]).json()["meta"]["pagingInfo"]["total"]
                for name in ("jobs", "linux_jobs", "mac_jobs", "agents")
            }
        assert totals == {"jobs": 0, "linux_jobs": 14, "mac_jobs": 6, "agents": 0}


def test_simulate_command_refuses_an_unknown_platform() -> None:
    result = CliRunner().invoke(simulate, ["--platforms", "windows,beos"])
    assert result.exit_code == 2
    assert "beos is not a platform; use some of windows,linux,mac" in result.output


def test_simulate_command_help_names_the_new_options() -> None:
    result = CliRunner().invoke(simulate, ["--help"])
    assert result.exit_code == 0
    for option in ("--platforms", "--outage-rate"):
        assert option in result.output
    assert "--windows-agent-names" not in result.output  # /backupAgents/windows: no names
