"""The VSPC simulator, over real HTTP on 127.0.0.1: what a client of the console would see."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from etl.simulator import ABSENT, Simulator, SimulatorServer
from etl.simulator.app import encode_json
from etl.simulator.cli import simulate

JOBS = "/api/v3/infrastructure/backupAgents/windows/jobs"
API_KEY = {"Authorization": "Bearer sim-api-key"}
RUNNING = {"running", "starting", "stopping"}
# Enum values as docs/vspc-api.md spells them (kept here, not imported: a second source).
SPEC_ENUMS = {
    "status": "None Success Warning Failed Running Starting Stopping Unknown",
    "operationMode": "Server Workstation UnLicensed Unknown",
    "backupMode": "EntireComputer Volume File Unknown",
    "targetType": "Local Cloud Unknown",
    "scheduleType": "NotScheduled Daily Monthly Periodically Continuously Unknown",
    "backupPolicyAssignStatus": (
        "Unknown Applying Assigned Unassigned Custom Deleting FailedToApply Outdated Warning"
    ),
}
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6,7})?[+-]\d\d:\d\d")

WINDOWS = ("windows",)  # the Windows collection alone: what these tests read


def http(**kwargs: Any) -> httpx.Client:
    # Plain HTTP: verify=False spares building an SSL context (0.1 s per client).
    return httpx.Client(verify=False, **{"timeout": 5, **kwargs})


@pytest.fixture
def sim() -> Simulator:
    return Simulator(platforms=WINDOWS, jobs=120, seed=7)


@pytest.fixture
def server(sim: Simulator) -> Any:
    with SimulatorServer(sim) as running:
        yield running


@pytest.fixture
def client(server: SimulatorServer) -> Any:
    with http(base_url=server.url, headers=API_KEY) as api:
        yield api


def page(client: httpx.Client, **params: Any) -> dict[str, Any]:
    response = client.get(JOBS, params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def uids(body: dict[str, Any]) -> list[str]:
    return [job["instanceUid"] for job in body["data"]]


def error_of(response: httpx.Response) -> dict[str, Any]:
    (error,) = response.json()["errors"]
    assert error["code"] == response.status_code
    return dict(error)


def instant(text: str) -> datetime:
    # fromisoformat in 3.11 takes at most 6 fractional digits
    return datetime.fromisoformat(re.sub(r"(\.\d{6})\d", r"\1", text))


def password_grant(client: httpx.Client, user: str = "admin", password: str = "sim-password"):
    return client.post(
        "/api/v3/token", data={"grant_type": "password", "username": user, "password": password}
    )


# ------------------------------------------------------------------ paging and queries
def test_envelope_headers_and_totals(client: httpx.Client) -> None:
    response = client.get(JOBS, params={"limit": 50})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    assert int(response.headers["content-length"]) == len(response.content)
    body = response.json()
    assert list(body) == ["meta", "data", "errors"]
    assert body["errors"] is None
    assert body["meta"] == {"pagingInfo": {"total": 120, "count": 50, "offset": 0}}


def test_paging_walks_creation_order_which_is_not_uid_order(
    client: httpx.Client, sim: Simulator
) -> None:
    pages = [page(client, limit=50, offset=offset) for offset in (0, 50, 100, 150)]
    assert [p["meta"]["pagingInfo"]["count"] for p in pages] == [50, 50, 20, 0]
    assert {p["meta"]["pagingInfo"]["total"] for p in pages} == {120}
    seen = [uid for p in pages for uid in uids(p)]
    assert seen == [job["instanceUid"] for job in sim.jobs()]
    assert seen != sorted(seen)


def test_default_limit_is_100_and_large_limits_are_capped(
    client: httpx.Client, sim: Simulator
) -> None:
    assert page(client)["meta"]["pagingInfo"]["count"] == 100
    sim.max_page_size = 25
    assert page(client, limit=1000)["meta"]["pagingInfo"]["count"] == 25


@pytest.mark.parametrize(
    "params",
    [{"limit": "0"}, {"limit": "-5"}, {"limit": "ten"}, {"offset": "-1"}, {"offset": "1.5"}],
)
def test_invalid_paging_is_a_logical_400(client: httpx.Client, params: dict[str, str]) -> None:
    response = client.get(JOBS, params=params)
    assert response.status_code == 400
    assert error_of(response)["type"] == "logical"


@pytest.mark.parametrize("direction", ["ascending", "descending"])
def test_sort_by_instance_uid(client: httpx.Client, direction: str) -> None:
    sort = json.dumps([{"property": "instanceUid", "direction": direction}])
    got = uids(page(client, limit=500, sort=sort))
    assert got == sorted(got, reverse=direction == "descending")
    assert len(got) == 120


def test_sort_by_last_run_compares_instants_with_nulls_first(client: httpx.Client) -> None:
    sort = json.dumps([{"property": "lastRun", "direction": "ascending"}])
    runs = [job["lastRun"] for job in page(client, limit=500, sort=sort)["data"]]
    nulls = runs.count(None)
    assert nulls > 0
    assert runs[:nulls] == [None] * nulls
    instants = [instant(run) for run in runs[nulls:]]
    assert instants == sorted(instants)
    assert runs[nulls:] != sorted(runs[nulls:])  # the text order differs: mixed offsets


def test_sort_by_status_then_name(client: httpx.Client) -> None:
    sort = [{"property": "status"}, {"property": "name", "direction": "descending"}]
    jobs = page(client, limit=500, sort=json.dumps(sort))["data"]
    keys = [(j["status"].lower(), (j["name"] or "").casefold()) for j in jobs]
    statuses = [status for status, _ in keys]
    assert statuses == sorted(statuses)
    for status in set(statuses):
        names = [name for s, name in keys if s == status]
        assert names == sorted(names, reverse=True)


@pytest.mark.parametrize(
    "sort",
    [
        '[{"property": "nope"}]',
        '[{"property": "name", "direction": "up"}]',
        '{"property": "name"}',
        "not json",
    ],
)
def test_bad_sort_is_a_logical_400(client: httpx.Client, sort: str) -> None:
    response = client.get(JOBS, params={"sort": sort})
    assert response.status_code == 400
    assert error_of(response)["type"] == "logical"


def test_filter_equals_matches_enums_case_insensitively(
    client: httpx.Client, sim: Simulator
) -> None:
    flt = json.dumps([{"property": "status", "operation": "equals", "value": "Failed"}])
    body = page(client, limit=500, filter=flt)
    expected = [j["instanceUid"] for j in sim.jobs() if j["status"].lower() == "failed"]
    assert uids(body) == expected
    assert body["meta"]["pagingInfo"]["total"] == len(expected) > 1
    assert {j["status"] for j in body["data"]} == {"Failed", "failed"}


def test_filter_not_equals_in_and_nested_logic(client: httpx.Client, sim: Simulator) -> None:
    truth = sim.jobs()
    org = truth[0]["organizationUid"]
    not_equals = [{"property": "organizationUid", "operation": "notEquals", "value": org}]
    assert uids(page(client, limit=500, filter=json.dumps(not_equals))) == [
        j["instanceUid"] for j in truth if j["organizationUid"] != org
    ]
    among = [{"property": "backupMode", "operation": "in", "value": ["file", "Volume"]}]
    assert uids(page(client, limit=500, filter=json.dumps(among))) == [
        j["instanceUid"] for j in truth if j["backupMode"].lower() in ("file", "volume")
    ]
    nested = [
        {
            "operation": "or",
            "items": [
                {"property": "isEnabled", "operation": "equals", "value": False},
                {"property": "targetType", "operation": "equals", "value": "cloud"},
            ],
        }
    ]
    assert uids(page(client, limit=500, filter=json.dumps(nested))) == [
        j["instanceUid"] for j in truth if not j["isEnabled"] or j["targetType"].lower() == "cloud"
    ]


@pytest.mark.parametrize(
    "flt",
    [
        [{"property": "name", "operation": "like", "value": "x"}],
        [{"property": "noSuchField", "operation": "equals", "value": "x"}],
        [{"property": "name", "operation": "equals"}],
        [{"property": "status", "operation": "in", "value": "Failed"}],
        [{"operation": "and", "items": []}],
    ],
)
def test_unsupported_filter_is_a_400_not_ignored(client: httpx.Client, flt: Any) -> None:
    response = client.get(JOBS, params={"filter": json.dumps(flt)})
    assert response.status_code == 400
    assert error_of(response)["type"] == "logical"


def test_select_returns_only_the_selected_fields(client: httpx.Client, sim: Simulator) -> None:
    select = json.dumps([{"propertyPath": "name"}, {"propertyPath": "instanceUid"}])
    data = page(client, limit=5, select=select)["data"]
    assert data == [{"name": j["name"], "instanceUid": j["instanceUid"]} for j in sim.jobs()[:5]]


def test_agents_and_organizations_are_consistent_with_jobs(
    client: httpx.Client, sim: Simulator
) -> None:
    agents = client.get("/api/v3/infrastructure/backupAgents", params={"limit": 500})
    orgs = client.get("/api/v3/organizations", params={"limit": 500})
    assert agents.status_code == orgs.status_code == 200
    agent_by_uid = {a["instanceUid"]: a for a in agents.json()["data"]}
    org_by_uid = {o["instanceUid"]: o for o in orgs.json()["data"]}
    assert orgs.json()["meta"]["pagingInfo"] == {"total": 6, "count": 6, "offset": 0}
    assert {o["type"] for o in org_by_uid.values()} == {"Provider", "Reseller", "Company"}
    for job in sim.jobs():
        agent = agent_by_uid[job["backupAgentUid"]]
        assert agent["organizationUid"] == job["organizationUid"] in org_by_uid
    per_agent: dict[str, int] = {}
    for job in sim.jobs():
        per_agent[job["backupAgentUid"]] = per_agent.get(job["backupAgentUid"], 0) + 1
    assert set(per_agent.values()) <= {1, 2, 3}


# ------------------------------------------------------------------ the data
def test_same_seed_same_data_other_seed_other_data() -> None:
    assert (
        Simulator(platforms=WINDOWS, jobs=40, seed=5).jobs()
        == Simulator(platforms=WINDOWS, jobs=40, seed=5).jobs()
    )
    assert (
        Simulator(platforms=WINDOWS, jobs=40, seed=5).jobs()
        != Simulator(platforms=WINDOWS, jobs=40, seed=6).jobs()
    )


def test_every_enum_value_of_the_spec_appears() -> None:
    jobs = Simulator(platforms=WINDOWS, jobs=300, seed=3).jobs()
    for name, spelled in SPEC_ENUMS.items():
        seen = {job[name].lower() for job in jobs if job.get(name) is not None}
        assert seen == {value.lower() for value in spelled.split()}, name
    events = {event.lower() for job in jobs for event in job["scheduleEvents"]}
    assert events == {"atlock", "atlogoff", "whenbackuptargetisconnected", "unknown"}


def test_wire_format_traps(client: httpx.Client) -> None:
    response = client.get(JOBS, params={"limit": 500})
    jobs = response.json()["data"]
    stamps = [j[f] for j in jobs for f in ("lastRun", "lastEndTime", "nextRun") if j.get(f)]
    assert all(TIMESTAMP.fullmatch(s) for s in stamps)
    assert any(re.search(r"\.\d{7}[+-]", s) for s in stamps)
    assert any(re.search(r":\d\d[+-]\d\d:\d\d$", s) for s in stamps)  # no fraction at all
    offsets = {s[-6:] for s in stamps}
    assert {"+00:00", "+03:00", "-05:00", "+05:30"} <= offsets
    statuses = {j["status"] for j in jobs}
    assert {"success", "Success"} <= statuses
    assert any(
        j["operationMode"] == "unlicensed"
        for j in Simulator(platforms=WINDOWS, jobs=300, seed=3).jobs()
    )
    destinations = {j["destination"] for j in jobs}
    assert "C:\\VeeamBackup" in destinations
    assert '"destination":"C:\\\\VeeamBackup"' in response.text  # escaped on the wire
    assert any(d and d.startswith("\\\\") for d in destinations)
    assert any("\\" in (j["lastModifiedBy"] or "") for j in jobs)
    assert sum("description" not in j for j in jobs) == 12  # 3.5 consoles omit 3.6+ fields
    assert any(set(j) - {*jobs[0], "description", "backupPolicyName"} for j in jobs)
    assert any("\r\n" in (j.get("backupPolicyFailureMessage") or "") for j in jobs)
    assert any((j["backedUpSize"] or 0) > 2**31 for j in jobs)
    assert any(not (j["name"] or "").isascii() for j in jobs)
    never = [j for j in jobs if j["status"].lower() == "none"]
    assert never
    assert all(j["lastRun"] is j["lastEndTime"] is j["freeSpace"] is None for j in never)


# ------------------------------------------------------------------ authentication
@pytest.mark.parametrize("header", [None, "Bearer nope", "Basic c2ltLWFwaS1rZXk=", "Bearer"])
def test_missing_or_bad_bearer_is_a_security_401(server: SimulatorServer, header: Any) -> None:
    headers = {"Authorization": header} if header else {}
    with http() as anonymous:
        response = anonymous.get(server.url + JOBS, headers=headers)
    assert response.status_code == 401
    assert error_of(response)["type"] == "security"


def test_password_grant_and_refresh_rotation(server: SimulatorServer) -> None:
    with http(base_url=server.url) as api:
        grant = password_grant(api).json()
        assert grant["token_type"] == "bearer"
        assert grant["expires_in"] == 3600
        assert grant["mfa_token"] is None and grant["encrypted_code"] is None
        bearer = {"Authorization": f"Bearer {grant['access_token']}"}
        assert api.get(JOBS, headers=bearer).status_code == 200
        refreshed = api.post(
            "/api/v3/token",
            data={"grant_type": "refresh_token", "refresh_token": grant["refresh_token"]},
        )
        assert refreshed.status_code == 200
        pair = refreshed.json()
        assert pair["access_token"] != grant["access_token"]
        assert pair["refresh_token"] != grant["refresh_token"]
        new_bearer = {"Authorization": f"Bearer {pair['access_token']}"}
        assert api.get(JOBS, headers=new_bearer).status_code == 200
        reused = api.post(
            "/api/v3/token",
            data={"grant_type": "refresh_token", "refresh_token": grant["refresh_token"]},
        )
        assert reused.status_code == 400
        assert reused.json()["error"] == "invalid_grant"


def test_access_token_expires_in_real_time(server: SimulatorServer, sim: Simulator) -> None:
    sim.token_ttl = 0.3
    with http(base_url=server.url) as api:
        grant = password_grant(api).json()
        assert grant["expires_in"] == 0.3
        bearer = {"Authorization": f"Bearer {grant['access_token']}"}
        assert api.get(JOBS, headers=bearer).status_code == 200
        time.sleep(0.4)
        expired = api.get(JOBS, headers=bearer)
        assert expired.status_code == 401
        assert "expired" in error_of(expired)["message"]


def test_a_session_ends_after_token_uses_requests(server: SimulatorServer, sim: Simulator) -> None:
    sim.token_uses = 2
    with http(base_url=server.url) as api:
        grant = password_grant(api).json()
        bearer = {"Authorization": f"Bearer {grant['access_token']}"}
        assert [api.get(JOBS, headers=bearer).status_code for _ in range(3)] == [200, 200, 401]
        ended = api.get(JOBS, headers=bearer)
        assert ended.status_code == 401
        assert error_of(ended) == {
            "message": "The access token is invalid or was revoked.",
            "type": "security",
            "code": 401,
        }
        refreshed = api.post(
            "/api/v3/token",
            data={"grant_type": "refresh_token", "refresh_token": grant["refresh_token"]},
        ).json()  # the refresh token outlives its session
        renewed = {"Authorization": f"Bearer {refreshed['access_token']}"}
        assert [api.get(JOBS, headers=renewed).status_code for _ in range(3)] == [200, 200, 401]
        assert api.get(JOBS, headers=API_KEY).status_code == 200  # keys have no session


def test_one_session_per_user_ends_the_older_session(
    server: SimulatorServer, sim: Simulator
) -> None:
    sim.one_session_per_user = True
    with http(base_url=server.url) as api:
        first = {"Authorization": f"Bearer {password_grant(api).json()['access_token']}"}
        assert api.get(JOBS, headers=first).status_code == 200
        second = {"Authorization": f"Bearer {password_grant(api).json()['access_token']}"}
        assert api.get(JOBS, headers=first).status_code == 401
        assert api.get(JOBS, headers=second).status_code == 200


def test_revoking_refresh_tokens_forces_a_new_login(
    server: SimulatorServer, sim: Simulator
) -> None:
    with http(base_url=server.url) as api:
        grant = password_grant(api).json()
        sim.revoke_tokens(refresh=True)
        refused = api.post(
            "/api/v3/token",
            data={"grant_type": "refresh_token", "refresh_token": grant["refresh_token"]},
        )
        assert (refused.status_code, refused.json()["error"]) == (400, "invalid_grant")
        assert password_grant(api).status_code == 200


def test_token_uses_must_be_positive() -> None:
    with pytest.raises(ValueError, match="token_uses must be at least 1"):
        Simulator(platforms=WINDOWS, jobs=1, token_uses=0)


def test_mfa_user_gets_an_mfa_token_instead_of_an_access_token(client: httpx.Client) -> None:
    grant = password_grant(client, "mfa-user", "whatever")
    assert grant.status_code == 200
    assert grant.json()["access_token"] is None
    assert grant.json()["mfa_token"]


@pytest.mark.parametrize(
    "form",
    [
        {"grant_type": "password", "username": "admin", "password": "wrong"},
        {"grant_type": "password", "username": "ghost", "password": "sim-password"},
        {"grant_type": "refresh_token", "refresh_token": "never-issued"},
    ],
)
def test_bad_credentials_are_invalid_grant(client: httpx.Client, form: dict[str, str]) -> None:
    response = client.post("/api/v3/token", data=form)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"
    assert response.json()["error_description"]


def test_token_wants_a_form_and_a_known_grant(client: httpx.Client) -> None:
    as_json = client.post("/api/v3/token", json={"grant_type": "password"})
    assert (as_json.status_code, as_json.json()["error"]) == (400, "invalid_request")
    other = client.post("/api/v3/token", data={"grant_type": "client_credentials"})
    assert (other.status_code, other.json()["error"]) == (400, "unsupported_grant_type")


def test_unknown_path_is_404_and_wrong_method_is_405(client: httpx.Client) -> None:
    for path in ("/api/v3/nothing", "/api/v2/organizations", "/"):
        response = client.get(path)
        assert response.status_code == 404
        assert error_of(response)["type"] == "logical"
    assert client.post(JOBS).status_code == 405
    wrong = client.get("/api/v3/token")
    assert wrong.status_code == 405
    assert wrong.headers["allow"] == "POST"


# ------------------------------------------------------------------ faults
def test_fault_401_revokes_every_issued_token(client: httpx.Client, sim: Simulator) -> None:
    bearer = {"Authorization": f"Bearer {password_grant(client).json()['access_token']}"}
    sim.faults.add("401")
    response = client.get(JOBS, headers=bearer)
    assert response.status_code == 401
    assert error_of(response)["type"] == "security"
    assert client.get(JOBS, headers=bearer).status_code == 401  # revoked, not just refused
    assert client.get(JOBS).status_code == 200  # the API key still works


@pytest.mark.parametrize("header", [False, True])
def test_fault_429_puts_the_wait_in_the_body(
    client: httpx.Client, sim: Simulator, header: bool
) -> None:
    sim.faults.add("429", retry_after=7, header=header)
    response = client.get(JOBS)
    assert response.status_code == 429
    assert error_of(response) | {"message": ""} == {
        "message": "",
        "type": "transport",
        "code": 429,
        "retryAfter": 7,
    }
    assert response.headers.get("retry-after") == ("7" if header else None)
    assert client.get(JOBS).status_code == 200


@pytest.mark.parametrize(
    ("kind", "status", "error_type"),
    [
        ("520", 520, "unspecified"),
        ("400", 400, "logical"),
        ("403", 403, "security"),
        ("404", 404, "logical"),
    ],
)
def test_fault_with_an_error_body(
    client: httpx.Client, sim: Simulator, kind: str, status: int, error_type: str
) -> None:
    sim.faults.add(kind)
    response = client.get(JOBS)
    assert response.status_code == status
    assert error_of(response)["type"] == error_type


@pytest.mark.parametrize("kind", ["500", "503"])
def test_fault_proxy_5xx_has_no_json_body(client: httpx.Client, sim: Simulator, kind: str) -> None:
    sim.faults.add(kind)
    response = client.get(JOBS)
    assert response.status_code == int(kind)
    assert response.headers["content-type"] == "text/html"
    with pytest.raises(json.JSONDecodeError):
        response.json()
    assert client.get(JOBS).status_code == 200


def test_fault_after_and_times_count_matching_requests(
    client: httpx.Client, sim: Simulator
) -> None:
    sim.faults.add("520", after=1, times=2)
    client.post("/api/v3/token", data={"grant_type": "password"})  # not a jobs request
    assert [client.get(JOBS).status_code for _ in range(4)] == [200, 520, 520, 200]
    sim.faults.add("429", times=None)
    assert [client.get(JOBS).status_code for _ in range(3)] == [429, 429, 429]
    sim.faults.clear()
    assert client.get(JOBS).status_code == 200


def test_fault_path_selects_the_endpoint(client: httpx.Client, sim: Simulator) -> None:
    sim.faults.add("429", path="token")
    assert client.get(JOBS).status_code == 200
    assert password_grant(client).status_code == 429
    sim.faults.add("short", path="any")  # paging faults never count a token request
    assert password_grant(client).status_code == 200
    assert page(client, limit=10)["meta"]["pagingInfo"]["count"] == 5


def test_fault_reset_breaks_the_connection_mid_body(client: httpx.Client, sim: Simulator) -> None:
    sim.faults.add("reset")
    with pytest.raises(httpx.TransportError):
        client.get(JOBS)
    assert client.get(JOBS).status_code == 200


def test_fault_hang_times_out_and_does_not_block_shutdown(sim: Simulator) -> None:
    sim.faults.add("hang", seconds=30)
    with SimulatorServer(sim) as server:
        with pytest.raises(httpx.ReadTimeout), http(timeout=0.3) as impatient:
            impatient.get(server.url + JOBS, headers=API_KEY)
        started = time.monotonic()
    assert time.monotonic() - started < 2


def test_fault_slow_trickles_a_valid_body(client: httpx.Client, sim: Simulator) -> None:
    expected = page(client, limit=20)
    sim.faults.add("slow", seconds=0.5)
    started = time.monotonic()
    assert page(client, limit=20) == expected
    assert time.monotonic() - started >= 0.45


def test_fault_bad_offset_reserves_page_one(client: httpx.Client, sim: Simulator) -> None:
    first = page(client, limit=30)
    sim.faults.add("bad_offset")
    body = page(client, limit=30, offset=60)
    assert body["meta"]["pagingInfo"]["offset"] == 0
    assert body["data"] == first["data"]


def test_fault_shift_insert_repeats_an_item(client: httpx.Client, sim: Simulator) -> None:
    sim.faults.add("shift", after=1, op="insert")
    first, second = page(client, limit=50), page(client, limit=50, offset=50)
    assert second["meta"]["pagingInfo"]["total"] == 121
    assert uids(second)[0] == uids(first)[-1]
    ordered = sort_by_uid(client)
    assert ordered[0] == sim.jobs()[0]["instanceUid"]  # it sorts first by uid too


def sort_by_uid(client: httpx.Client) -> list[str]:
    return uids(page(client, limit=500, sort='[{"property":"instanceUid"}]'))


def test_fault_shift_delete_skips_an_item(client: httpx.Client, sim: Simulator) -> None:
    truth = [job["instanceUid"] for job in sim.jobs()]
    sim.faults.add("shift", after=1, op="delete")
    first, second = page(client, limit=50), page(client, limit=50, offset=50)
    assert second["meta"]["pagingInfo"]["total"] == 119
    assert uids(first) + uids(second) == truth[:50] + truth[51:101]  # truth[50] never served


def test_fault_short_and_total_zero(client: httpx.Client, sim: Simulator) -> None:
    sim.faults.add("short")
    assert page(client, limit=50)["meta"]["pagingInfo"] == {"total": 120, "count": 25, "offset": 0}
    sim.faults.add("short", count=3)
    assert page(client, limit=50)["meta"]["pagingInfo"]["count"] == 3
    sim.faults.add("total_zero")
    body = page(client, limit=50)
    assert body["meta"]["pagingInfo"] == {"total": 0, "count": 50, "offset": 0}
    assert len(body["data"]) == 50


def test_fault_bad_json(client: httpx.Client, sim: Simulator) -> None:
    sim.faults.add("bad_json")
    response = client.get(JOBS)
    assert response.status_code == 200
    assert int(response.headers["content-length"]) == len(response.content)
    with pytest.raises(json.JSONDecodeError):
        response.json()


def test_fault_202_async_action_then_result(client: httpx.Client, sim: Simulator) -> None:
    direct = page(client, limit=10, offset=5)
    sim.faults.add("202", polls=2)
    accepted = client.get(JOBS, params={"limit": 10, "offset": 5})
    assert accepted.status_code == 202
    location = accepted.headers["location"]
    assert re.fullmatch(
        re.escape(str(client.base_url)) + r"/api/v3/asyncActions/[0-9a-f-]{36}", location
    )
    sim.mutate(direct["data"][0]["instanceUid"], name="renamed afterwards")
    statuses = [client.get(location).json()["data"]["status"] for _ in range(3)]
    assert statuses == ["running", "running", "succeed"]
    action = client.get(location).json()["data"]
    assert set(action) == {"id", "initiatorUid", "actionName", "status"}
    result = client.get(location + "/result")
    assert result.status_code == 200
    assert result.json() == direct  # computed at the time of the original request


@pytest.mark.parametrize("final", ["failed", "canceled"])
def test_fault_202_that_fails_has_no_result(
    client: httpx.Client, sim: Simulator, final: str
) -> None:
    sim.faults.add("202", polls=0, final=final)
    location = client.get(JOBS).headers["location"]
    assert client.get(location).json()["data"]["status"] == final
    assert client.get(location + "/result").status_code == 400


def test_async_actions_need_auth_and_a_known_id(client: httpx.Client, sim: Simulator) -> None:
    sim.faults.add("202")
    location = client.get(JOBS).headers["location"]
    assert client.get(location, headers={"Authorization": ""}).status_code == 401
    unknown = client.get("/api/v3/asyncActions/00000000-0000-0000-0000-000000000000")
    assert unknown.status_code == 404
    assert error_of(unknown)["type"] == "logical"


def statuses_under_random_faults(seed: int, rate: float) -> tuple[list[int], Simulator]:
    sim = Simulator(platforms=WINDOWS, jobs=10, seed=1)
    sim.faults.random(rate, kinds=("429", "520", "503", "bad_json"), seed=seed)
    with SimulatorServer(sim) as server, http(headers=API_KEY) as api:
        return [api.get(server.url + JOBS).status_code for _ in range(30)], sim


def test_random_faults_are_deterministic_for_a_seed() -> None:
    first, sim = statuses_under_random_faults(seed=4, rate=0.4)
    again, _ = statuses_under_random_faults(seed=4, rate=0.4)
    other, _ = statuses_under_random_faults(seed=5, rate=0.4)
    assert first == again != other
    assert {429, 520, 503} <= set(first)
    assert sum(sim.stats.faults.values()) == 30 - first.count(200) + sim.stats.faults["bad_json"]
    assert sim.stats.requests["jobs"] == 30
    assert statuses_under_random_faults(seed=4, rate=0)[0] == [200] * 30


def test_fault_parameters_are_checked() -> None:
    plan = Simulator(platforms=WINDOWS, jobs=1).faults
    with pytest.raises(ValueError, match="unknown fault kind"):
        plan.add("418")
    with pytest.raises(ValueError, match="retry_afte"):
        plan.add("429", retry_afte=3)
    with pytest.raises(ValueError, match="path"):
        plan.add("429", path="jobz")


def test_latency_is_added_to_jobs_pages(client: httpx.Client, sim: Simulator) -> None:
    sim.latency = 0.2
    started = time.monotonic()
    page(client, limit=5)
    assert time.monotonic() - started >= 0.2


# ------------------------------------------------------------------ time passing
def test_advance_runs_jobs_and_adds_and_deletes_them(client: httpx.Client) -> None:
    sim = Simulator(
        platforms=("windows",), jobs=120, seed=7, add_rate=0.05, delete_rate=0.05, change_rate=0.2
    )
    before = {job["instanceUid"]: job for job in sim.jobs()}
    summary = sim.advance(72)
    after = {job["instanceUid"]: job for job in sim.jobs()}
    assert summary.now == sim.now == datetime.fromisoformat("2026-11-04T00:00:00+00:00")
    assert summary.added and summary.deleted and summary.changed
    assert set(summary.added) == set(after) - set(before)
    assert set(summary.deleted) == set(before) - set(after)
    assert set(summary.changed) == {u for u in set(before) & set(after) if before[u] != after[u]}
    daily = [
        job
        for uid, job in after.items()
        if uid in before and job["isEnabled"] and job["scheduleType"].lower() == "daily"
    ]
    assert daily
    for job in daily:
        assert instant(job["lastRun"]) > sim.now - timedelta(days=1)
        assert instant(job["nextRun"]) > sim.now
        status = job["status"].lower()
        if status == "success":
            assert job["failureMessage"] is None
        if status == "failed":
            assert job["failureMessage"]
    assert any(before[u]["name"] != after[u]["name"] for u in summary.changed)


def test_advance_survives_values_a_test_broke_on_purpose(sim: Simulator) -> None:
    for job in sim.jobs()[:20]:
        sim.mutate(job["instanceUid"], restorePoints="four", backedUpSize=None, avgDuration=True)
    sim.add_job(instanceUid="seed-like", status="success", backupAgentUid="unknown-agent")
    assert sim.advance(24 * 10).now == sim.now


def test_advance_is_deterministic() -> None:
    one, two = (
        Simulator(platforms=WINDOWS, jobs=60, seed=9),
        Simulator(platforms=WINDOWS, jobs=60, seed=9),
    )
    for hours in (1, 24, 240):
        assert one.advance(hours) == two.advance(hours)
    assert one.jobs() == two.jobs()


def test_running_job_completes_on_next_advance(sim: Simulator) -> None:
    running = [j["instanceUid"] for j in sim.jobs() if j["status"].lower() in RUNNING]
    assert running
    sim.advance(0.01)
    for job in sim.jobs():
        if job["instanceUid"] in running:
            assert job["status"].lower() in {"success", "warning", "failed"}
            assert instant(job["lastEndTime"]) >= instant(job["lastRun"])


def test_helpers_change_what_is_served(client: httpx.Client, sim: Simulator) -> None:
    uid = sim.jobs()[0]["instanceUid"]
    sim.mutate(uid, name="Büro \\ changed", description=ABSENT)
    served = page(client, limit=1)["data"][0]
    assert served["name"] == "Büro \\ changed"
    assert "description" not in served
    added = sim.add_job()
    body = page(client, limit=500)
    assert body["meta"]["pagingInfo"]["total"] == 121
    assert body["data"][-1] == added
    assert added["status"] in ("None", "none") and added["lastRun"] is None
    sim.delete_job(uid)
    assert uid not in uids(page(client, limit=500))
    odd = sim.add_job(instanceUid="not-a-uuid", name="odd")  # not a whole record: generated
    assert odd["instanceUid"] == "not-a-uuid" and odd["name"] == "odd" and "status" in odd
    sim.faults.add("shift", op="insert")
    assert page(client, limit=1)["meta"]["pagingInfo"]["total"] == 122


def test_a_whole_record_is_stored_as_given_and_survives_time() -> None:
    sim = Simulator(platforms=WINDOWS, jobs=0, seed=1)
    vendor_example = {
        "instanceUid": "724111ac-15f5-bf02-604d-20862fbafece",
        "status": "success",
        "destination": "C:\\VeeamBackup",
        "lastRun": "2020-03-01T11:35:00+03:00",
        "nextRun": "2020-03-02T11:30:00+03:00",
        "scheduleType": "daily",
        "isEnabled": True,
        "scheduleEvents": [],
    }
    assert sim.add_job(**vendor_example) == vendor_example
    with SimulatorServer(sim) as server, http(headers=API_KEY) as api:
        assert api.get(server.url + JOBS).json()["data"] == [vendor_example]
    with pytest.raises(ValueError, match="exists"):
        sim.add_job(**vendor_example)
    sim.advance(24)
    (job,) = sim.jobs()
    assert job["lastRun"].endswith("+03:00") and job["lastRun"] > "2026-10-31"
    assert job["status"].islower()


def test_issued_tokens_lists_every_secret_handed_out(client: httpx.Client, sim: Simulator) -> None:
    grant = password_grant(client).json()
    mfa = password_grant(client, "mfa-user", "x").json()
    assert sim.issued_tokens() == [grant["access_token"], grant["refresh_token"], mfa["mfa_token"]]


# ------------------------------------------------------------------ control and CLI
def test_control_endpoints(server: SimulatorServer, sim: Simulator) -> None:
    with http(base_url=server.url) as api:
        advanced = api.post("/_sim/advance", params={"hours": 24})
        assert advanced.status_code == 200
        assert advanced.json()["now"] == sim.now.isoformat() == "2026-11-02T00:00:00+00:00"
        assert api.get("/_sim/jobs").json()["data"] == sim.jobs()
        assert api.post("/_sim/faults", json={"kind": "429", "retry_after": 3}).status_code == 200
        assert error_of(api.get(JOBS, headers=API_KEY))["retryAfter"] == 3
        api.post("/_sim/faults", json={"kind": "520", "times": None})
        api.post("/_sim/faults", json={"clear": True})
        assert api.get(JOBS, headers=API_KEY).status_code == 200
        api.post("/_sim/faults", json={"random": {"rate": 1, "kinds": ["503"], "seed": 1}})
        assert api.get(JOBS, headers=API_KEY).status_code == 503
        assert api.post("/_sim/faults", json={"kind": "nope"}).status_code == 400
        stats = api.get("/_sim/stats").json()
        assert stats["requests"]["jobs"] == 3
        assert stats["faults"] == {"429": 1, "503": 1}


@contextmanager
def simulate_command(*args: str) -> Iterator[str]:
    """``vspc-etl simulate ARGS`` on a free port, in a process of its own: yields the line it
    prints first, then ends it with SIGTERM, which must make it exit 0."""
    process = subprocess.Popen(
        [sys.executable, "-m", "etl.simulator.cli", "--port", "0", *args],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        yield process.stdout.readline()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=5) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def served_at(line: str) -> str:
    """The VSPC_URL the simulator's first line gives."""
    url = re.search(r"VSPC_URL=(\S+)", line)
    assert url
    return url.group(1)


