"""VspcClient and the auth classes against scripted consoles (httpx.MockTransport).

No test sleeps: the client gets a fake clock whose time moves only when the client sleeps
(or when a handler says a request took time), so every wait and budget is exact.
"""

from __future__ import annotations

import http.server
import logging
import socket
import ssl
import subprocess
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

from etl.errors import (
    AsyncActionFailed,
    AuthenticationError,
    ConfigError,
    MfaRequired,
    PermissionDenied,
    ProtocolError,
    RequestRejected,
    RetriesExhausted,
    SourceError,
    VspcEtlError,
)
from etl.extract import ApiKeyAuth, PasswordAuth, RetryPolicy, VspcClient
from etl.extract.client import decode_json

BASE = "https://vspc.example.com:1280"
JOBS = "/api/v3/infrastructure/backupAgents/windows/jobs"
ACTION = "/api/v3/asyncActions/a1"
API_KEY = "key-7f3a9c-SECRET"
PASSWORD = "pa55-w0rd-SECRET"
PAGE = {"meta": {"pagingInfo": {"total": 0, "count": 0, "offset": 0}}, "data": []}
EXACT = RetryPolicy(jitter=0.0)  # no randomness: every sleep is asserted exactly

Answer = httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]


class FakeClock:
    """Monotonic time that advances only by the sleeps asked for, or by ``advance``."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class Script:
    """A console that gives the scripted answers in order; the last one repeats forever."""

    def __init__(self, *answers: Answer) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, httpx.Response):
            return answer
        return answer(request)

    @property
    def paths(self) -> list[str]:
        return [request.url.path for request in self.requests]


class Console:
    """Routes the token endpoint and everything else to two scripts."""

    def __init__(self, token: Script, api: Script) -> None:
        self.token, self.api = token, api
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        script = self.token if request.url.path == "/api/v3/token" else self.api
        return script(request)

    def trace(self) -> list[str]:
        """One line per request: the grant for token requests, the bearer for the others."""
        lines = []
        for request in self.requests:
            if request.url.path == "/api/v3/token":
                lines.append(f"POST token {form(request)['grant_type']}")
            else:
                bearer = request.headers["Authorization"].removeprefix("Bearer ")
                lines.append(f"GET {request.url.path} {bearer}")
        return lines


def form(request: httpx.Request) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(request.content.decode()).items()}


def error_body(message: str | None = None, type_: str = "unspecified", **extra: Any) -> Any:
    error: dict[str, Any] = {"type": type_, **extra}
    if message is not None:
        error["message"] = message
    return {"errors": [error]}


def tokens(n: int, expires_in: Any = 3600) -> httpx.Response:
    return httpx.Response(
        200,
        json={
            "access_token": f"access-{n}-SECRET",
            "token_type": "bearer",
            "refresh_token": f"refresh-{n}-SECRET",
            "expires_in": expires_in,
            "mfa_token": None,
            "encrypted_code": None,
        },
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def events() -> list[tuple[str, str]]:
    return []


@pytest.fixture
def make_client(clock: FakeClock, events: list[tuple[str, str]]) -> Callable[..., VspcClient]:
    def make(
        handler: Callable[[httpx.Request], httpx.Response],
        *,
        auth: ApiKeyAuth | PasswordAuth | None = None,
        retry: RetryPolicy = EXACT,
        base_url: str = BASE,
    ) -> VspcClient:
        http = httpx.Client(transport=httpx.MockTransport(handler), base_url=base_url)
        return VspcClient(
            http,
            auth or ApiKeyAuth(API_KEY),
            retry=retry,
            sleep=clock.sleep,
            clock=clock,
            on_event=lambda kind, outcome: events.append((kind, outcome)),
        )

    return make


def password_auth(clock: FakeClock) -> PasswordAuth:
    return PasswordAuth("etl", PASSWORD, clock=clock)


# -- plain requests ------------------------------------------------------------------------


def test_api_key_is_sent_as_bearer_and_body_returned(make_client, events):
    script = Script(httpx.Response(200, json=PAGE))
    client = make_client(script)

    assert client.get_json(JOBS, {"limit": 1, "offset": 0}) == PAGE

    (request,) = script.requests
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"
    assert request.headers["Accept"] == "application/json"
    assert str(request.url) == f"{BASE}{JOBS}?limit=1&offset=0"
    assert client.stats.requests == 1
    assert client.stats.retries == 0
    assert client.stats.by_outcome == Counter({"ok": 1})
    assert events == [("request", "ok")]


def test_debug_log_has_method_path_status_and_elapsed_only(make_client, clock, caplog):
    def slow_ok(request: httpx.Request) -> httpx.Response:
        clock.now += 0.25
        return httpx.Response(200, json=PAGE)

    client = make_client(Script(httpx.Response(520, json=error_body("boom")), slow_ok))
    caplog.set_level(logging.DEBUG, logger="etl.extract.client")

    client.get_json(JOBS, {"limit": 1})

    debug = [r for r in caplog.records if r.name == "etl.extract.client" and r.levelname == "DEBUG"]
    assert [r.getMessage() for r in debug] == [
        f"GET {JOBS}?limit=1 -> 520 in 0 ms",
        f"GET {JOBS}?limit=1 -> 200 in 250 ms",
    ]


# -- transient failures --------------------------------------------------------------------

RETRYABLE_ANSWERS = [
    pytest.param(
        httpx.Response(429, json=error_body(type_="transport", code=429)), "429", id="429"
    ),
    pytest.param(httpx.Response(520, json=error_body("Internal failure")), "520", id="520"),
    pytest.param(httpx.Response(500, text="<html>oops</html>"), "500", id="500-html"),
    pytest.param(httpx.Response(502), "502", id="502-empty"),
    pytest.param(httpx.Response(503), "503", id="503"),
    pytest.param(httpx.Response(504), "504", id="504"),
    pytest.param(httpx.Response(408), "408", id="408"),
    pytest.param(
        httpx.Response(409, json=error_body("busy", type_="retryableLogical")), "409", id="409-rl"
    ),
    pytest.param(httpx.Response(400, json=error_body("x", type_="transport")), "400", id="400-tr"),
    pytest.param(httpx.Response(200, text='{"meta": {"pagingIn'), "invalid_json", id="truncated"),
    pytest.param(httpx.ConnectError("[Errno 111] Connection refused"), "connect", id="refused"),
    pytest.param(httpx.ConnectTimeout("timed out"), "timeout", id="connect-timeout"),
    pytest.param(httpx.ReadTimeout("timed out"), "timeout", id="read-timeout"),
    pytest.param(httpx.WriteTimeout("timed out"), "timeout", id="write-timeout"),
    pytest.param(httpx.PoolTimeout("timed out"), "timeout", id="pool-timeout"),
    pytest.param(httpx.ReadError("[Errno 104] Connection reset by peer"), "transport", id="reset"),
    pytest.param(httpx.WriteError("[Errno 32] Broken pipe"), "transport", id="broken-pipe"),
    pytest.param(
        httpx.RemoteProtocolError("peer closed connection without sending complete message body"),
        "transport",
        id="peer-closed-mid-body",
    ),
]


@pytest.mark.parametrize(("failure", "outcome"), RETRYABLE_ANSWERS)
def test_transient_failure_is_retried_once_then_succeeds(
    make_client, clock, events, failure, outcome
):
    script = Script(failure, httpx.Response(200, json=PAGE))
    client = make_client(script)

    assert client.get_json(JOBS) == PAGE

    assert len(script.requests) == 2
    assert clock.sleeps == [0.5]
    assert client.stats.requests == 2
    assert client.stats.retries == 1
    assert client.stats.by_outcome == Counter({outcome: 1, "ok": 1})
    assert events == [("request", outcome), ("retry", outcome), ("request", "ok")]


def test_backoff_doubles_up_to_the_cap_then_gives_up_after_max_attempts(make_client, clock):
    script = Script(httpx.Response(520, json=error_body("Internal failure.")))
    client = make_client(script)

    with pytest.raises(RetriesExhausted) as caught:
        client.get_json(JOBS)

    assert len(script.requests) == 8
    assert clock.sleeps == [0.5, 1, 2, 4, 8, 16, 30]
    assert str(caught.value) == (
        f"VSPC kept answering HTTP 520 (server error: Internal failure) for {JOBS}; "
        "gave up after 8 attempts in 62 s."
    )
    assert caught.value.status_code == 520
    assert client.stats.retries == 7


def test_jitter_adds_at_most_its_amount_to_each_backoff(make_client, clock):
    policy = RetryPolicy(jitter=1.0, backoff_max=4.0, max_attempts=6)
    client = make_client(Script(httpx.Response(503)), retry=policy)

    with pytest.raises(RetriesExhausted):
        client.get_json(JOBS)

    assert len(clock.sleeps) == 5
    for slept, base in zip(clock.sleeps, [0.5, 1, 2, 4, 4], strict=True):
        assert base <= slept <= base + 1.0


def test_elapsed_budget_stops_retries_before_max_attempts(make_client, clock):
    script = Script(httpx.Response(503))
    client = make_client(script, retry=RetryPolicy(jitter=0.0, max_elapsed=20.0))

    with pytest.raises(RetriesExhausted) as caught:
        client.get_json(JOBS)

    # The last backoff is cut to what is left of the budget (16 -> 4.5 s).
    assert clock.sleeps == [0.5, 1, 2, 4, 8, 4.5]
    assert len(script.requests) == 7
    assert str(caught.value) == (
        f"VSPC kept answering HTTP 503 (server error) for {JOBS}; gave up after 7 attempts in 20 s."
    )


def test_slow_timeouts_count_against_the_budget(make_client, clock):
    def slow_timeout(request: httpx.Request) -> httpx.Response:
        clock.now += 30.0
        raise httpx.ReadTimeout("The read operation timed out")

    script = Script(slow_timeout)
    client = make_client(script, retry=RetryPolicy(jitter=0.0, max_elapsed=100.0))

    with pytest.raises(RetriesExhausted) as caught:
        client.get_json(JOBS)

    assert clock.sleeps == [0.5, 1, 2]
    assert len(script.requests) == 4
    assert str(caught.value) == (
        f"VSPC kept timing out (ReadTimeout: The read operation timed out) for {JOBS}; "
        "gave up after 4 attempts in 124 s."
    )


@pytest.mark.parametrize(
    ("body_wait", "header", "slept"),
    [
        pytest.param(25, None, 25.0, id="body"),
        pytest.param(25, "40", 40.0, id="header-longer"),
        pytest.param(25, "10", 25.0, id="body-longer"),
        pytest.param(None, "7", 7.0, id="header-only"),
        pytest.param(0.2, None, 0.5, id="backoff-longer"),
        pytest.param(None, "Wed, 21 Oct 2099 07:28:00 GMT", 0.5, id="http-date-ignored"),
        pytest.param(None, None, 0.5, id="no-hint"),
    ],
)
def test_429_waits_for_the_longer_of_retry_after_body_and_header(
    make_client, clock, body_wait, header, slept
):
    extra = {} if body_wait is None else {"retryAfter": body_wait}
    headers = {} if header is None else {"Retry-After": header}
    throttled = httpx.Response(
        429, json=error_body(type_="transport", code=429, **extra), headers=headers
    )
    client = make_client(Script(throttled, httpx.Response(200, json=PAGE)))

    assert client.get_json(JOBS) == PAGE
    assert clock.sleeps == [slept]


def test_429_asking_to_wait_beyond_the_budget_gives_up_at_once(make_client, clock):
    throttled = httpx.Response(429, json=error_body(type_="transport", code=429, retryAfter=400))
    script = Script(throttled)
    client = make_client(script)

    with pytest.raises(RetriesExhausted) as caught:
        client.get_json(JOBS)

    assert clock.sleeps == []
    assert len(script.requests) == 1
    assert str(caught.value) == (
        f"VSPC kept answering HTTP 429 (rate limited) for {JOBS}; gave up after 1 attempt "
        "in 0 s: the console asked to wait 400 s, beyond the 300 s budget."
    )


def test_200_that_is_never_valid_json_exhausts_retries(make_client):
    client = make_client(Script(httpx.Response(200, text='{"data": [{"instanceUid": "72')))

    with pytest.raises(RetriesExhausted) as caught:
        client.get_json(JOBS)

    assert str(caught.value) == (
        f"VSPC kept answering HTTP 200 with a body that is not valid JSON (truncated?) for {JOBS}; "
        "gave up after 8 attempts in 62 s."
    )


# -- failures that are not retried ---------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "error_type", "message"),
    [
        pytest.param(
            httpx.Response(403, json=error_body("Insufficient privileges.", "security", code=403)),
            PermissionDenied,
            f"The VSPC console denied access to {JOBS} (403): the account's role lacks access "
            "to it: Insufficient privileges; give the account a role that may read it.",
            id="403",
        ),
        pytest.param(
            httpx.Response(404, json=error_body("Resource not found.", "logical", code=404)),
            RequestRejected,
            f"The VSPC console rejected GET {JOBS} with HTTP 404: Resource not found.",
            id="404",
        ),
        pytest.param(
            httpx.Response(400, json=error_body("Invalid filter.", "logical", code=400)),
            RequestRejected,
            f"The VSPC console rejected GET {JOBS} with HTTP 400: Invalid filter.",
            id="400-logical",
        ),
        pytest.param(
            httpx.Response(410),
            RequestRejected,
            f"The VSPC console rejected GET {JOBS} with HTTP 410.",
            id="410-no-body",
        ),
        pytest.param(
            httpx.Response(302, headers={"Location": "/login"}),
            ProtocolError,
            f"The VSPC console answered HTTP 302 to GET {JOBS}, which the API does not document.",
            id="302",
        ),
    ],
)
def test_other_statuses_fail_fast(make_client, clock, response, error_type, message):
    script = Script(response)
    client = make_client(script)

    with pytest.raises(error_type) as caught:
        client.get_json(JOBS)

    assert type(caught.value) is error_type
    assert str(caught.value) == message
    assert caught.value.status_code == response.status_code
    assert len(script.requests) == 1
    assert clock.sleeps == []


def cert_verify_error() -> ssl.SSLCertVerificationError:
    error = ssl.SSLCertVerificationError(
        1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed certificate"
    )
    error.verify_message = "self-signed certificate"
    return error


def test_tls_verification_failure_is_not_retried_and_says_what_to_set(make_client, clock):
    def handshake_fails(request: httpx.Request) -> httpx.Response:
        try:
            raise cert_verify_error()
        except ssl.SSLError as exc:
            raise httpx.ConnectError(str(exc), request=request) from exc

    script = Script(handshake_fails)
    client = make_client(script)

    with pytest.raises(ConfigError) as caught:
        client.get_json(JOBS)

    assert str(caught.value) == (
        "TLS verification failed for vspc.example.com:1280 (self-signed certificate); "
        "set VSPC_CA_BUNDLE to the console's CA certificate (PEM) or, at your own risk, "
        "VSPC_VERIFY_TLS=false."
    )
    assert len(script.requests) == 1
    assert clock.sleeps == []
    assert client.stats.by_outcome == Counter({"tls": 1})


@pytest.fixture
def self_signed_console(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real HTTPS server on loopback with a self-signed certificate: (base URL, cert)."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )  # fmt: skip

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b'{"data": [], "meta": {"pagingInfo": {"total": 0}}}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}", cert
    server.shutdown()
    server.server_close()


def test_real_self_signed_certificate_gives_the_tls_advice(self_signed_console, clock):
    base_url, cert = self_signed_console
    port = base_url.rsplit(":", 1)[1]

    with httpx.Client(base_url=base_url, timeout=5) as http:
        client = VspcClient(http, ApiKeyAuth(API_KEY), retry=EXACT, sleep=clock.sleep, clock=clock)
        with pytest.raises(ConfigError) as caught:
            client.get_json(JOBS)
    assert str(caught.value).startswith(f"TLS verification failed for 127.0.0.1:{port} (self")
    assert str(caught.value).endswith(
        "set VSPC_CA_BUNDLE to the console's CA certificate (PEM) "
        "or, at your own risk, VSPC_VERIFY_TLS=false."
    )
    assert clock.sleeps == []

    # The advice works: trusting the console's certificate makes the same request succeed.
    with httpx.Client(
        base_url=base_url, timeout=5, verify=ssl.create_default_context(cafile=str(cert))
    ) as http:
        client = VspcClient(http, ApiKeyAuth(API_KEY), retry=EXACT, sleep=clock.sleep, clock=clock)
        assert client.get_json(JOBS)["data"] == []


@pytest.fixture
def plain_http_console() -> Iterator[int]:
    """A plain-HTTP server on loopback: its port, to be named with https:// by mistake."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def test_https_to_a_plain_http_port_is_named_and_not_retried(plain_http_console, clock):
    port = plain_http_console
    with httpx.Client(base_url=f"https://127.0.0.1:{port}", timeout=5) as http:
        client = VspcClient(http, ApiKeyAuth(API_KEY), retry=EXACT, sleep=clock.sleep, clock=clock)
        with pytest.raises(ConfigError) as caught:
            client.get_json(JOBS)
    assert str(caught.value) == (
        f"The TLS handshake with 127.0.0.1:{port} failed (wrong version number): the server "
        "there speaks plain HTTP, so VSPC_URL should start with http:// (or name the "
        "console's HTTPS port)."
    )
    assert clock.sleeps == []
    assert client.stats.by_outcome == Counter({"tls": 1})


