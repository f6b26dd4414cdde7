"""HTTP client for the VSPC REST API v3: authentication, retries and 202 async actions.

    get_json(path, params)          the decoded body of a 200, following a 202 if need be
    └── _get_ok                     one GET that must end 200 (or 202); renew the session on 401
        └── _send                   one logical request, repeated by tenacity while transient
            └── _attempt            one HTTP exchange; every httpx exception is mapped here

Every failure leaves as an ``etl.errors`` type. Transient ones (429, 408, 5xx/520, retryable
error bodies, timeouts, refused or dropped connections, a 200 that is not JSON) are retried with
capped exponential backoff plus jitter, bounded by attempts and by elapsed time, each retry
logged as it happens; then ``RetriesExhausted`` says what kept failing. What retrying cannot
cure fails at once and says so: an unknown host name, a TLS handshake the server refuses (a
plain-HTTP port named with https://, say), a certificate that does not verify.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, NoReturn

import httpx
import tenacity

from etl.errors import (
    AsyncActionFailed,
    AuthenticationError,
    ConfigError,
    PermissionDenied,
    ProtocolError,
    RequestRejected,
    RetriesExhausted,
    SourceError,
    TransientSourceError,
    VspcEtlError,
)
from etl.extract.auth import TOKEN_PATH, ApiKeyAuth, PasswordAuth
from etl.jsontext import decode_json

_log = logging.getLogger(__name__)

_RETRYABLE_ERROR_TYPES = frozenset({"transport", "retryableLogical"})
_ASYNC_FINAL = frozenset({"succeed", "failed", "canceled"})
_ASYNC_POLL_MAX = 5.0  # seconds between two polls of an async action, at most
_DEFAULT_PORTS = {"https": 443, "http": 80}

Params = Mapping[str, str | int]


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try. Budgets are per request; ``jitter`` is the most added to a backoff."""

    max_attempts: int = 8
    max_elapsed: float = 300.0
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    async_timeout: float = 300.0
    jitter: float = 1.0


@dataclass
class ClientStats:
    """Counters since the client was made: HTTP requests, retries, requests by outcome, and
    logouts (a 401 on a session renewed for that very request: another application ended it).
    """

    requests: int = 0
    retries: int = 0
    by_outcome: Counter[str] = field(default_factory=Counter)
    logouts: int = 0

    @property
    def pushback(self) -> int:
        """Answers telling us to send less at once: 429s and logouts."""
        return self.by_outcome["429"] + self.logouts


@dataclass(frozen=True)
class _Reply:
    response: httpx.Response
    body: Any  # decoded JSON; None when the body is empty or not JSON