def test_simulate_command_serves_until_sigterm() -> None:
    with simulate_command("--jobs", "10") as line:  # 7 Windows
        assert "VSPC_API_KEY=sim-api-key" in line and "VSPC_PASSWORD=sim-password" in line
        with http(headers=API_KEY) as api:
            response = api.get(served_at(line) + JOBS)
        assert response.json()["meta"]["pagingInfo"]["total"] == 7  # 7 + 2 Linux + 1 Mac


def test_simulate_command_starts_its_clock_where_asked() -> None:
    """``--start`` sets the console's clock: its newest restore point and run lie just before
    it; a value without an offset is refused, naming the option."""
    points = "/api/v3/protectedWorkloads/computersManagedByConsole/restorePoints"
    newest = json.dumps([{"property": "creationDate", "direction": "descending"}])
    with (
        simulate_command("--jobs", "10", "--start", "2025-03-10T12:00:00+01:00") as line,
        http(base_url=served_at(line), headers=API_KEY) as api,
    ):
        point = api.get(points, params={"limit": 1, "sort": newest}).json()["data"][0]
        runs = [job["lastRun"] for job in api.get(JOBS).json()["data"] if job["lastRun"]]
    start = datetime.fromisoformat("2025-03-10T11:00:00+00:00")
    created = datetime.fromisoformat(point["creationDate"])
    assert start - timedelta(days=2) < created <= start
    instants = [datetime.fromisoformat(r) for r in runs]
    assert instants and max(instants) <= start < max(instants) + timedelta(days=1)
    refused = CliRunner().invoke(simulate, ["--port", "0", "--start", "2025-03-10T12:00:00"])
    assert refused.exit_code == 2
    assert "--start" in refused.output and "with an offset" in refused.output