def connect_error_from(cause: BaseException) -> Callable[[httpx.Request], httpx.Response]:
    """A transport failure as httpx raises it: a ConnectError caused by a lower error."""

    def fail(request: httpx.Request) -> httpx.Response:
        try:
            raise cause
        except OSError as exc:
            raise httpx.ConnectError(str(exc), request=request) from exc

    return fail


def test_an_unknown_host_is_named_and_not_retried(make_client, clock):
    unknown = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    script = Script(connect_error_from(unknown))
    client = make_client(script)

    with pytest.raises(ConfigError) as caught:
        client.get_json(JOBS)

    assert str(caught.value) == (
        "The host 'vspc.example.com' of VSPC_URL is unknown (Name or service not known): "
        "check the host name in VSPC_URL."
    )
    assert len(script.requests) == 1
    assert clock.sleeps == []
    assert client.stats.by_outcome == Counter({"dns": 1})


def test_a_dns_server_that_does_not_answer_is_retried(make_client, clock):
    silent = socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
    script = Script(connect_error_from(silent), httpx.Response(200, json=PAGE))
    client = make_client(script)

    assert client.get_json(JOBS) == PAGE
    assert clock.sleeps == [0.5]
    assert client.stats.by_outcome == Counter({"dns": 1, "ok": 1})


