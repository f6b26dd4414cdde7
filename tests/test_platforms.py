"""Every platform end to end: Windows, Linux and Mac jobs from their own collections, each with
its own completeness and deletions; names and agent health from the endpoints that have them.

The simulator over loopback HTTP, a real PostgreSQL, ``run_once``.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine, text

from etl.pipeline import RunResult, run_once
from etl.simulator import Simulator, SimulatorServer
from etl.transform import parse_timestamp
from tests.conftest import make_settings, no_sleep

SYSTEM_TYPES = {"windows": "Windows", "linux": "Linux", "mac": "Mac"}
UNIX_TARGETS = {"BackupRepository", "CloudRepository", "LocalFolder", "SharedFolder", "Unknown"}


@pytest.fixture
def console() -> Simulator:
    return Simulator(jobs=120, seed=21, api_keys=("platforms-key",), delete_rate=0, add_rate=0)


@pytest.fixture
def console_server(console: Simulator) -> Any:
    with SimulatorServer(console, host="127.0.0.1", port=0) as server:
        yield server


def settings_for(database_url: Any, server: SimulatorServer, **env: Any) -> Any:
    environ = {"VSPC_API_KEY": "platforms-key", "VSPC_SOURCE": "platforms", **env}
    return make_settings(database_url, None, VSPC_URL=server.url, **environ)


def sync(settings: Any, engine: Engine) -> RunResult:
    return run_once(settings, engine=engine, sleep=no_sleep)


def live_by_type(engine: Engine) -> dict[str, set[str]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT system_type, instance_uid::text FROM vspc.backup_agent_jobs "
                "WHERE deleted_at IS NULL"
            )
        ).all()
    found: dict[str, set[str]] = {}
    for system_type, uid in rows:
        found.setdefault(system_type, set()).add(uid)
    return found


def truth_by_type(console: Simulator) -> dict[str, set[str]]:
    return {
        SYSTEM_TYPES[p]: {j["instanceUid"].lower() for j in console.jobs(p)}
        for p in ("windows", "linux", "mac")
    }


def run_error(engine: Engine, run_id: int) -> str | None:
    with engine.connect() as conn:
        return conn.execute(
            text("SELECT error FROM vspc.etl_runs WHERE run_id = :r"), {"r": run_id}
        ).scalar_one()


def test_three_platforms_land_with_their_system_type(
    fresh_db: Engine, database_url: Any, console: Simulator, console_server: SimulatorServer
) -> None:
    result = sync(settings_for(database_url, console_server), fresh_db)
    assert result.status == "success" and result.complete is True
    truth = truth_by_type(console)
    assert all(truth[t] for t in truth)  # every platform has jobs
    assert live_by_type(fresh_db) == truth
    assert result.inserted == sum(len(uids) for uids in truth.values())
    with fresh_db.connect() as conn:
        unix = conn.execute(
            text(
                "SELECT schedule_events, target_type, raw FROM vspc.backup_agent_jobs "
                "WHERE system_type IN ('Linux', 'Mac')"
            )
        ).all()
        versions = conn.execute(
            text(
                "SELECT count(*) FILTER (WHERE s.system_type = j.system_type), count(*) "
                "FROM vspc.backup_agent_job_snapshots s JOIN vspc.backup_agent_jobs j "
                "USING (instance_uid)"
            )
        ).one()
    assert unix and all(events is None for events, _, _ in unix)
    # The detailed enum, spelled as the specification spells it, whatever the console sent.
    assert {target for _, target, _ in unix} <= UNIX_TARGETS
    assert any(raw["targetType"] != target for _, target, raw in unix)
    assert versions[0] == versions[1] == result.inserted


def test_platforms_setting_reads_only_those(
    fresh_db: Engine, database_url: Any, console: Simulator, console_server: SimulatorServer
) -> None:
    settings = settings_for(database_url, console_server, VSPC_PLATFORMS="linux, Mac")
    result = sync(settings, fresh_db)
    assert result.status == "success" and result.complete is True
    truth = truth_by_type(console)
    assert live_by_type(fresh_db) == {"Linux": truth["Linux"], "Mac": truth["Mac"]}
    assert console.stats.snapshot()["requests"].get("jobs", 0) == 0


@pytest.mark.parametrize("status", ["404", "403"])
def test_a_refused_platform_is_skipped_and_keeps_its_jobs(
    fresh_db: Engine,
    database_url: Any,
    console: Simulator,
    console_server: SimulatorServer,
    status: str,
) -> None:
    settings = settings_for(database_url, console_server)
    assert sync(settings, fresh_db).status == "success"
    before = live_by_type(fresh_db)
    gone = sorted(before["Windows"])[0]
    console.delete_job(gone)
    console.faults.add(status, path="linux_jobs", times=None)
    result = sync(settings, fresh_db)
    assert result.status == "success"
    assert result.complete is False  # one platform was not read
    error = run_error(fresh_db, result.run_id) or ""
    assert error.startswith("Linux jobs were skipped, none of them deleted or changed: ")
    assert f"({status})" in error or f"HTTP {status}" in error
    after = live_by_type(fresh_db)
    assert after["Linux"] == before["Linux"]  # none of the refused platform's jobs deleted
    assert after["Windows"] == before["Windows"] - {gone}  # the others' deletions still apply
    assert result.deleted == 1


def test_another_failure_of_a_job_collection_fails_the_run(
    fresh_db: Engine, database_url: Any, console: Simulator, console_server: SimulatorServer
) -> None:
    settings = settings_for(database_url, console_server, VSPC_MAX_ATTEMPTS=1)
    console.faults.add("400", path="mac_jobs", times=None)
    result = sync(settings, fresh_db)
    assert result.status == "failed"
    assert "HTTP 400" in (result.error or "")
    with fresh_db.connect() as conn:
        counts = conn.execute(
            text(
                "SELECT (SELECT count(*) FROM vspc.backup_agent_jobs),"
                " (SELECT count(*) FROM vspc.backup_agent_job_snapshots),"
                " (SELECT count(*) FROM vspc.backup_agents),"
                " (SELECT count(*) FROM vspc.management_agents)"
            )
        ).one()
    assert tuple(counts) == (0, 0, 0, 0)  # nothing of it committed


def test_a_deletion_in_one_platform_does_not_depend_on_another(
    fresh_db: Engine, database_url: Any, console: Simulator, console_server: SimulatorServer
) -> None:
    settings = settings_for(database_url, console_server, VSPC_MAX_PASSES=1)
    assert sync(settings, fresh_db).status == "success"
    before = live_by_type(fresh_db)
    mac_gone = sorted(before["Mac"])[0]
    linux_gone = sorted(before["Linux"])[0]
    console.delete_job(mac_gone)
    console.delete_job(linux_gone)
    # The Linux read cannot be verified complete (its console under-reports its total): its
    # missing job stays; the Mac read is complete, and its missing job is deleted.
    console.faults.add("total_zero", path="linux_jobs", times=None)
    result = sync(settings, fresh_db)
    assert result.status == "success"
    after = live_by_type(fresh_db)
    assert after["Mac"] == before["Mac"] - {mac_gone}
    assert after["Linux"] == before["Linux"]
    assert after["Windows"] == before["Windows"]
    assert result.deleted == 1
    error = run_error(fresh_db, result.run_id) or ""
    assert error.startswith("Linux deletions not applied: 1 live Linux job(s) were not in the")


def test_the_ratio_guard_holds_per_platform(
    fresh_db: Engine, database_url: Any, console: Simulator, console_server: SimulatorServer
) -> None:
    settings = settings_for(database_url, console_server, VSPC_MAX_DELETE_RATIO="0.3")
    assert sync(settings, fresh_db).status == "success"
    before = live_by_type(fresh_db)
    # Half of the Mac jobs: beyond the ratio for Mac, though a small share of all jobs.
    mac = sorted(before["Mac"])
    for uid in mac[: len(mac) // 2 + 1]:
        console.delete_job(uid)
    windows_gone = sorted(before["Windows"])[0]
    console.delete_job(windows_gone)
    assert (len(mac) // 2 + 2) / sum(len(u) for u in before.values()) < 0.3
    result = sync(settings, fresh_db)
    assert result.status == "success"
    after = live_by_type(fresh_db)
    assert after["Mac"] == before["Mac"]  # withheld
    assert after["Windows"] == before["Windows"] - {windows_gone}  # applied
    assert result.deleted == 1
    error = run_error(fresh_db, result.run_id) or ""
    assert error.startswith(f"Mac deletions withheld: {len(mac) // 2 + 1} of {len(mac)} live Mac")


def test_names_and_agent_health_come_from_the_right_endpoints(
    fresh_db: Engine, database_url: Any, console: Simulator, console_server: SimulatorServer
) -> None:
    # /backupAgents/windows serves the vendor's shape: no name there.
    windows_agents = console.world.rows("agents")
    assert windows_agents and all("name" not in a for a in windows_agents)
    result = sync(settings_for(database_url, console_server), fresh_db)
    assert result.status == "success" and result.error is None
    agents = {a["instanceUid"]: a for a in console.world.rows("backup_agents")}
    managers = {m["instanceUid"]: m for m in console.world.rows("management_agents")}
    with fresh_db.connect() as conn:
        stored = {
            str(r.instance_uid): r
            for r in conn.execute(
                text(
                    "SELECT instance_uid, computer_name, agent_platform, management_agent_uid, "
                    "status, version, operation_mode FROM vspc.backup_agents"
                )
            )
        }
        health = {
            str(r.instance_uid): r
            for r in conn.execute(
                text(
                    "SELECT instance_uid, host_name, friendly_name, connection_status, status, "
                    "last_heartbeat_at, version, organization_uid, location_uid "
                    "FROM vspc.management_agents"
                )
            )
        }
        current = conn.execute(
            text(
                "SELECT c.system_type, c.computer_name, c.agent_connection_status, "
                "c.agent_last_heartbeat_at, j.backup_agent_uid::text AS agent "
                "FROM vspc.job_sla_current c JOIN vspc.backup_agent_jobs j USING (instance_uid)"
            )
        ).all()
    assert set(stored) == set(agents)
    for uid, agent in agents.items():
        row = stored[uid]
        assert row.computer_name == agent["name"]
        assert row.agent_platform == agent["agentPlatform"]
        assert str(row.management_agent_uid) == agent["managementAgentUid"]
        assert row.status == agent["status"] and row.version == agent["version"]
        assert row.operation_mode == agent["operationMode"]
    assert set(health) == set(managers)
    for uid, manager in managers.items():
        row = health[uid]
        assert row.host_name == manager["hostName"]
        assert row.friendly_name == manager["friendlyName"]
        assert row.connection_status == manager["connectionStatus"]
        assert row.status == manager["status"] and row.version == manager["version"]
        assert row.last_heartbeat_at == parse_timestamp(manager["lastHeartbeatTime"])
    assert {r.system_type for r in current} == {"Windows", "Linux", "Mac"}
    for row in current:
        agent = agents[row.agent]
        manager = managers[agent["managementAgentUid"]]
        assert row.computer_name == agent["name"] is not None
        assert row.agent_connection_status == manager["connectionStatus"]
        assert row.agent_last_heartbeat_at == health[agent["managementAgentUid"]].last_heartbeat_at


@pytest.mark.parametrize("path", ["backup_agents", "management_agents"])
def test_a_refused_secondary_collection_only_warns(
    fresh_db: Engine,
    database_url: Any,
    console: Simulator,
    console_server: SimulatorServer,
    path: str,
) -> None:
    console.faults.add("403", path=path, times=None)
    result = sync(settings_for(database_url, console_server), fresh_db)
    assert result.status == "success" and result.complete is True
    what = "computer names" if path == "backup_agents" else "agent health"
    assert (result.error or "").startswith(f"{what} (")
    assert "(403)" in (result.error or "")
    table = {"backup_agents": "backup_agents", "management_agents": "management_agents"}[path]
    other = "management_agents" if path == "backup_agents" else "backup_agents"
    with fresh_db.connect() as conn:
        refused = conn.execute(text(f"SELECT count(*) FROM vspc.{table}")).scalar_one()
        kept = conn.execute(text(f"SELECT count(*) FROM vspc.{other}")).scalar_one()
        jobs = conn.execute(text("SELECT count(*) FROM vspc.backup_agent_jobs")).scalar_one()
    assert refused == 0 and kept > 0
    assert jobs == sum(len(u) for u in truth_by_type(console).values())