def test_simulate_command_ends_sessions_as_asked() -> None:
    with (
        simulate_command("--jobs", "3", "--token-uses", "1", "--one-session-per-user") as line,
        http(base_url=served_at(line)) as api,
    ):
        first = password_grant(api).json()["access_token"]
        second = password_grant(api).json()["access_token"]
        assert api.get(JOBS, headers={"Authorization": f"Bearer {first}"}).status_code == 401
        bearer = {"Authorization": f"Bearer {second}"}
        assert [api.get(JOBS, headers=bearer).status_code for _ in range(2)] == [200, 401]


def test_simulate_command_reports_a_taken_port() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(simulate, ["--port", str(port)])
    assert result.exit_code == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.output


def test_simulate_command_help_names_every_option() -> None:
    result = CliRunner().invoke(simulate, ["--help"])
    assert result.exit_code == 0
    for option in (
        "--host",
        "--port",
        "--jobs",
        "--seed",
        "--api-key",
        "--username",
        "--password",
        "--token-ttl",
        "--token-uses",
        "--one-session-per-user",
        "--fault-rate",
        "--advance-every",
        "--advance-hours",
        "--latency",
        "--refuse",
        "--start",
    ):
        assert option in result.output


def test_refused_prefixes_are_404_and_every_other_path_is_served() -> None:
    sim = Simulator(
        platforms=WINDOWS,
        jobs=5,
        refuse=("/api/v3/infrastructure/managementAgents", "/api/v3/protectedWorkloads/"),
    )
    with SimulatorServer(sim) as running, http(base_url=running.url, headers=API_KEY) as api:
        refused = [
            "/api/v3/infrastructure/managementAgents",
            "/api/v3/infrastructure/MANAGEMENTAGENTS/",
            "/api/v3/protectedWorkloads/computersManagedByConsole/restorePoints",
        ]
        for path in refused:
            response = api.get(path)
            assert response.status_code == 404, path
            assert error_of(response)["type"] == "logical"
        served = [JOBS, "/api/v3/infrastructure/backupAgents", "/api/v3/organizations"]
        assert [api.get(path).status_code for path in served] == [200, 200, 200]
        assert api.get(JOBS).json()["meta"]["pagingInfo"]["total"] == 5
    requests = sim.stats.snapshot()["requests"]
    assert requests["refused"] == 3
    assert "management_agents" not in requests and "restore_points" not in requests