def test_a_handshake_cut_short_is_retried_like_a_dropped_connection(make_client, clock):
    eof = ssl.SSLEOFError(8, "EOF occurred in violation of protocol")
    script = Script(connect_error_from(eof), httpx.Response(200, json=PAGE))
    client = make_client(script)

    assert client.get_json(JOBS) == PAGE
    assert clock.sleeps == [0.5]
    assert client.stats.by_outcome == Counter({"connect": 1, "ok": 1})


def test_each_retry_is_logged_as_it_happens(clock, caplog):
    script = Script(
        httpx.Response(503),
        httpx.Response(429, json=error_body(retryAfter=45)),
        httpx.Response(200, json=PAGE),
    )
    said: list[tuple[float, str]] = []

    def sleep(seconds: float) -> None:  # what the log said by the time each wait began
        said.append((seconds, caplog.records[-1].getMessage()))
        clock.sleep(seconds)

    http = httpx.Client(transport=httpx.MockTransport(script), base_url=BASE)
    client = VspcClient(http, ApiKeyAuth(API_KEY), retry=EXACT, sleep=sleep, clock=clock)
    caplog.set_level(logging.WARNING, logger="etl.extract.client")

    assert client.get_json(JOBS) == PAGE
    assert said == [
        (
            0.5,
            f"VSPC was answering HTTP 503 (server error) for {JOBS}; "
            "retrying in 0.5 s (attempt 2 of at most 8)",
        ),
        (
            45.0,
            f"VSPC was answering HTTP 429 (rate limited) for {JOBS}; "
            "retrying in 45.0 s (attempt 3 of at most 8)",
        ),
    ]