class _Transient(TransientSourceError):
    """One attempt worth repeating. ``doing`` completes "VSPC kept ..." in the final message."""

    def __init__(
        self,
        outcome: str,
        doing: str,
        path: str,
        *,
        status_code: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(
            f"VSPC was {doing} for {path}.", status_code=status_code, retry_after=retry_after
        )
        self.outcome = outcome
        self.doing = doing


class _LoggedOut(_Transient):
    """A 401 to send again after renewing the session: the first one of a request, or a
    logout by another application after a renewal that succeeded."""

    def __init__(self, reply: _Reply) -> None:
        path = reply.response.request.url.path
        super().__init__("401", "ending the session (401)", path, status_code=401)
        self.reply = reply


_DEFAULT_RETRY = RetryPolicy()


class VspcClient:
    """Reads JSON from a VSPC console through a caller-configured ``httpx.Client``.

    ``http`` carries the base URL, TLS settings and timeouts. ``sleep`` and ``clock`` are
    injectable so tests never wait; ``on_event(kind, outcome)`` is called once per HTTP
    request (``"request"``) and once per retry (``"retry"``). ``max_in_flight`` bounds the
    requests on the wire at once across every thread using this client (the job pager's and
    the names reader's share it); None leaves them unbounded. ``decoders`` map a path (as
    given to ``get_json``) to the function that decodes its 200 bodies instead of
    :func:`decode_json` (the job pages' typed decoder, ``etl.extract.jobs``).
    """

    def __init__(
        self,
        http: httpx.Client,
        auth: ApiKeyAuth | PasswordAuth,
        *,
        retry: RetryPolicy = _DEFAULT_RETRY,
        sleep: Callable[[float], None] = time.sleep,
        on_event: Callable[[str, str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_in_flight: int | None = None,
        decoders: Mapping[str, Callable[[bytes], Any]] | None = None,
    ) -> None:
        self._http = http
        # Requests go to the base URL's path joined with theirs (httpx keeps a path prefix).
        prefix = http.base_url.path.rstrip("/")
        self._decoders = {f"{prefix}{path}": decode for path, decode in (decoders or {}).items()}
        self._slots: AbstractContextManager[Any] = (
            threading.BoundedSemaphore(max_in_flight) if max_in_flight else nullcontext()
        )
        self._auth = auth
        self._policy = retry
        self._sleep = sleep
        self._on_event = on_event
        self._clock = clock
        self._backoff = tenacity.wait_exponential(
            multiplier=retry.backoff_initial, max=retry.backoff_max
        ) + tenacity.wait_random(0, retry.jitter)
        self._poll_backoff = tenacity.wait_exponential(
            multiplier=retry.backoff_initial, max=min(_ASYNC_POLL_MAX, retry.backoff_max)
        )
        self.stats = ClientStats()
        self._stats_lock = threading.Lock()

    def get_json(self, path: str, params: Params | None = None) -> Any:
        """The decoded JSON body of a 200 for ``GET path``, following a 202 async action."""
        # An async result is kept about five minutes: if it is gone when we come to read it,
        # the original request is sent once more.
        for _ in range(2):
            reply = self._get_ok(path, params, accept_async=True)
            if reply.response.status_code == 200:
                return reply.body
            result = self._async_result(path, reply)
            if result is not None:
                return result.body
        raise RetriesExhausted(
            f"VSPC kept discarding the async result for {path} before it could be read (404); "
            "gave up after 2 attempts."
        )

    # -- one GET, authenticated ---------------------------------------------------------

    def _get_ok(self, url: str | httpx.URL, params: Params | None, *, accept_async: bool) -> _Reply:
        return self._expect(self._get(url, params), accept_async=accept_async)

    def _get(self, url: str | httpx.URL, params: Params | None) -> _Reply:
        """One authenticated GET, answered with anything but 401.

        The first 401 means the session ended (it expired, or another application logged in
        with the same account): renew it and send again at once. Threads refused with the same
        token share one renewal (see ``PasswordAuth.invalidate``). A 401 after that renewal is
        a logout by someone else, not bad credentials, since the renewal proved them: it is
        counted in ``stats.logouts`` (the pager then sends fewer pages at once, as for 429),
        and the request is renewed and sent again at once, within the retry budget
        (``max_attempts`` sends, ``max_elapsed`` seconds). An API key the console has never
        accepted in this run fails at its second 401 (a wrong key); one it has accepted is
        tried again with backoff within the same budget.
        """
        start = self._clock()
        sends = 0

        def send() -> _Reply:
            nonlocal sends
            sends += 1
            reply = self._send("GET", url, params=params)
            if reply.response.status_code != 401:
                self._auth.accepted()
                return reply
            if sends > 1:
                if not self._auth.proven:
                    raise self._key_rejected(reply)
                with self._stats_lock:
                    self.stats.logouts += 1
            sent = reply.response.request.headers.get("Authorization", "")
            self._auth.invalidate(sent.removeprefix("Bearer "))
            raise _LoggedOut(reply)

        def wait(state: tenacity.RetryCallState) -> float:
            # A new session is all a logout needs: waiting would not make the other
            # application log in less often (the pager sends fewer pages at once instead).
            # A key refused after it worked may come back (an administrator editing it, the
            # console restarting): that is waited for like any transient failure.
            if state.attempt_number == 1 or not isinstance(self._auth, ApiKeyAuth):
                return 0.0
            return self._wait(state, start)

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(_LoggedOut),
            wait=wait,
            # The first 401 is always renewed once, whatever the budget: it is routine.
            stop=lambda state: state.attempt_number > 1 and self._stop(state, start),
            sleep=lambda seconds: self._pause(seconds) if seconds else None,
            before_sleep=lambda state: self._note_retry("401"),
            retry_error_callback=lambda state: self._logged_out(state, start),
        )
        return retrying(send)

    def _key_rejected(self, reply: _Reply) -> AuthenticationError:
        return AuthenticationError(
            f"The VSPC console rejected the API key (401) for {reply.response.request.url.path} "
            f"twice in a row{self._detail(reply.body)}; check VSPC_API_KEY.",
            status_code=401,
        )

    def _logged_out(self, state: tenacity.RetryCallState, start: float) -> NoReturn:
        last = _last_transient(state)
        assert isinstance(last, _LoggedOut)
        reply = last.reply
        refused = f"(401{self._detail(reply.body)}) for {reply.response.request.url.path}"
        tried = (
            f"gave up after {_count(state.attempt_number, 'attempt')} "
            f"in {self._clock() - start:.0f} s"
        )
        if isinstance(self._auth, ApiKeyAuth):
            raise AuthenticationError(
                f"The VSPC console stopped accepting the API key {refused} after accepting it "
                f"earlier in this run; {tried}: check in the console that the key is still "
                "enabled, or set a new one (VSPC_API_KEY).",
                status_code=401,
            )
        raise RetriesExhausted(
            f"The VSPC console kept ending the session {refused} although every renewal "
            f"succeeded; {tried}: another application is probably logging in with the same "
            "account, so give vspc-etl an account of its own (VSPC_USERNAME, VSPC_PASSWORD) "
            "or an API key (VSPC_API_KEY).",
            status_code=401,
        )

    def _expect(self, reply: _Reply, *, accept_async: bool) -> _Reply:
        status = reply.response.status_code
        if status == 200 or (status == 202 and accept_async):
            return reply
        path = reply.response.request.url.path
        detail = self._detail(reply.body)
        if status == 403:
            raise PermissionDenied(
                f"The VSPC console denied access to {path} (403): the account's role lacks "
                f"access to it{detail}; give the account a role that may read it.",
                status_code=status,
            )
        if 400 <= status < 500:
            raise RequestRejected(
                f"The VSPC console rejected GET {path} with HTTP {status}{detail}.",
                status_code=status,
            )
        raise ProtocolError(
            f"The VSPC console answered HTTP {status} to GET {path}, "
            f"which the API does not document{detail}.",
            status_code=status,
        )

    # -- 202 Accepted: async actions ----------------------------------------------------

    def _async_result(self, path: str, accepted: _Reply) -> _Reply | None:
        """The async action's result, or None when the console no longer has it (404)."""
        location = self._async_location(path, accepted)
        action = location.path.rstrip("/")
        start = self._clock()
        timeout = self._policy.async_timeout
        _log.info(  # its polls are quiet: say once why the run may wait here for minutes
            "the VSPC console runs GET %s as async action %s: waiting for it (up to %g s)",
            path,
            action.rsplit("/", 1)[-1],
            timeout,
        )

        def give_up(state: tenacity.RetryCallState) -> NoReturn:
            last = state.outcome.result() if state.outcome is not None else "?"
            raise RetriesExhausted(
                f"VSPC kept reporting the async action for {path} as {last!r}; gave up after "
                f"{_count(state.attempt_number, 'poll')} in {self._clock() - start:.0f} s."
            )

        poll = tenacity.Retrying(
            retry=tenacity.retry_if_result(lambda status: status not in _ASYNC_FINAL),
            wait=lambda s: min(self._poll_backoff(s), max(0.0, timeout - self._clock() + start)),
            stop=lambda _: self._clock() - start >= timeout,
            sleep=self._pause,
            retry_error_callback=give_up,
        )
        status = poll(self._async_status, location, path)
        if status != "succeed":
            raise AsyncActionFailed(
                f"The VSPC console ran GET {path} as async action "
                f"{action.rsplit('/', 1)[-1]} and it ended {status}."
            )
        reply = self._get(location.copy_with(path=f"{action}/result"), None)
        if reply.response.status_code == 404:
            return None
        return self._expect(reply, accept_async=False)

    def _async_location(self, path: str, accepted: _Reply) -> httpx.URL:
        origin = accepted.response.request.url
        raw = accepted.response.headers.get("Location")
        if not raw:
            raise ProtocolError(
                f"The VSPC console answered 202 Accepted for {path} without a Location header."
            )
        try:
            location = origin.join(raw)
        except httpx.InvalidURL as exc:
            raise ProtocolError(
                f"The VSPC console answered 202 Accepted for {path} with an invalid Location."
            ) from exc
        if _origin(location) != _origin(origin):
            scheme, host, port = _origin(location)
            raise ProtocolError(
                f"The VSPC console answered 202 Accepted for {path} with a Location on another "
                f"origin ({scheme}://{host}:{port}); refusing to send credentials there."
            )
        return location

    def _async_status(self, location: httpx.URL, path: str) -> str:
        body = self._get_ok(location, None, accept_async=False).body
        data = body.get("data") if isinstance(body, dict) else None
        status = data.get("status") if isinstance(data, dict) else None
        if not isinstance(status, str):
            raise ProtocolError(
                f"The VSPC async action {location.path} (for {path}) answered without data.status."
            )
        return status.lower()

    # -- one logical request, retried ---------------------------------------------------

    def _post_token(self, form: Mapping[str, str]) -> tuple[int, Any]:
        reply = self._send("POST", TOKEN_PATH, data=dict(form), authenticated=False)
        return reply.response.status_code, reply.body

    def _send(
        self,
        method: str,
        url: str | httpx.URL,
        *,
        params: Params | None = None,
        data: dict[str, str] | None = None,
        authenticated: bool = True,
    ) -> _Reply:
        """Any reply that is not transient; transient ones are repeated within the budget."""
        try:
            request = self._http.build_request(
                method, url, params=params, data=data, headers={"Accept": "application/json"}
            )
        except httpx.InvalidURL as exc:
            raise RequestRejected(f"Cannot build a request for {str(url)!r}: {exc}.") from exc
        start = self._clock()
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(_Transient),
            wait=lambda state: self._wait(state, start),
            stop=lambda state: self._stop(state, start),
            sleep=self._pause,
            before_sleep=lambda state: self._before_retry(state, request),
            retry_error_callback=lambda state: self._give_up(state, request.url.path, start),
        )
        return retrying(self._attempt, request, authenticated)

    def _pause(self, seconds: float) -> None:
        self._sleep(float(seconds))  # tenacity passes a float subclass

    def _wait(self, state: tenacity.RetryCallState, start: float) -> float:
        # Backoff never sleeps past the budget; a wait the console asks for is honoured in
        # full (``_stop`` gives up instead when it would not fit).
        remaining = max(0.0, self._policy.max_elapsed - (self._clock() - start))
        return max(min(self._backoff(state), remaining), _asked_wait(state))

    def _stop(self, state: tenacity.RetryCallState, start: float) -> bool:
        elapsed = self._clock() - start
        budget = self._policy.max_elapsed
        return (
            state.attempt_number >= self._policy.max_attempts
            or elapsed >= budget
            or elapsed + _asked_wait(state) > budget
        )

    def _before_retry(self, state: tenacity.RetryCallState, request: httpx.Request) -> None:
        """Count the retry and say it as it happens: a long backoff is never a silent minute."""
        last = _last_transient(state)
        self._note_retry(last.outcome)
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        _log.warning(
            "%s; retrying in %.1f s (attempt %d of at most %d)",
            str(last).rstrip("."),
            wait,
            state.attempt_number + 1,
            self._policy.max_attempts,
        )

    def _note_retry(self, reason: str) -> None:
        with self._stats_lock:
            self.stats.retries += 1
        if self._on_event is not None:
            self._on_event("retry", reason)

    def _give_up(self, state: tenacity.RetryCallState, path: str, start: float) -> NoReturn:
        last = _last_transient(state)
        elapsed = self._clock() - start
        budget = self._policy.max_elapsed
        why = ""
        if (
            last.retry_after
            and state.attempt_number < self._policy.max_attempts
            and elapsed + last.retry_after > budget
        ):
            why = (
                f": the console asked to wait {last.retry_after:g} s, "
                f"beyond the {budget:g} s budget"
            )
        raise RetriesExhausted(
            f"VSPC kept {last.doing} for {path}; gave up after "
            f"{_count(state.attempt_number, 'attempt')} in {elapsed:.0f} s{why}.",
            status_code=last.status_code,
        ) from last

    # -- one HTTP exchange --------------------------------------------------------------

    def _attempt(self, request: httpx.Request, authenticated: bool) -> _Reply:
        if authenticated:
            request.headers["Authorization"] = f"Bearer {self._auth.token(self._post_token)}"
        started = self._clock()
        try:
            # Only the exchange itself holds a slot: never a token request (which takes one of
            # its own), a backoff sleep or the decoding.
            with self._slots:
                response = self._http.send(request)
        except httpx.HTTPError as exc:
            outcome, error = self._map_exception(exc, request.url)
            self._record(request, outcome, started)
            raise error from exc
        try:
            reply = self._classify(response)
        except _Transient as exc:
            self._record(request, exc.outcome, started)
            raise
        except ProtocolError:
            self._record(request, "protocol", started)
            raise
        status = response.status_code
        self._record(request, "ok" if status == 200 else str(status), started)
        return reply

    def _classify(self, response: httpx.Response) -> _Reply:
        status = response.status_code
        path = response.request.url.path
        if status == 200:
            try:
                decode = self._decoders.get(path, decode_json)
                return _Reply(response, decode(response.content))
            except RecursionError:  # the same body would fail again: not worth a retry
                raise ProtocolError(
                    f"The VSPC console answered {path} with JSON nested too deeply to decode "
                    "(more than about 1,000 levels).",
                    status_code=status,
                ) from None
            except ValueError as exc:
                raise _Transient(
                    "invalid_json",
                    "answering HTTP 200 with a body that is not valid JSON (truncated?)",
                    path,
                    status_code=status,
                ) from exc
        body = _json_or_none(response)
        detail = self._detail(body)
        if status == 429:
            raise _Transient(
                "429",
                f"answering HTTP 429 (rate limited{detail})",
                path,
                status_code=status,
                retry_after=_retry_after(body, response.headers),
            )
        if status == 408 or status >= 500:
            kind = "request timeout" if status == 408 else "server error"
            raise _Transient(
                str(status), f"answering HTTP {status} ({kind}{detail})", path, status_code=status
            )
        error_type = _first_error(body).get("type")
        if status != 401 and status >= 400 and error_type in _RETRYABLE_ERROR_TYPES:
            raise _Transient(
                str(status),
                f"answering HTTP {status} ({error_type} error{detail})",
                path,
                status_code=status,
            )
        return _Reply(response, body)

    def _map_exception(self, exc: httpx.HTTPError, url: httpx.URL) -> tuple[str, VspcEtlError]:
        """The stats outcome and the ``etl.errors`` exception for an httpx exception."""
        path = url.path
        detail = self._auth.redact(f"{type(exc).__name__}: {exc}")
        if isinstance(exc, httpx.TimeoutException):
            return "timeout", _Transient("timeout", f"timing out ({detail})", path)
        if isinstance(exc, httpx.ConnectError):
            failure = _tls_verification_failure(exc)
            if failure is not None:
                return "tls", ConfigError(
                    f"TLS verification failed for {url.host}:{_origin(url)[2]} ({failure}); "
                    "set VSPC_CA_BUNDLE to the console's CA certificate (PEM) or, "
                    "at your own risk, VSPC_VERIFY_TLS=false."
                )
            handshake = _tls_handshake_failure(exc)
            if handshake is not None:
                return "tls", ConfigError(
                    f"The TLS handshake with {url.host}:{_origin(url)[2]} failed ({handshake}): "
                    + (
                        "the server there speaks plain HTTP, so VSPC_URL should start with "
                        "http:// (or name the console's HTTPS port)."
                        if handshake == "wrong version number"
                        else "check that VSPC_URL names the console's HTTPS port."
                    )
                )
            resolution = _resolution_failure(exc)
            if resolution is not None and resolution[1]:
                return "dns", ConfigError(
                    f"The host {url.host!r} of VSPC_URL is unknown ({resolution[0]}): "
                    "check the host name in VSPC_URL."
                )
            if resolution is not None:
                doing = f"failing name resolution ({detail})"
                return "dns", _Transient("dns", doing, path)
            return "connect", _Transient("connect", f"refusing the connection ({detail})", path)
        if isinstance(exc, httpx.UnsupportedProtocol):
            return "config", ConfigError(
                f"VSPC_URL must start with https:// (or http://); cannot send {path} ({detail})."
            )
        if isinstance(exc, httpx.LocalProtocolError):
            return "rejected", RequestRejected(f"The request for {path} cannot be sent ({detail}).")
        if isinstance(exc, httpx.TransportError | httpx.DecodingError):
            return "transport", _Transient("transport", f"breaking off the answer ({detail})", path)
        if isinstance(exc, httpx.TooManyRedirects):
            return "redirect", ProtocolError(f"The VSPC console redirected {path} in a loop.")
        return "error", SourceError(f"The request for {path} failed ({detail}).")

    def _record(self, request: httpx.Request, outcome: str, started: float) -> None:
        with self._stats_lock:  # the concurrent pager shares one client between threads
            self.stats.requests += 1
            self.stats.by_outcome[outcome] += 1
        if self._on_event is not None:
            self._on_event("request", outcome)
        _log.debug(
            "%s %s -> %s in %.0f ms",
            request.method,
            request.url.raw_path.decode("ascii"),
            "200" if outcome == "ok" else outcome,
            (self._clock() - started) * 1000,
        )

    def _detail(self, body: Any) -> str:
        """``": <the console's error message>"``, secrets scrubbed, or ``""``."""
        message = _first_error(body).get("message")
        if not isinstance(message, str) or not message.strip():
            return ""
        return f": {self._auth.redact(message.strip().rstrip('.'))}"


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (ValueError, RecursionError):  # an error page in HTML, no body, absurd nesting
        return None


def _first_error(body: Any) -> dict[str, Any]:
    errors = body.get("errors") if isinstance(body, dict) else None
    first = errors[0] if isinstance(errors, list) and errors else None
    return first if isinstance(first, dict) else {}


def _seconds(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return seconds if 0 <= seconds < float("inf") else None


def _retry_after(body: Any, headers: httpx.Headers) -> float | None:
    """The longer of the body's ``errors[0].retryAfter`` and a ``Retry-After`` header."""
    # Only delta-seconds is understood in the header; an HTTP-date falls back to backoff.
    hints = [_seconds(_first_error(body).get("retryAfter")), _seconds(headers.get("Retry-After"))]
    known = [hint for hint in hints if hint is not None]
    return max(known) if known else None


def _last_transient(state: tenacity.RetryCallState) -> _Transient:
    error = state.outcome.exception() if state.outcome is not None else None
    assert isinstance(error, _Transient)  # tenacity retries only on _Transient
    return error


def _asked_wait(state: tenacity.RetryCallState) -> float:
    return _last_transient(state).retry_after or 0.0


def _tls_verification_failure(exc: BaseException) -> str | None:
    """Why the certificate was refused, if ``exc`` comes from a TLS verification failure."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return seen.verify_message or "certificate verify failed"
        seen = seen.__cause__ or seen.__context__
    return "certificate verify failed" if "CERTIFICATE_VERIFY_FAILED" in str(exc) else None


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: BaseException | None = exc
    while seen is not None:
        yield seen
        seen = seen.__cause__ or seen.__context__


# Failures to resolve a name that asking again will not cure; EAI_AGAIN (a DNS server that did
# not answer) is worth a retry.
_NAME_UNKNOWN = frozenset(
    getattr(socket, name)
    for name in ("EAI_NONAME", "EAI_NODATA", "EAI_FAIL")
    if hasattr(socket, name)
)


def _resolution_failure(exc: BaseException) -> tuple[str, bool] | None:
    """(reason, whether it is final) if the console's host name could not be resolved."""
    for cause in _causes(exc):
        if isinstance(cause, socket.gaierror):
            return cause.strerror or str(cause), cause.errno in _NAME_UNKNOWN
    return None


def _tls_handshake_failure(exc: BaseException) -> str | None:
    """Why the TLS handshake failed, unless the connection merely broke off during it."""
    for cause in _causes(exc):
        if isinstance(cause, ssl.SSLEOFError | ssl.SSLZeroReturnError | ssl.SSLSyscallError):
            return None  # dropped mid-handshake: a transient failure like any dropped connection
        if isinstance(cause, ssl.SSLError):
            return str(cause.reason).lower().replace("_", " ") if cause.reason else str(cause)
    return None


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port or _DEFAULT_PORTS.get(url.scheme)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
