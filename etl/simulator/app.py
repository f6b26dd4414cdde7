"""The simulated console itself: routing, authentication, async actions and faults, as a
function from :class:`Request` to :class:`Response`. :mod:`etl.simulator.server` only moves
bytes; everything a client can observe is decided here.
"""

from __future__ import annotations

import copy
import json
import secrets
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs

import orjson

from etl.simulator import wire
from etl.simulator.data import DEFAULT_START, AdvanceSummary, World
from etl.simulator.faults import Fault, FaultPlan
from etl.simulator.query import Index, Query, QueryError, arrange, parse_query, project
from etl.simulator.wire import TIMESTAMP_FIELDS

API_PREFIX = "/api/v3"
_ROUTES = {
    "/infrastructure/backupagents/windows/jobs": "jobs",
    "/infrastructure/backupagents/linux/jobs": "linux_jobs",
    "/infrastructure/backupagents/mac/jobs": "mac_jobs",
    "/infrastructure/backupagents/windows": "agents",
    "/infrastructure/backupagents/linux": "linux_agents",
    "/infrastructure/backupagents/mac": "mac_agents",
    "/infrastructure/backupagents": "backup_agents",
    "/infrastructure/managementagents": "management_agents",
    "/protectedworkloads/computersmanagedbyconsole/restorepoints": "restore_points",
    "/organizations": "organizations",
    "/token": "token",
}
_FIELDS: dict[str, tuple[str, ...]] = {
    "jobs": wire.JOB_FIELDS,
    "linux_jobs": wire.UNIX_JOB_FIELDS,
    "mac_jobs": wire.UNIX_JOB_FIELDS,
    "agents": wire.WINDOWS_AGENT_FIELDS,
    "linux_agents": wire.UNIX_AGENT_FIELDS,
    "mac_agents": wire.UNIX_AGENT_FIELDS,
    "backup_agents": wire.BACKUP_AGENT_FIELDS,
    "management_agents": wire.MANAGEMENT_AGENT_FIELDS,
    "restore_points": wire.RESTORE_POINT_FIELDS,
    "organizations": wire.ORGANIZATION_FIELDS,
}
_ACTION_NAMES = {
    "jobs": "GetWindowsBackupAgentJobs",
    "linux_jobs": "GetLinuxBackupAgentJobs",
    "mac_jobs": "GetMacBackupAgentJobs",
    "agents": "GetWindowsBackupAgents",
    "linux_agents": "GetLinuxBackupAgents",
    "mac_agents": "GetMacBackupAgents",
    "backup_agents": "GetBackupAgents",
    "management_agents": "GetManagementAgents",
    "restore_points": "GetProtectedComputersManagedByConsoleRestorePoints",
    "organizations": "GetOrganizations",
}
_ACTION_LIFETIME = 300.0  # seconds the console keeps an async result
_ERROR_KINDS = frozenset({"401", "429", "520", "500", "503", "400", "403", "404"})
JSON_TYPE = "application/json; charset=utf-8"


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: Mapping[str, list[str]] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)  # keys in lower case
    body: bytes = b""
    base_url: str = "http://127.0.0.1"


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = (("Content-Type", JSON_TYPE),)
    delay: float = 0.0  # seconds to wait before answering
    trickle: float = 0.0  # seconds over which the body is sent
    reset: bool = False  # send part of the body, then reset the connection


def json_response(
    status: int, payload: Any, *extra: tuple[str, str], floats: bool | None = None
) -> Response:
    """``floats``: whether the payload may hold a float, if the caller knows (see
    :func:`encode_json`)."""
    return Response(status, encode_json(payload, floats), (("Content-Type", JSON_TYPE), *extra))