@pytest.fixture
def truncating_console() -> Iterator[tuple[str, list[int]]]:
    """A plain-HTTP loopback server whose first answer promises 500 bytes and sends 20."""
    listener = socket.create_server(("127.0.0.1", 0))
    served: list[int] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                body = b'{"data": [], "meta": {"pagingInfo": {"total": 0}}}'
                # Count before answering: the client may return before this thread runs on.
                served.append(1)
                if len(served) == 1:
                    head = b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n"
                    conn.sendall(head + body[:20])
                else:
                    head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                    conn.sendall(head + body)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}", served
    listener.close()


def test_real_peer_closing_mid_body_is_retried(truncating_console, clock):
    base_url, served = truncating_console
    with httpx.Client(base_url=base_url, timeout=5) as http:
        client = VspcClient(http, ApiKeyAuth(API_KEY), retry=EXACT, sleep=clock.sleep, clock=clock)
        assert client.get_json(JOBS)["data"] == []
    assert len(served) == 2
    assert clock.sleeps == [0.5]
    assert client.stats.by_outcome == Counter({"transport": 1, "ok": 1})


# -- every httpx exception is mapped once --------------------------------------------------

# What each httpx exception a request can raise becomes. Transient ones surface as
# RetriesExhausted once the (here: two-attempt) budget is spent.
HTTPX_MAPPING: dict[type[Exception], type[VspcEtlError]] = {
    httpx.HTTPError: SourceError,
    httpx.RequestError: SourceError,
    httpx.TransportError: RetriesExhausted,
    httpx.TimeoutException: RetriesExhausted,
    httpx.ConnectTimeout: RetriesExhausted,
    httpx.ReadTimeout: RetriesExhausted,
    httpx.WriteTimeout: RetriesExhausted,
    httpx.PoolTimeout: RetriesExhausted,
    httpx.NetworkError: RetriesExhausted,
    httpx.ConnectError: RetriesExhausted,
    httpx.ReadError: RetriesExhausted,
    httpx.WriteError: RetriesExhausted,
    httpx.CloseError: RetriesExhausted,
    httpx.ProtocolError: RetriesExhausted,
    httpx.RemoteProtocolError: RetriesExhausted,
    httpx.ProxyError: RetriesExhausted,
    httpx.DecodingError: RetriesExhausted,
    httpx.LocalProtocolError: RequestRejected,
    httpx.UnsupportedProtocol: ConfigError,
    httpx.TooManyRedirects: ProtocolError,
    httpx.HTTPStatusError: SourceError,
    httpx.InvalidURL: RequestRejected,
}
# Raised only by APIs the client does not use: cookie lookups and streamed bodies.
NOT_RAISED_BY_A_REQUEST = {
    httpx.CookieConflict,
    httpx.StreamError,
    httpx.StreamConsumed,
    httpx.StreamClosed,
    httpx.ResponseNotRead,
    httpx.RequestNotRead,
}


def test_every_httpx_exception_class_is_accounted_for():
    exported = {
        obj
        for name in httpx.__all__
        if isinstance(obj := getattr(httpx, name), type) and issubclass(obj, Exception)
    }
    assert exported == set(HTTPX_MAPPING) | NOT_RAISED_BY_A_REQUEST


@pytest.mark.parametrize(
    ("httpx_error", "mapped"), HTTPX_MAPPING.items(), ids=lambda v: getattr(v, "__name__", "")
)
def test_every_httpx_exception_is_mapped_once_to_an_etl_error(make_client, httpx_error, mapped):
    def fail(request: httpx.Request) -> httpx.Response:
        if httpx_error is httpx.HTTPStatusError:
            raise httpx.HTTPStatusError("boom", request=request, response=httpx.Response(500))
        if httpx_error in (httpx.HTTPError, httpx.InvalidURL):
            raise httpx_error("boom")
        raise httpx_error("boom", request=request)

    client = make_client(Script(fail), retry=RetryPolicy(jitter=0.0, max_attempts=2))
    path = JOBS + "\x00" if httpx_error is httpx.InvalidURL else JOBS  # raised building the URL

    with pytest.raises(VspcEtlError) as caught:
        client.get_json(path)

    assert type(caught.value) is mapped
    chain = []
    link: BaseException | None = caught.value
    while link is not None:
        chain.append(link)
        link = link.__cause__
    # Our errors first, then exactly one lower-library exception at the bottom.
    assert all(isinstance(e, VspcEtlError) for e in chain[:-1])
    assert type(chain[-1]) is httpx_error


# -- password grant ------------------------------------------------------------------------


def test_password_grant_logs_in_once_and_reuses_the_token(make_client, clock):
    console = Console(Script(tokens(1)), Script(httpx.Response(200, json=PAGE)))
    client = make_client(console, auth=password_auth(clock))

    client.get_json(JOBS)
    client.get_json(JOBS)

    login = console.requests[0]
    assert login.method == "POST"
    assert login.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert form(login) == {"grant_type": "password", "username": "etl", "password": PASSWORD}
    assert "Authorization" not in login.headers
    assert console.trace() == [
        "POST token password",
        f"GET {JOBS} access-1-SECRET",
        f"GET {JOBS} access-1-SECRET",
    ]