def test_simulate_command_refuses_the_prefixes_given() -> None:
    with (
        simulate_command(
            "--jobs", "3", "--platforms", "windows",
            "--refuse", "/api/v3/infrastructure/managementAgents",
            "--refuse", "/api/v3/organizations",
        ) as line,
        http(base_url=served_at(line), headers=API_KEY) as api,
    ):  # fmt: skip
        assert api.get("/api/v3/infrastructure/managementAgents").status_code == 404
        assert api.get("/api/v3/organizations").status_code == 404
        jobs = api.get(JOBS)
        assert jobs.status_code == 200
        assert jobs.json()["meta"]["pagingInfo"]["total"] == 3


def test_a_page_holding_a_float_is_written_as_the_standard_library_writes_it(
    sim: Simulator, client: httpx.Client
) -> None:
    """Whether a page holds a float is learnt from the rows it serves (kept for a second read
    of the same listing), or from the selected properties only."""
    sim.world.rows("jobs")[3]["share"] = float("nan")  # orjson would write null
    select = json.dumps([{"propertyPath": "instanceUid"}])
    for _ in range(2):
        assert '"share":NaN' in client.get(JOBS, params={"limit": 5}).text
        assert "share" not in client.get(JOBS, params={"limit": 5, "offset": 5}).text
        chosen = client.get(JOBS, params={"limit": 5, "select": select}).json()["data"]
        assert [set(row) for row in chosen] == [{"instanceUid"}] * 5


