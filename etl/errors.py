"""Every error vspc-etl raises on purpose, split by what the caller should do about it.

    VspcEtlError                      base; ``str(exc)`` is one readable sentence, never a secret
    ├── ConfigError                   fix the configuration (CLI exit code 2)
    │   └── SchemaMismatch            schema vspc is missing or at another revision: migrate
    ├── SourceError                   the console could not give us what we asked for
    │   ├── TransientSourceError      worth retrying: 429, 520/5xx, timeouts, dropped connections
    │   │   └── RateLimited           429; ``retry_after`` seconds as the console asked
    │   ├── AuthenticationError       401 / bad credentials: re-authenticate or fix credentials
    │   │   └── MfaRequired           the account has MFA enforced; use an API key instead
    │   ├── PermissionDenied          403: the account lacks a role for this endpoint
    │   ├── RequestRejected           any other 4xx: our request is wrong, retrying will not help
    │   ├── AsyncActionFailed         a 202 async action ended ``failed`` or ``canceled``
    │   ├── ProtocolError             the answer does not follow the API (bad JSON, bad envelope)
    │   └── RetriesExhausted          transient failures outlasted the retry budget
    ├── RecordRejected                one record cannot be loaded: reject it, load the rest
    ├── LoadError                     the database refused the run: fail it, roll everything back
    └── RunCancelled                  asked to stop (daemon shutdown): fail it, roll everything back

The CLI is the only place that turns these into messages and exit codes.
"""

from __future__ import annotations


class VspcEtlError(Exception):
    """Base of all expected failures. The message is meant for the operator."""


class ConfigError(VspcEtlError):
    """The configuration is missing, malformed or contradictory."""


class SchemaMismatch(ConfigError):
    """Schema ``vspc`` is missing, or at a revision other than the one this version needs."""


class SourceError(VspcEtlError):
    """The VSPC console did not deliver what was asked."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class TransientSourceError(SourceError):
    """A failure that may go away if the request is sent again."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status_code=status_code)
        self.retry_after = retry_after


class RateLimited(TransientSourceError):
    """429: the console asks us to slow down for ``retry_after`` seconds."""


class AuthenticationError(SourceError):
    """The console does not accept our credentials or token."""


class MfaRequired(AuthenticationError):
    """The account has multi-factor authentication enforced; the password grant cannot work."""


class PermissionDenied(SourceError):
    """403: authenticated, but the account's role may not read this resource."""


class RequestRejected(SourceError):
    """A 4xx other than 401/403/429: retrying the same request cannot succeed."""


class AsyncActionFailed(SourceError):
    """The console ran the request as an async action and it failed or was canceled."""


class ProtocolError(SourceError):
    """The console's answer does not have the shape the API documents."""


class RetriesExhausted(SourceError):
    """Transient failures went on for longer than the retry budget allows."""


class RecordRejected(VspcEtlError):
    """One record cannot be loaded. ``field`` names the culprit (None for the whole record)."""

    def __init__(self, reason: str, *, field: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field


class LoadError(VspcEtlError):
    """The database could not take the run; nothing of it was committed."""


class RunCancelled(VspcEtlError):
    """The run was asked to stop before it finished; nothing of it was committed."""