@pytest.mark.parametrize(
    ("expires_in", "renew_after"),
    [
        pytest.param(3600, 3240.0, id="1h-renews-with-10%-left"),
        pytest.param(300, 240.0, id="5min-renews-with-60s-left"),
        pytest.param(100, 50.0, id="short-renews-half-way"),
        pytest.param(None, 3240.0, id="missing-means-1h"),
    ],
)
def test_token_is_refreshed_before_it_expires(make_client, clock, expires_in, renew_after):
    console = Console(
        Script(tokens(1, expires_in), tokens(2, expires_in)),
        Script(httpx.Response(200, json=PAGE)),
    )
    client = make_client(console, auth=password_auth(clock))
    logged_in_at = clock.now

    client.get_json(JOBS)
    clock.now = logged_in_at + renew_after - 0.001
    client.get_json(JOBS)
    clock.now = logged_in_at + renew_after
    client.get_json(JOBS)

    assert console.trace() == [
        "POST token password",
        f"GET {JOBS} access-1-SECRET",
        f"GET {JOBS} access-1-SECRET",
        "POST token refresh_token",
        f"GET {JOBS} access-2-SECRET",
    ]
    assert form(console.requests[3])["refresh_token"] == "refresh-1-SECRET"


def test_refused_refresh_falls_back_to_a_fresh_login(make_client, clock):
    refused = httpx.Response(400, json={"error": "invalid_grant", "error_description": "expired"})
    console = Console(Script(tokens(1), refused, tokens(3)), Script(httpx.Response(200, json=PAGE)))
    client = make_client(console, auth=password_auth(clock))

    client.get_json(JOBS)
    clock.now += 3600
    client.get_json(JOBS)

    assert console.trace() == [
        "POST token password",
        f"GET {JOBS} access-1-SECRET",
        "POST token refresh_token",
        "POST token password",
        f"GET {JOBS} access-3-SECRET",
    ]


def test_mfa_account_is_told_to_use_an_api_key(make_client, clock):
    mfa = httpx.Response(
        200,
        json={"access_token": None, "token_type": None, "refresh_token": None,
              "expires_in": None, "mfa_token": "mfa-123", "encrypted_code": None},
    )  # fmt: skip
    console = Console(Script(mfa), Script(httpx.Response(200, json=PAGE)))
    client = make_client(console, auth=password_auth(clock))

    with pytest.raises(MfaRequired) as caught:
        client.get_json(JOBS)

    assert str(caught.value) == (
        "The VSPC account 'etl' has multi-factor authentication enforced, so the password "
        "grant cannot log in; use an API key (VSPC_API_KEY) or a service account without MFA."
    )
    assert console.trace() == ["POST token password"]


def test_invalid_grant_names_the_variables_but_not_the_password(make_client, clock):
    refused = httpx.Response(
        400, json={"error": "invalid_grant", "error_description": f"bad password {PASSWORD}"}
    )
    console = Console(Script(refused), Script(httpx.Response(200, json=PAGE)))
    client = make_client(console, auth=password_auth(clock))

    with pytest.raises(AuthenticationError) as caught:
        client.get_json(JOBS)

    assert type(caught.value) is AuthenticationError
    assert str(caught.value) == (
        "The VSPC console refused the login of 'etl' (400, invalid_grant); "
        "check VSPC_USERNAME and VSPC_PASSWORD."
    )
    assert console.trace() == ["POST token password"]
    assert clock.sleeps == []


def test_a_refused_login_is_not_tried_again_in_the_same_run(make_client, clock):
    refused = httpx.Response(400, json={"error": "invalid_grant"})
    console = Console(Script(refused, tokens(2)), Script(httpx.Response(200, json=PAGE)))
    client = make_client(console, auth=password_auth(clock))

    sentences = []
    for _ in range(3):
        with pytest.raises(AuthenticationError) as caught:
            client.get_json(JOBS)
        sentences.append(str(caught.value))

    # More failed logins from one run could lock the account out: the first refusal stands.
    assert console.trace() == ["POST token password"]
    assert (
        sentences
        == [
            "The VSPC console refused the login of 'etl' (400, invalid_grant); "
            "check VSPC_USERNAME and VSPC_PASSWORD."
        ]
        * 3
    )


def test_token_endpoint_without_access_token_is_a_protocol_error(make_client, clock):
    console = Console(Script(httpx.Response(200, json={})), Script(httpx.Response(200, json=PAGE)))
    client = make_client(console, auth=password_auth(clock))

    with pytest.raises(ProtocolError) as caught:
        client.get_json(JOBS)

    assert str(caught.value) == (
        "The VSPC token endpoint /api/v3/token answered 200 without an access token."
    )


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param(httpx.Response(520, json=error_body("Token service down")), id="520"),
        pytest.param(httpx.Response(429, json=error_body(type_="transport", code=429)), id="429"),
        pytest.param(httpx.ConnectError("[Errno 111] Connection refused"), id="refused"),
    ],
)
def test_token_endpoint_transient_failures_are_retried(make_client, clock, failure):
    console = Console(Script(failure, tokens(1)), Script(httpx.Response(200, json=PAGE)))
    client = make_client(console, auth=password_auth(clock))

    assert client.get_json(JOBS) == PAGE
    assert clock.sleeps == [0.5]
    assert [r.url.path for r in console.requests] == ["/api/v3/token", "/api/v3/token", JOBS]


# -- 401 -----------------------------------------------------------------------------------


def test_401_renews_the_session_and_retries_once(make_client, clock, events):
    console = Console(
        Script(tokens(1), tokens(2)),
        Script(httpx.Response(401, json=error_body("Unauthorized", "security")),
               httpx.Response(200, json=PAGE)),
    )  # fmt: skip
    client = make_client(console, auth=password_auth(clock))

    assert client.get_json(JOBS) == PAGE
    assert console.trace() == [
        "POST token password",
        f"GET {JOBS} access-1-SECRET",
        "POST token refresh_token",
        f"GET {JOBS} access-2-SECRET",
    ]
    assert clock.sleeps == []
    assert client.stats.by_outcome == Counter({"ok": 3, "401": 1})
    assert client.stats.retries == 1
    assert events == [
        ("request", "ok"),
        ("request", "401"),
        ("retry", "401"),
        ("request", "ok"),
        ("request", "ok"),
    ]