@pytest.mark.parametrize(
    "payload",
    [
        {
            "data": Simulator(platforms=WINDOWS, jobs=50, seed=3).jobs(),
            "meta": {"pagingInfo": {"total": 50}},
        },
        {"data": [{"x": float("nan"), "y": float("-inf"), "z": 0.1}]},  # floats: stdlib
        {"data": [{"n": 2**64, "m": -(2**70)}]},  # beyond 64 bits: stdlib
        {"data": [{"nested": [{"deep": [1, 2.5]}]}]},
        {1: "non-string key"},
        {"s": 'é\u2028\x01"\\\t\n', "t": ("a", None, True)},
    ],
)
def test_pages_encode_exactly_as_the_standard_library_would(payload: Any) -> None:
    expected = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    assert encode_json(payload) == expected


@pytest.mark.parametrize(
    "nodes",
    [
        [("greaterThanOrEqual", 0)],
        [("greaterThan", 0)],
        [("lessThan", 0)],
        [("lessThanOrEqual", 0)],
        [("greaterThanOrEqual", -30), ("lessThan", 30)],
        [("greaterThan", 10_000)],
    ],
)
def test_a_creation_date_window_is_what_the_filter_says(
    nodes: list[tuple[str, int]],
) -> None:
    from etl.simulator.query import arrange, parse_query
    from etl.simulator.wire import RESTORE_POINT_FIELDS, TIMESTAMP_FIELDS
    from etl.transform import parse_timestamp

    sim = Simulator(jobs=30, seed=4)
    sim.advance(30)
    rows = sim.world.restore_points()
    middle = parse_timestamp(rows[len(rows) // 2]["creationDate"])
    ops = {
        "greaterThanOrEqual": lambda a, b: a >= b,
        "greaterThan": lambda a, b: a > b,
        "lessThan": lambda a, b: a < b,
        "lessThanOrEqual": lambda a, b: a <= b,
    }
    filters = [
        {
            "property": "creationDate",
            "operation": op,
            "value": (middle + timedelta(hours=h)).isoformat(),
        }
        for op, h in nodes
    ]
    expected = [
        r
        for r in rows
        if all(
            ops[op](parse_timestamp(r["creationDate"]), middle + timedelta(hours=h))
            for op, h in nodes
        )
    ]
    for sort in ([], [{"property": "creationDate", "direction": "ascending"}]):
        query = parse_query(
            {"filter": [json.dumps(filters)], "sort": [json.dumps(sort)]},
            fields=RESTORE_POINT_FIELDS,
            max_page_size=500,
        )
        assert arrange(rows, query, TIMESTAMP_FIELDS) == expected
    assert 0 < len(expected) < len(rows) or nodes == [("greaterThan", 10_000)]


def test_restore_points_by_uid_and_by_window_are_the_same_with_the_index() -> None:
    """The index the server keeps per state of the world answers as the plain scan does:
    an ``in`` on ``instanceUid`` (any case, unknown uids, with another condition, under a
    logical operator) and a creation window."""
    from etl.simulator.query import Index, arrange, parse_query
    from etl.simulator.wire import RESTORE_POINT_FIELDS, TIMESTAMP_FIELDS

    sim = Simulator(jobs=30, seed=4)
    sim.advance(30)
    rows = sim.world.restore_points()
    index = Index(rows)
    picked = [rows[i]["instanceUid"] for i in (0, 7, len(rows) // 2, len(rows) - 1)]
    wanted = [picked[0].upper(), *picked[1:], "00000000-0000-0000-0000-00000000abcd"]
    by_uid = {"property": "instanceUid", "operation": "in", "value": wanted}
    middle = rows[len(rows) // 2]["creationDate"]
    before = {"property": "creationDate", "operation": "lessThan", "value": middle}
    cases = [
        ([by_uid], [r for r in rows if r["instanceUid"] in picked]),
        ([by_uid, before], [r for r in rows if r["instanceUid"] in picked[:2]]),
        ([{"operation": "or", "items": [by_uid]}], [r for r in rows if r["instanceUid"] in picked]),
        ([{**before, "operation": "greaterThanOrEqual"}], rows[len(rows) // 2 :]),
    ]
    for filters, expected in cases:
        query = parse_query(
            {"filter": [json.dumps(filters)]}, fields=RESTORE_POINT_FIELDS, max_page_size=500
        )
        assert arrange(rows, query, TIMESTAMP_FIELDS, index) == expected
        assert arrange(rows, query, TIMESTAMP_FIELDS) == expected
    assert len([r for r in rows if r["instanceUid"] in picked]) == 4
