"""Credentials for the VSPC REST API: an API key, or the OAuth-style password grant.

Both end in ``Authorization: Bearer <token>``. The auth objects never talk HTTP themselves:
the client hands ``token()`` a ``PostToken`` callable that sends a form to ``/api/v3/token``
with the client's retries and returns ``(status, decoded JSON body or None)``. That keeps one
retry policy and one place where HTTP errors are mapped.

Secrets (API key, password, access and refresh tokens) stay inside these objects: ``repr``
hides them, and ``redact`` scrubs them from any text the console sends back before it goes
into an error message.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from etl.errors import AuthenticationError, ConfigError, MfaRequired, ProtocolError

TOKEN_PATH = "/api/v3/token"  # noqa: S105 (a URL path, not a password)

PostToken = Callable[[Mapping[str, str]], tuple[int, Any]]
"""Sends a form to the token endpoint; returns the HTTP status and the decoded JSON body."""

# The vendor documents a one-hour access token; used when a 200 omits ``expires_in``.
_DEFAULT_LIFETIME = 3600.0


def _scrub(text: str, secrets: tuple[str | None, ...]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


class ApiKeyAuth:
    """An API key generated in the console, sent as the bearer token as is."""

    def __init__(self, api_key: str) -> None:
        if not api_key.strip():
            raise ConfigError("VSPC_API_KEY is set but empty.")
        self._api_key = api_key
        self._accepted = False

    def __repr__(self) -> str:
        return "ApiKeyAuth(api_key=***)"

    def token(self, post: PostToken) -> str:
        """The bearer token to send now."""
        return self._api_key

    @property
    def proven(self) -> bool:
        """Whether the console has accepted the key in this run.

        Until it has, a 401 that a retry does not cure means a wrong, revoked or disabled
        key: the run fails at once. Once it has, a 401 is taken for a passing refusal (an
        administrator editing the key, a console restarting its identity service) and
        retried within the retry budget like any transient failure.
        """
        return self._accepted

    def accepted(self) -> None:
        """Note that the console answered a request sent with this key with anything but 401."""
        self._accepted = True

    def invalidate(self, refused: str | None = None) -> None:
        """Forget the current token after a 401; an API key has nothing to renew."""

    def redact(self, text: str) -> str:
        """``text`` with every secret this object holds replaced by ``***``."""
        return _scrub(text, (self._api_key,))


class PasswordAuth:
    """Password grant with refresh before expiry and a fresh login when the refresh is refused.

    ``clock`` is injectable so tests can move time forward without sleeping.
    """

    def __init__(
        self,
        username: str,
        password: str,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not username.strip() or not password:
            raise ConfigError("VSPC_USERNAME and VSPC_PASSWORD must both be set and non-empty.")
        self._username = username
        self._password = password
        self._clock = clock
        self._access_token: str | None = None
        self._refresh_token: str | None = None
        self._renew_at = 0.0
        self._refusal: AuthenticationError | None = None
        # The concurrent pager asks from several threads: one of them logs in, the rest wait.
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"PasswordAuth(username={self._username!r}, password=***)"

    def token(self, post: PostToken) -> str:
        """The bearer token to send now, logging in or refreshing first when it is due.

        A refused login is final for this object (one run): every later call raises the same
        error without asking the console again, since repeated failed logins from the threads
        of one run could lock the account out.
        """
        with self._lock:
            if self._refusal is not None:
                raise type(self._refusal)(str(self._refusal))
            try:
                return self._token(post)
            except AuthenticationError as exc:  # refused, or MFA enforced
                self._refusal = exc
                raise

    def _token(self, post: PostToken) -> str:
        if self._access_token is not None and self._clock() < self._renew_at:
            return self._access_token
        self._access_token = None
        refresh_token, self._refresh_token = self._refresh_token, None
        if refresh_token is not None:
            # A used refresh token is dead whatever the answer; any refusal (400 per the
            # vendor) means the session is gone, so fall back to a full login.
            status, body = post({"grant_type": "refresh_token", "refresh_token": refresh_token})
            if status == 200:
                return self._accept(body)
        status, body = post(
            {"grant_type": "password", "username": self._username, "password": self._password}
        )
        if status == 200:
            return self._accept(body)
        raise self._login_refused(status, body)

    proven = True
    """A 401 never questions the password: a session exists only after a login the console
    accepted, and a refused login or refresh-then-login raises in ``token()``. So a 401 on a
    renewed session is a logout by another application on the same account, retried within
    the retry budget."""

    def accepted(self) -> None:
        """Nothing to note: the login itself proved the credentials."""

    def invalidate(self, refused: str | None = None) -> None:
        """Drop the access token after a 401; the next ``token()`` refreshes or logs in.

        ``refused``: the token the 401 answered. When another thread has renewed the session
        since, that newer token stays: dropping it would make every thread that was refused
        at the same moment log in again, and each login may end the others' sessions.
        """
        with self._lock:
            if refused is None or refused == self._access_token:
                self._access_token = None

    def redact(self, text: str) -> str:
        """``text`` with every secret this object holds replaced by ``***``."""
        return _scrub(text, (self._password, self._access_token, self._refresh_token))

    def _accept(self, body: Any) -> str:
        fields = body if isinstance(body, dict) else {}
        access_token = fields.get("access_token")
        if not isinstance(access_token, str) or not access_token:
            if fields.get("mfa_token"):
                raise MfaRequired(
                    f"The VSPC account {self._username!r} has multi-factor authentication "
                    "enforced, so the password grant cannot log in; use an API key "
                    "(VSPC_API_KEY) or a service account without MFA."
                )
            raise ProtocolError(
                f"The VSPC token endpoint {TOKEN_PATH} answered 200 without an access token."
            )
        lifetime = fields.get("expires_in")
        if isinstance(lifetime, bool) or not isinstance(lifetime, int | float) or lifetime <= 0:
            lifetime = _DEFAULT_LIFETIME
        # Renew with 10% of the lifetime left, at least 60 s, but never later than half-way,
        # so a short-lived token is not renewed on every request.
        margin = min(max(60.0, lifetime * 0.1), lifetime * 0.5)
        refresh_token = fields.get("refresh_token")
        self._access_token = access_token
        self._refresh_token = refresh_token if isinstance(refresh_token, str) else None
        self._renew_at = self._clock() + lifetime - margin
        return access_token

    def _login_refused(self, status: int, body: Any) -> AuthenticationError:
        error = body.get("error") if isinstance(body, dict) else None
        reason = f"{status}, {self.redact(error)}" if isinstance(error, str) else str(status)
        return AuthenticationError(
            f"The VSPC console refused the login of {self._username!r} ({reason}); "
            "check VSPC_USERNAME and VSPC_PASSWORD."
        )