def test_a_session_ended_after_every_renewal_is_retried_within_the_budget(make_client, clock):
    # Each renewal works, so the credentials are good: every later 401 is a logout by
    # another application, renewed and sent again at once until the attempts run out.
    console = Console(
        Script(*(tokens(n) for n in range(1, 9))),
        Script(httpx.Response(401, json=error_body("Session expired.", "security"))),
    )
    client = make_client(console, auth=password_auth(clock))

    with pytest.raises(RetriesExhausted) as caught:
        client.get_json(JOBS)

    assert str(caught.value) == (
        f"The VSPC console kept ending the session (401: Session expired) for {JOBS} although "
        "every renewal succeeded; gave up after 8 attempts in 0 s: another application is "
        "probably logging in with the same account, so give vspc-etl an account of its own "
        "(VSPC_USERNAME, VSPC_PASSWORD) or an API key (VSPC_API_KEY)."
    )
    assert caught.value.status_code == 401
    assert console.trace() == [
        "POST token password",
        f"GET {JOBS} access-1-SECRET",
        *(line for n in range(2, 9) for line in ("POST token refresh_token",
                                                 f"GET {JOBS} access-{n}-SECRET")),
    ]  # fmt: skip
    assert clock.sleeps == []
    assert client.stats.retries == 7
    assert client.stats.logouts == 7  # every 401 but the first came after a renewal


def test_the_first_401_is_renewed_even_with_a_single_attempt(make_client, clock):
    console = Console(
        Script(tokens(1), tokens(2)),
        Script(httpx.Response(401), httpx.Response(200, json=PAGE)),
    )
    client = make_client(
        console, auth=password_auth(clock), retry=RetryPolicy(jitter=0.0, max_attempts=1)
    )

    assert client.get_json(JOBS) == PAGE
    assert console.trace()[-1] == f"GET {JOBS} access-2-SECRET"
    assert client.stats.logouts == 0


def test_logouts_stop_at_the_elapsed_budget(make_client, clock):
    def slow_401(request: httpx.Request) -> httpx.Response:
        clock.now += 4.0  # each refused request takes 4 s
        return httpx.Response(401)

    console = Console(Script(*(tokens(n) for n in range(1, 9))), Script(slow_401))
    client = make_client(
        console, auth=password_auth(clock), retry=RetryPolicy(jitter=0.0, max_elapsed=10.0)
    )

    with pytest.raises(RetriesExhausted, match=r"gave up after 3 attempts in 12 s: "):
        client.get_json(JOBS)
    assert [line.split()[0] for line in console.trace()].count("GET") == 3


def test_a_session_ended_twice_in_a_row_is_renewed_twice(make_client, clock):
    # Another application logs in right after our renewal: its login ends the new session
    # too. The credentials are good (each renewal worked), so the request is tried again.
    console = Console(
        Script(tokens(1), tokens(2), tokens(3)),
        Script(httpx.Response(401), httpx.Response(401), httpx.Response(200, json=PAGE)),
    )
    client = make_client(console, auth=password_auth(clock))

    assert client.get_json(JOBS) == PAGE
    assert console.trace()[-1] == f"GET {JOBS} access-3-SECRET"
    assert client.stats.retries == 2


def test_a_401_for_a_token_already_renewed_keeps_the_new_one(clock):
    # Threads refused at the same moment: the first renews; the others must not drop the
    # session it got (each extra login may end the others' sessions on a real console).
    auth = password_auth(clock)
    issued = iter([tokens(1), tokens(2), tokens(3)])

    def post(form: Any) -> tuple[int, Any]:
        response = next(issued)
        return response.status_code, response.json()

    first = auth.token(post)
    auth.invalidate(first)  # thread A, refused
    renewed = auth.token(post)
    auth.invalidate(first)  # thread B, refused with the same old token
    assert auth.token(post) == renewed == "access-2-SECRET"
    auth.invalidate(renewed)  # a 401 for the current token does renew
    assert auth.token(post) == "access-3-SECRET"


@pytest.mark.parametrize(("second", "succeeds"), [(200, True), (401, False)])
def test_api_key_gets_the_same_single_retry_on_401(make_client, second, succeeds):
    script = Script(httpx.Response(401), httpx.Response(second, json=PAGE))
    client = make_client(script)

    if succeeds:
        assert client.get_json(JOBS) == PAGE
    else:
        with pytest.raises(AuthenticationError):
            client.get_json(JOBS)
    assert len(script.requests) == 2
    assert all(r.headers["Authorization"] == f"Bearer {API_KEY}" for r in script.requests)


def test_api_key_never_accepted_is_rejected_at_the_second_401(make_client, clock):
    refused = httpx.Response(401, json=error_body("Invalid API key.", "security"))
    client = make_client(Script(refused))

    with pytest.raises(AuthenticationError) as caught:
        client.get_json(JOBS)

    assert str(caught.value) == (
        f"The VSPC console rejected the API key (401) for {JOBS} twice in a row: "
        "Invalid API key; check VSPC_API_KEY."
    )
    assert clock.sleeps == []
    assert client.stats.logouts == 0


def test_api_key_refused_after_it_worked_is_retried_with_backoff(make_client, clock):
    script = Script(
        httpx.Response(200, json=PAGE),
        *[httpx.Response(401)] * 4,
        httpx.Response(200, json=PAGE),
    )
    client = make_client(script)

    assert client.get_json(JOBS) == PAGE
    assert client.get_json(JOBS) == PAGE  # four 401s, then the console takes the key again
    assert len(script.requests) == 6
    assert clock.sleeps == [1.0, 2.0, 4.0]  # the first 401 is retried at once
    assert client.stats.retries == 4


def test_api_key_refused_for_good_after_it_worked_fails_clearly(make_client, clock):
    script = Script(httpx.Response(200, json=PAGE), httpx.Response(401))
    client = make_client(script)

    client.get_json(JOBS)
    with pytest.raises(AuthenticationError) as caught:
        client.get_json(JOBS)

    assert str(caught.value) == (
        f"The VSPC console stopped accepting the API key (401) for {JOBS} after accepting it "
        "earlier in this run; gave up after 8 attempts in 61 s: check in the console that the "
        "key is still enabled, or set a new one (VSPC_API_KEY)."
    )
    assert len(script.requests) == 1 + 8
    assert clock.sleeps == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0]