def encode_json(payload: Any, floats: bool | None = None) -> bytes:
    """Compact UTF-8 JSON, as the console sends it.

    orjson writes a 500-job page in ~1 ms where the standard library takes ~20 ms (in a
    benchmark the simulator shares two cores with the ETL and PostgreSQL). It is used only
    where its output means exactly what the standard library's would: it refuses integers
    beyond 64 bits and non-string keys (TypeError), and a payload holding any float (orjson
    would write NaN as null) takes the standard library, which writes what tests ask for.
    ``floats``: whether the payload may hold a float, if the caller knows (a page of a
    collection: its rows were walked once when they were arranged); else it is walked here.
    """
    if not (_has_float(payload) if floats is None else floats):
        try:
            return orjson.dumps(payload)
        except TypeError:
            pass
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _page_has_float(
    rows: list[dict[str, Any]], floats: list[bool | None], start: int, end: int
) -> bool:
    """Whether a row of ``rows[start:end]`` holds a float, walking only the rows not walked
    before (``floats`` keeps each row's answer: a second read of the same listing walks none)."""
    for at in range(start, min(end, len(rows))):
        if floats[at] is None:
            floats[at] = _has_float(rows[at])
    return any(floats[start:end])


def _has_float(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is dict:
            values = list(item.values())
        elif kind is list or kind is tuple:
            values = item
        elif isinstance(item, float):
            return True
        else:
            continue
        if not _SCALARS.issuperset(map(type, values)):  # checked in C: most records are flat
            stack.extend(v for v in values if type(v) not in _SCALARS)
    return False


_SCALARS = frozenset({str, int, bool, type(None)})


def error_response(status: int, message: str, kind: str, **extra: Any) -> Response:
    """The console's error body: ``{"errors": [{"message", "type", "code"}]}``."""
    return json_response(
        status, {"errors": [{"message": message, "type": kind, "code": status, **extra}]}
    )


class Stats:
    """Requests per endpoint and faults injected per kind, safe to update from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()

    def count(self, endpoint: str, fault: Fault | None = None) -> None:
        with self._lock:
            self.requests[endpoint] += 1
            if fault is not None:
                self.faults[fault.kind] += 1

    def snapshot(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {"requests": dict(self.requests), "faults": dict(self.faults)}


@dataclass
class _Session:
    user: str
    expires: float  # time.monotonic()
    uses_left: int | None  # authenticated requests it still answers; None: unlimited


@dataclass
class _Action:
    id: str
    initiator: str
    name: str
    polls: int
    final: str
    result: Response
    created: float = field(default_factory=time.monotonic)


class Simulator:
    """A loopback VSPC console: jobs that change over virtual time, auth, faults on demand.

    ``mfa_users`` authenticate with their password from ``users`` if listed there (any
    non-empty password otherwise) and get an ``mfa_token`` instead of an access token.
    Access tokens expire after ``token_ttl`` seconds of real time. ``token_uses`` ends a
    session after that many authenticated requests, and ``one_session_per_user`` ends a
    user's sessions whenever that user logs in or refreshes: both are how applications
    sharing one account log each other out (the vendor warns they do); the next request
    with such a token gets the console's 401. ``platforms`` and ``outage_rate`` shape the data
    (see :class:`World`); ``latency`` seconds are added to every answer (a console far away).
    ``refuse`` lists path prefixes (``/api/v3/infrastructure/managementAgents``) the console
    answers with 404, as an older console without those endpoints does.
    """

    def __init__(
        self,
        *,
        jobs: int = 50,
        seed: int = 1,
        api_keys: Iterable[str] = ("sim-api-key",),
        users: Mapping[str, str] | None = None,
        mfa_users: Iterable[str] = ("mfa-user",),
        token_ttl: float = 3600.0,
        token_uses: int | None = None,
        one_session_per_user: bool = False,
        max_page_size: int = 500,
        start: datetime | str | None = None,
        latency: float = 0.0,
        add_rate: float = 0.01,
        delete_rate: float = 0.01,
        change_rate: float = 0.01,
        platforms: Iterable[str] = wire.PLATFORMS,
        outage_rate: float = 0.0,
        refuse: Iterable[str] = (),
    ) -> None:
        if isinstance(start, str):
            start = datetime.fromisoformat(start)
        self.world = World(
            jobs=jobs,
            seed=seed,
            start=start or DEFAULT_START,
            add_rate=add_rate,
            delete_rate=delete_rate,
            change_rate=change_rate,
            platforms=platforms,
            outage_rate=outage_rate,
        )
        self.faults = FaultPlan()
        self.stats = Stats()
        self.api_keys = frozenset(api_keys)
        self.users = dict({"admin": "sim-password"} if users is None else users)
        self.mfa_users = frozenset(mfa_users)
        self.token_ttl = token_ttl
        if token_uses is not None and token_uses < 1:
            raise ValueError("token_uses must be at least 1 (or None: unlimited)")
        self.token_uses = token_uses
        self.one_session_per_user = one_session_per_user
        self.max_page_size = max_page_size
        self.latency = latency
        self.refused = tuple(prefix.rstrip("/").lower() for prefix in refuse)
        self._lock = threading.Lock()
        self._arrange_cache: dict[
            tuple[str, str, str], tuple[int, list[dict[str, Any]], list[bool | None]]
        ] = {}
        self._indexes: dict[str, tuple[int, Index]] = {}
        self._access: dict[str, _Session] = {}  # access token -> its session
        self._refresh: dict[str, str] = {}  # token -> user
        self._actions: dict[str, _Action] = {}
        self._issued: list[str] = []  # every token handed out, for tests that hunt for leaks

    # ------------------------------------------------------------ the data
    @property
    def now(self) -> datetime:
        """The virtual clock."""
        return self.world.now

    def advance(self, hours: float) -> AdvanceSummary:
        return self.world.advance(hours)

    def jobs(self, platform: str | None = None) -> list[dict[str, Any]]:
        """The jobs of ``platform`` (windows, linux, mac), or of every platform (None): the
        console's truth."""
        return self.every_job() if platform is None else self.world.jobs(platform)

    def every_job(self) -> list[dict[str, Any]]:
        """The jobs of every platform: Windows', Linux's, then Mac's (the truth a sync of all
        three mirrors)."""
        return [job for platform in wire.PLATFORMS for job in self.world.jobs(platform)]

    def agents(self) -> list[dict[str, Any]]:
        """Every agent as ``/infrastructure/backupAgents`` serves it (with its computer name)."""
        return copy.deepcopy(self.world.rows("backup_agents"))

    def management_agents(self) -> list[dict[str, Any]]:
        """Every management agent as ``/infrastructure/managementAgents`` serves it."""
        return copy.deepcopy(self.world.rows("management_agents"))

    def organizations(self) -> list[dict[str, Any]]:
        return self.world.organizations()

    def mutate(self, uid: str, **fields: Any) -> dict[str, Any]:
        return self.world.mutate(uid, **fields)

    def mutate_organization(self, uid: str, **fields: Any) -> dict[str, Any]:
        return self.world.mutate_organization(uid, **fields)

    def add_job(self, **fields: Any) -> dict[str, Any]:
        return self.world.add_job(**fields)

    def delete_job(self, uid: str) -> None:
        self.world.delete_job(uid)

    def issued_tokens(self) -> list[str]:
        """Every access, refresh and MFA token handed out so far."""
        with self._lock:
            return list(self._issued)

    def revoke_tokens(self, *, refresh: bool = False) -> None:
        """Log every password-grant session out, as another app on the same account would;
        ``refresh`` voids the refresh tokens too, as a password change does."""
        with self._lock:
            self._access.clear()
            if refresh:
                self._refresh.clear()

    # ------------------------------------------------------------ requests
    def handle(self, request: Request) -> Response:
        """Answer one API request (``/_sim`` control requests are the server's business)."""
        path = request.path.rstrip("/")
        if not path.lower().startswith(API_PREFIX + "/"):
            self.stats.count("unknown")
            return error_response(404, f"The resource '{request.path}' was not found.", "logical")
        if self._refuses(path):
            self.stats.count("refused")
            return error_response(404, f"The resource '{request.path}' was not found.", "logical")
        route = path[len(API_PREFIX) :]
        parts = route.split("/")
        action: tuple[str, bool] | None = None
        if len(parts) in (3, 4) and parts[1].lower() == "asyncactions" and parts[2]:
            if len(parts) == 4 and parts[3].lower() != "result":
                endpoint = None
            else:
                endpoint, action = "async", (parts[2], len(parts) == 4)
        else:
            endpoint = _ROUTES.get(route.lower())
        if endpoint is None:
            self.stats.count("unknown")
            return error_response(404, f"The resource '{request.path}' was not found.", "logical")
        allowed = "POST" if endpoint == "token" else "GET"
        if request.method != allowed:
            self.stats.count("rejected")
            response = error_response(405, f"Method {request.method} is not allowed.", "logical")
            return replace(response, headers=(*response.headers, ("Allow", allowed)))
        fault = self.faults.take(endpoint)
        self.stats.count(endpoint, fault)
        response = self._answer(request, endpoint, action, fault)
        if self.latency:
            response = replace(response, delay=response.delay + self.latency)
        return _transport_fault(response, fault)

    def _refuses(self, path: str) -> bool:
        """Whether ``path`` is one of the refused prefixes or lies below one."""
        lowered = path.lower()
        return any(lowered == p or lowered.startswith(f"{p}/") for p in self.refused)

    def _answer(
        self, request: Request, endpoint: str, action: tuple[str, bool] | None, fault: Fault | None
    ) -> Response:
        if fault is not None and fault.kind in _ERROR_KINDS:
            return self._error_fault(fault)
        if endpoint == "token":
            return self._token(request)
        principal = self._authenticate(request)
        if isinstance(principal, Response):
            return principal
        if action is not None:
            return self._async_action(*action)
        if fault is not None and fault.kind == "202":
            return self._defer(request, endpoint, principal, fault)
        return self._collection(request, endpoint, fault)

    def _error_fault(self, fault: Fault) -> Response:
        kind, params = fault.kind, fault.params
        if kind == "401":
            self.revoke_tokens()
            return error_response(401, "The access token has been revoked.", "security")
        if kind == "429":
            wait = params["retry_after"]
            response = error_response(
                429,
                f"Too many requests. Try again in {wait} seconds.",
                "transport",
                retryAfter=wait,
            )
            if params["header"]:
                response = replace(
                    response, headers=(*response.headers, ("Retry-After", f"{wait}"))
                )
            return response
        if kind == "520":
            return error_response(520, "An unexpected error occurred on the server.", "unspecified")
        if kind in ("500", "503"):
            title = "500 Internal Server Error" if kind == "500" else "503 Service Unavailable"
            body = f"<html><head><title>{title}</title></head><body><h1>{title}</h1></body></html>"
            return Response(
                int(kind), body.encode(), (("Content-Type", "text/html"), ("Connection", "close"))
            )
        if kind == "404":
            return error_response(404, "The requested resource was not found.", "logical")
        if kind == "403":
            return error_response(
                403, "Access denied: your role cannot read this resource.", "security"
            )
        return error_response(400, "The request was rejected (injected fault).", "logical")

    # ------------------------------------------------------------ auth
    def _token(self, request: Request) -> Response:
        content_type = request.headers.get("content-type", "")
        if not content_type.lower().startswith("application/x-www-form-urlencoded"):
            return _oauth_error("invalid_request", "The body must be form-encoded.")
        form = parse_qs(request.body.decode("utf-8", "replace"), keep_blank_values=True)

        def value(name: str) -> str:
            return form.get(name, [""])[0]

        grant = value("grant_type")
        if grant == "password":
            user, password = value("username"), value("password")
            known = self.users.get(user)
            if known is None and user in self.mfa_users:
                valid = bool(password)
            else:
                valid = known is not None and secrets.compare_digest(known, password)
            if not valid:
                return _oauth_error("invalid_grant", "The user name or password is incorrect.")
            if user in self.mfa_users:
                mfa_token = secrets.token_urlsafe(24)
                with self._lock:
                    self._issued.append(mfa_token)
                return json_response(
                    200,
                    {
                        "access_token": None,
                        "token_type": None,
                        "refresh_token": None,
                        "expires_in": None,
                        "mfa_token": mfa_token,
                        "encrypted_code": None,
                    },
                )
            return self._issue(user)
        if grant == "refresh_token":
            with self._lock:
                user_or_none = self._refresh.pop(value("refresh_token"), None)
            if user_or_none is None:
                return _oauth_error("invalid_grant", "The refresh token is invalid or was used.")
            return self._issue(user_or_none)
        if not grant:
            return _oauth_error("invalid_request", "grant_type is missing.")
        return _oauth_error("unsupported_grant_type", f"Grant type '{grant}' is not supported.")

    def _issue(self, user: str) -> Response:
        access, refresh = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        with self._lock:
            if self.one_session_per_user:
                for token in [t for t, session in self._access.items() if session.user == user]:
                    del self._access[token]
            self._access[access] = _Session(
                user, time.monotonic() + self.token_ttl, self.token_uses
            )
            self._refresh[refresh] = user
            self._issued += [access, refresh]
        ttl = self.token_ttl
        return json_response(
            200,
            {
                "access_token": access,
                "token_type": "bearer",
                "refresh_token": refresh,
                "expires_in": int(ttl) if float(ttl).is_integer() else ttl,
                "mfa_token": None,
                "encrypted_code": None,
            },
        )

    def _authenticate(self, request: Request) -> str | Response:
        """The caller's name, or the 401 to answer."""
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if not header:
            return error_response(401, "Authorization header is missing.", "security")
        if scheme.lower() != "bearer" or not token:
            return error_response(401, "Authorization must be 'Bearer <token>'.", "security")
        if any(secrets.compare_digest(token, key) for key in self.api_keys):
            return "api-key"
        with self._lock:
            session = self._access.get(token)
            if session is not None and session.expires <= time.monotonic():
                del self._access[token]
                return error_response(401, "The access token has expired.", "security")
            if session is not None and session.uses_left is not None:
                session.uses_left -= 1
                if session.uses_left == 0:  # this request is its last: the session ends
                    del self._access[token]
        if session is None:
            return error_response(401, "The access token is invalid or was revoked.", "security")
        return session.user

    # ------------------------------------------------------------ async actions
    def _defer(self, request: Request, endpoint: str, principal: str, fault: Fault) -> Response:
        action = _Action(
            id=str(uuid.uuid4()),
            initiator=str(uuid.uuid5(uuid.NAMESPACE_URL, f"vspc-simulator:{principal}")),
            name=_ACTION_NAMES[endpoint],
            polls=int(fault.params["polls"]),
            final=fault.params["final"],
            result=self._collection(request, endpoint, None),  # as at the original request
        )
        with self._lock:
            self._actions[action.id] = action
        location = f"{request.base_url}{API_PREFIX}/asyncActions/{action.id}"
        return json_response(202, {"data": _action_view(action, "running")}, ("Location", location))

    def _async_action(self, action_id: str, want_result: bool) -> Response:
        with self._lock:
            action = self._actions.get(action_id)
            if action is not None and time.monotonic() - action.created > _ACTION_LIFETIME:
                del self._actions[action_id]
                action = None
            if action is None:
                return error_response(404, f"Async action '{action_id}' was not found.", "logical")
            status = "running" if action.polls > 0 else action.final
            if want_result:
                if status != "succeed":
                    return error_response(
                        400, f"Async action '{action_id}' is {status}; it has no result.", "logical"
                    )
                return action.result
            if action.polls > 0:
                action.polls -= 1
        return json_response(200, {"data": _action_view(action, status)})

    # ------------------------------------------------------------ collections
    def _collection(self, request: Request, endpoint: str, fault: Fault | None) -> Response:
        kind = fault.kind if fault is not None else None
        fields = _FIELDS[endpoint]
        try:
            query = parse_query(request.query, fields=fields, max_page_size=self.max_page_size)
        except QueryError as exc:
            return error_response(400, str(exc), "logical")
        if fault is not None and kind == "shift":
            self._shift(endpoint, query, fault.params["op"])
        rows, floats = self._arranged(endpoint, query)
        offset = 0 if kind == "bad_offset" else query.offset
        page = rows[offset : offset + query.limit]
        if fault is not None and kind == "short":
            count = fault.params["count"]
            page = page[: len(page) // 2 if count is None else min(count, len(page) - 1)]
        data = [project(row, query.select) for row in page]
        if query.select is None:
            with_floats = _page_has_float(rows, floats, offset, offset + len(page))
        else:  # a few properties of each row: walked here
            with_floats = _has_float(data)
        total = 0 if kind == "total_zero" else len(rows)
        return json_response(
            200,
            {
                "meta": {"pagingInfo": {"total": total, "count": len(data), "offset": offset}},
                "data": data,
                "errors": None,
            },
            floats=with_floats,
        )

    def _arranged(
        self, endpoint: str, query: Query
    ) -> tuple[list[dict[str, Any]], list[bool | None]]:
        """Filtered, sorted rows, and whether each holds a float (None until a page served
        whole holds it, see ``_page_has_float``), cached until the world changes.

        Sorting 100,000 jobs for every page would make the simulator, not the extractor, the
        bottleneck of a benchmark; so would looking for floats in every page of every read
        (~0.3 s of the simulator's CPU per read of 100,000 jobs, on the cores the ETL runs on).
        """
        version = self.world.version  # read first: a change racing us only forces a recompute
        key = (endpoint, repr(query.filter), repr(query.sort))
        with self._lock:
            cached = self._arrange_cache.get(key)
        if cached is not None and cached[0] == version:
            return cached[1], cached[2]
        index = self._index(endpoint, version)
        rows = arrange(index.rows, query, TIMESTAMP_FIELDS, index)
        floats: list[bool | None] = [None] * len(rows)
        with self._lock:
            if len(self._arrange_cache) > 16:
                self._arrange_cache.clear()
            self._arrange_cache[key] = (version, rows, floats)
        return rows, floats

    def _index(self, endpoint: str, version: int) -> Index:
        """The rows of ``endpoint`` and their index, built once per version of the world (from
        the previous one: most rows are unchanged)."""
        with self._lock:
            cached = self._indexes.get(endpoint)
        if cached is not None and cached[0] == version:
            return cached[1]
        index = Index(self.world.rows(endpoint), cached[1] if cached is not None else None)
        with self._lock:
            self._indexes[endpoint] = (version, index)
        return index

    def _shift(self, endpoint: str, query: Query, op: str) -> None:
        """Move items between pages: an item appears at, or vanishes from, the very front."""
        front = None
        if op == "delete":
            rows = arrange(self.world.rows(endpoint), query, TIMESTAMP_FIELDS)
            front = rows[0]["instanceUid"] if rows else None
        self.world.shift(endpoint, op, front)


def _oauth_error(error: str, description: str) -> Response:
    return json_response(400, {"error": error, "error_description": description})


def _action_view(action: _Action, status: str) -> dict[str, Any]:
    return {
        "id": action.id,
        "initiatorUid": action.initiator,
        "actionName": action.name,
        "status": status,
    }


def _transport_fault(response: Response, fault: Fault | None) -> Response:
    """Faults that damage the answer on its way out, whatever the answer was."""
    if fault is None:
        return response
    if fault.kind == "hang":
        return replace(response, delay=response.delay + float(fault.params["seconds"]))
    if fault.kind == "slow":
        return replace(response, trickle=float(fault.params["seconds"]))
    if fault.kind == "reset":
        return replace(response, reset=True)
    if fault.kind == "bad_json":
        return replace(response, body=response.body[: max(1, len(response.body) // 2)])
    return response