def test_a_refused_refresh_logs_in_once_more_then_fails_clearly(make_client, clock):
    refused = httpx.Response(400, json={"error": "invalid_grant", "error_description": "gone"})
    console = Console(
        Script(tokens(1), refused),  # the refresh and the new login are both refused
        Script(httpx.Response(200, json=PAGE), httpx.Response(401)),
    )
    client = make_client(console, auth=password_auth(clock))

    client.get_json(JOBS)
    with pytest.raises(AuthenticationError) as caught:
        client.get_json(JOBS)

    assert str(caught.value) == (
        "The VSPC console refused the login of 'etl' (400, invalid_grant); "
        "check VSPC_USERNAME and VSPC_PASSWORD."
    )
    assert console.trace() == [
        "POST token password",
        f"GET {JOBS} access-1-SECRET",
        f"GET {JOBS} access-1-SECRET",
        "POST token refresh_token",
        "POST token password",
    ]
    assert clock.sleeps == []


def test_stats_count_logouts_as_pushback(make_client, clock):
    console = Console(
        Script(tokens(1), tokens(2), tokens(3)),
        Script(httpx.Response(429, json=error_body(type_="transport", retryAfter=0)),
               httpx.Response(401), httpx.Response(401), httpx.Response(200, json=PAGE)),
    )  # fmt: skip
    client = make_client(console, auth=password_auth(clock))

    assert client.get_json(JOBS) == PAGE
    assert (client.stats.by_outcome["429"], client.stats.logouts) == (1, 1)
    assert client.stats.pushback == 2


# -- 202 async actions ---------------------------------------------------------------------


def accepted(location: str = BASE + ACTION) -> httpx.Response:
    return httpx.Response(202, headers={"Location": location})


def action(status: str) -> httpx.Response:
    return httpx.Response(
        200, json={"data": {"id": "a1", "initiatorUid": "u", "actionName": "x", "status": status}}
    )


class AsyncConsole:
    """Routes the original GET, the action status and the action result to three scripts."""

    def __init__(self, original: Script, status: Script, result: Script) -> None:
        self.scripts = {JOBS: original, ACTION: status, ACTION + "/result": result}
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.scripts[request.url.path](request)

    @property
    def paths(self) -> list[str]:
        return [r.url.path for r in self.requests]


RESULT = {"meta": {"pagingInfo": {"total": 1, "count": 1, "offset": 0}}, "data": [{"a": 1}]}


def test_a_wait_for_an_async_action_is_said_once(make_client, clock, caplog):
    console = AsyncConsole(
        Script(accepted()),
        Script(action("running"), action("running"), action("running"), action("succeed")),
        Script(httpx.Response(200, json=RESULT)),
    )
    client = make_client(console)
    caplog.set_level(logging.INFO, logger="etl.extract.client")

    assert client.get_json(JOBS) == RESULT
    assert [r.getMessage() for r in caplog.records] == [
        f"the VSPC console runs GET {JOBS} as async action a1: waiting for it (up to 300 s)"
    ]
    assert clock.sleeps == [0.5, 1.0, 2.0]


@pytest.mark.parametrize("location", [BASE + ACTION, ACTION], ids=["absolute", "relative"])
def test_202_is_polled_until_succeed_then_the_result_is_returned(make_client, clock, location):
    console = AsyncConsole(
        Script(accepted(location)),
        Script(action("running"), action("running"), action("succeed")),
        Script(httpx.Response(200, json=RESULT)),
    )
    client = make_client(console)

    assert client.get_json(JOBS, {"limit": 1}) == RESULT
    assert console.paths == [JOBS, ACTION, ACTION, ACTION, ACTION + "/result"]
    assert clock.sleeps == [0.5, 1.0]
    assert all(r.headers["Authorization"] == f"Bearer {API_KEY}" for r in console.requests)
    assert client.stats.by_outcome == Counter({"202": 1, "ok": 4})


def test_default_port_matches_an_explicit_one(make_client):
    console = AsyncConsole(
        Script(accepted("https://vspc.example.com:443" + ACTION)),
        Script(action("Succeed")),
        Script(httpx.Response(200, json=RESULT)),
    )
    client = make_client(console, base_url="https://vspc.example.com")

    assert client.get_json(JOBS) == RESULT


@pytest.mark.parametrize("status", ["failed", "canceled"])
def test_failed_or_canceled_action_raises(make_client, status):
    console = AsyncConsole(
        Script(accepted()), Script(action(status)), Script(httpx.Response(200, json=RESULT))
    )
    client = make_client(console)

    with pytest.raises(AsyncActionFailed) as caught:
        client.get_json(JOBS)

    assert str(caught.value) == (
        f"The VSPC console ran GET {JOBS} as async action a1 and it ended {status}."
    )
    assert console.paths == [JOBS, ACTION]


def test_action_still_running_after_async_timeout_gives_up(make_client, clock):
    console = AsyncConsole(
        Script(accepted()), Script(action("running")), Script(httpx.Response(200, json=RESULT))
    )
    client = make_client(console, retry=RetryPolicy(jitter=0.0, async_timeout=10.0))

    with pytest.raises(RetriesExhausted) as caught:
        client.get_json(JOBS)

    assert clock.sleeps == [0.5, 1, 2, 4, 2.5]
    assert console.paths == [JOBS] + [ACTION] * 6
    assert str(caught.value) == (
        f"VSPC kept reporting the async action for {JOBS} as 'running'; "
        "gave up after 6 polls in 10 s."
    )


@pytest.mark.parametrize(
    ("location", "origin"),
    [
        ("https://evil.example.com:1280" + ACTION, "https://evil.example.com:1280"),
        ("http://vspc.example.com:1280" + ACTION, "http://vspc.example.com:1280"),
        ("https://vspc.example.com:9999" + ACTION, "https://vspc.example.com:9999"),
        ("//evil.example.com" + ACTION, "https://evil.example.com:443"),
    ],
)
def test_location_on_another_origin_is_not_followed(make_client, location, origin):
    script = Script(accepted(location), httpx.Response(200, json=RESULT))
    client = make_client(script)

    with pytest.raises(ProtocolError) as caught:
        client.get_json(JOBS)

    assert str(caught.value) == (
        f"The VSPC console answered 202 Accepted for {JOBS} with a Location on another "
        f"origin ({origin}); refusing to send credentials there."
    )
    assert [str(r.url) for r in script.requests] == [BASE + JOBS]


def test_202_without_location_is_a_protocol_error(make_client):
    client = make_client(Script(httpx.Response(202)))

    with pytest.raises(ProtocolError) as caught:
        client.get_json(JOBS)

    assert str(caught.value) == (
        f"The VSPC console answered 202 Accepted for {JOBS} without a Location header."
    )


def test_expired_result_reissues_the_original_request_once(make_client):
    console = AsyncConsole(
        Script(accepted(), httpx.Response(200, json=PAGE)),
        Script(action("succeed")),
        Script(httpx.Response(404, json=error_body("Not found", "logical"))),
    )
    client = make_client(console)

    assert client.get_json(JOBS) == PAGE
    assert console.paths == [JOBS, ACTION, ACTION + "/result", JOBS]


def test_result_expiring_twice_gives_up(make_client):
    console = AsyncConsole(
        Script(accepted()), Script(action("succeed")), Script(httpx.Response(404))
    )
    client = make_client(console)

    with pytest.raises(RetriesExhausted) as caught:
        client.get_json(JOBS)

    assert str(caught.value) == (
        f"VSPC kept discarding the async result for {JOBS} before it could be read (404); "
        "gave up after 2 attempts."
    )
    assert console.paths == [JOBS, ACTION, ACTION + "/result"] * 2


def test_polls_are_authenticated_retried_and_renewed_on_401(make_client, clock):
    console = Console(
        Script(tokens(1), tokens(2)),
        Script(
            accepted(),
            httpx.Response(520),
            httpx.Response(401),
            action("succeed"),
            httpx.Response(200, json=RESULT),
        ),
    )
    client = make_client(console, auth=password_auth(clock))

    assert client.get_json(JOBS) == RESULT
    assert console.trace() == [
        "POST token password",
        f"GET {JOBS} access-1-SECRET",
        f"GET {ACTION} access-1-SECRET",
        f"GET {ACTION} access-1-SECRET",
        "POST token refresh_token",
        f"GET {ACTION} access-2-SECRET",
        f"GET {ACTION}/result access-2-SECRET",
    ]
    assert clock.sleeps == [0.5]


# -- secrets -------------------------------------------------------------------------------

SECRETS = [API_KEY, PASSWORD, "access-1-SECRET", "refresh-1-SECRET", "access-2-SECRET",
           "refresh-2-SECRET"]  # fmt: skip


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


def messages(error: BaseException) -> str:
    """Every message along the exception chain."""
    texts = []
    link: BaseException | None = error
    while link is not None:
        texts.append(f"{link!s} {link!r}")
        link = link.__cause__ or link.__context__
    return "\n".join(texts)


def test_reprs_hide_secrets(clock):
    auth = password_auth(clock)
    assert repr(ApiKeyAuth(API_KEY)) == "ApiKeyAuth(api_key=***)"
    assert repr(auth) == "PasswordAuth(username='etl', password=***)"


def test_password_flow_leaks_no_secret_to_logs_errors_or_reprs(make_client, clock, caplog):
    echoed = f"Token access-2-SECRET lacks a role (refresh-2-SECRET, {PASSWORD})"
    console = Console(
        Script(tokens(1), tokens(2)),
        Script(httpx.Response(401), httpx.Response(403, json=error_body(echoed, "security"))),
    )
    auth = password_auth(clock)
    client = make_client(console, auth=auth)
    caplog.set_level(logging.DEBUG)

    with pytest.raises(PermissionDenied) as caught:
        client.get_json(JOBS)

    assert "Token *** lacks a role (***, ***)" in str(caught.value)
    assert console.trace()[-1] == f"GET {JOBS} access-2-SECRET"  # the secrets were really used
    assert_no_secret(messages(caught.value))
    assert_no_secret(caplog.text)
    assert_no_secret(repr(auth) + repr(client) + repr(client.stats))


def test_api_key_flow_leaks_no_secret_to_logs_or_errors(make_client, caplog):
    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"refused while sending {request.headers['Authorization']}")

    client = make_client(
        Script(httpx.Response(520, json=error_body(f"bad key {API_KEY}")), refused),
        retry=RetryPolicy(jitter=0.0, max_attempts=3),
    )
    caplog.set_level(logging.DEBUG)

    with pytest.raises(RetriesExhausted) as caught:
        client.get_json(JOBS)

    assert str(caught.value) == (
        f"VSPC kept refusing the connection (ConnectError: refused while sending Bearer ***) "
        f"for {JOBS}; gave up after 3 attempts in 2 s."
    )
    assert_no_secret(caplog.text)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"n": 123456789012345678}', 123456789012345678),  # 18 digits: orjson, exact
        (b'{"n": 18446744073709551616}', 2**64),  # 20 digits: orjson would make it a float
        (b'{"n": -1180591620717411303424}', -(2**70)),
        (b'{"n": 1, "s": "0000000000000000000"}', 1),  # a digit run in a string: still exact
    ],
)
def test_decode_json_keeps_every_integer_exact(body: bytes, expected: int) -> None:
    value = decode_json(body)["n"]
    assert type(value) is int
    assert value == expected


def test_decode_json_reads_what_orjson_refuses() -> None:
    assert decode_json(b'{"n": NaN, "s": "\\ud800"}')["s"] == "\ud800"


@pytest.mark.parametrize(("bound", "expected"), [(3, 3), (None, 8)])
def test_max_in_flight_bounds_the_requests_of_every_thread(
    bound: int | None, expected: int
) -> None:
    """The job pager and the names reader share one client: together they keep the bound."""
    lock = threading.Lock()
    in_flight = [0]
    peak = [0]
    everyone_waiting = threading.Barrier(8)

    def handler(request: httpx.Request) -> httpx.Response:
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        threading.Event().wait(0.05)
        with lock:
            in_flight[0] -= 1
        return httpx.Response(200, json={"ok": True})

    http = httpx.Client(transport=httpx.MockTransport(handler), base_url=BASE)
    client = VspcClient(http, ApiKeyAuth("k"), retry=EXACT, max_in_flight=bound)

    def worker() -> None:
        everyone_waiting.wait(timeout=5)
        for _ in range(3):
            assert client.get_json("/api/v3/x") == {"ok": True}

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert peak[0] == expected
    assert client.stats.requests == 24
