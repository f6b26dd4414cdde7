"""Settings, read once at the edge (CLI, daemon, tests) and passed down.

Environment variables are the interface (``docs/contract.md``); a ``.env`` file and CLI
flags may override them. Every secret may instead be given as ``<NAME>_FILE`` pointing at a file
that holds it (container secrets). Validation errors become one ``ConfigError`` sentence.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
import ssl
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, PrivateAttr, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from etl.errors import ConfigError

log = logging.getLogger(__name__)

SECRET_VARIABLES = ("VSPC_API_KEY", "VSPC_PASSWORD", "DATABASE_URL")
PLATFORMS = ("windows", "linux", "mac")
"""The platforms whose agent jobs a sync can read (``VSPC_PLATFORMS``), in reading order."""
MAX_PAGE_SIZE = 10_000  # the console's MaxPageSize defaults to 500 but an admin may raise it

# Variables with our prefixes that belong to someone else: not warned about as unknown.
FOREIGN_VARIABLES = frozenset(
    {
        "HTTP_PROXY",  # httpx honours the proxy variables
        "VSPC_ETL_TAG",  # docker-compose.yml: the image tag
        "VSPC_DB_HOST",  # the Grafana data source (deploy/grafana)
        "VSPC_DB_NAME",
        "VSPC_DB_SSLMODE",
        "VSPC_ETL_TEST_PAUSE",  # etl.testhook, for the chaos tests
        "VSPC_FUZZ_EXAMPLES",  # the fuzz tests' long run
    }
)
CHECKED_PREFIXES = ("VSPC_", "SYNC_", "HTTP_", "DATABASE_")

_warned_plain_http: set[str] = set()

_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s?)?")
_DURATION_UNITS = (86_400, 3_600, 60, 1)


def parse_duration(value: object) -> int:
    """Whole seconds from ``900``, ``"900"``, ``"15m"``, ``"1h"`` or ``"1h30m"`` (d, h, m, s)."""
    if isinstance(value, bool):
        raise ValueError("must be a duration such as 900, 15m or 1h")
    if isinstance(value, int):
        return value
    text = str(value).strip().lower().replace(" ", "")
    match = _DURATION.fullmatch(text)
    if not text or match is None or not any(match.groups()):
        raise ValueError("must be a duration such as 900, 15m or 1h (units d, h, m, s)")
    return sum(int(n) * unit for n, unit in zip(match.groups(), _DURATION_UNITS, strict=True) if n)


class Settings(BaseSettings):
    """Everything a run needs to know. Field names map to the upper-case environment variables."""

    model_config = SettingsConfigDict(
        env_file=None, extra="ignore", case_sensitive=False, hide_input_in_errors=True
    )

    database_url: SecretStr | None = None
    vspc_url: str | None = None
    vspc_api_key: SecretStr | None = None
    vspc_username: str | None = None
    vspc_password: SecretStr | None = None
    vspc_ca_bundle: Path | None = None
    vspc_verify_tls: bool = True
    vspc_page_size: int = Field(default=500, ge=1, le=MAX_PAGE_SIZE)
    vspc_source: str | None = None
    vspc_max_delete_ratio: float = Field(default=0.5, ge=0.0, le=1.0)
    vspc_timeout: float = Field(default=60.0, gt=0)
    vspc_max_attempts: int = Field(default=8, ge=1, le=100)
    vspc_retry_budget: float = Field(default=300.0, gt=0)
    vspc_max_passes: int = Field(default=3, ge=1, le=10)
    vspc_concurrency: int = Field(default=4, ge=1, le=32)
    vspc_platforms: str = ",".join(PLATFORMS)
    # 0: every sync reads every restore point
    vspc_restore_points_full_every: int = Field(default=86_400, ge=0, le=366 * 86_400)
    log_level: str = "INFO"
    log_format: Literal["json", "text"] | None = None  # None: json unless stderr is a terminal
    data_dir: Path = Path(".vspc-etl")
    # the daemon (``vspc-etl run``)
    sync_interval: int = Field(default=900, ge=1, le=31 * 86_400)
    sync_cron: str | None = None
    sync_jitter: int = Field(default=30, ge=0, le=86_400)
    sync_run_at_start: bool = True
    shutdown_grace: float = Field(default=60.0, ge=0, le=3_600)
    http_host: str = "0.0.0.0"  # noqa: S104 - probes and Prometheus reach a container from outside
    http_port: int = Field(default=8080, ge=0, le=65_535)

    # Where a value came from, when not from its variable: field -> the flag that gave it.
    _flags: dict[str, str] = PrivateAttr(default_factory=dict)
    # Warnings found while reading the settings, for the caller to log once logging is set up.
    _notices: list[str] = PrivateAttr(default_factory=list)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # load_settings() merges env, .env and *_FILE itself (to resolve secrets from files and
        # to make precedence explicit); pydantic only validates what it is handed.
        return (init_settings,)

    @field_validator("vspc_url", "vspc_username", "vspc_source", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("vspc_platforms", mode="before")
    @classmethod
    def _platforms(cls, value: object) -> str:
        names = [p.strip().lower() for p in str(value).split(",") if p.strip()]
        unknown = [p for p in names if p not in PLATFORMS]
        if unknown or not names:
            raise ValueError(
                f"must be a comma list of {', '.join(PLATFORMS)} (at least one)"
                + (f"; {unknown[0]!r} is not one of them" if unknown else "")
            )
        return ",".join(p for p in PLATFORMS if p in names)

    @field_validator("sync_interval", "vspc_restore_points_full_every", mode="before")
    @classmethod
    def _duration(cls, value: object) -> int:
        return parse_duration(value)

    @field_validator("sync_cron", mode="before")
    @classmethod
    def _crontab(cls, value: object) -> object:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        from etl.crontab import cron_trigger  # the scheduler's library, only for a schedule

        cron_trigger(str(value))  # checked now, so a typo fails at start
        return " ".join(str(value).split())

    @field_validator("log_format", mode="before")
    @classmethod
    def _format(cls, value: object) -> object:
        if isinstance(value, str):
            return value.strip().lower() or None
        return value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level

    # ------------------------------------------------------------------ derived values
    @property
    def platforms(self) -> tuple[str, ...]:
        """The platforms whose jobs a sync reads (``VSPC_PLATFORMS``), in ``PLATFORMS`` order."""
        return tuple(self.vspc_platforms.split(","))

    def label(self, field: str) -> str:
        """How the user gave ``field``: its flag (``--vspc-url``) or its variable (VSPC_URL)."""
        return self._flags.get(field, field.upper())

    @property
    def notices(self) -> list[str]:
        """Warnings about the settings as given (unknown variables), one sentence each."""
        return list(self._notices)

    @property
    def source(self) -> str:
        """Name recorded in ``source`` columns: VSPC_SOURCE, else the console's host."""
        if self.vspc_source:
            return self.vspc_source
        return urlsplit(self.vspc_url or "").hostname or "unknown"

    def secrets(self) -> list[str]:
        """Every secret value this configuration holds, for log redaction."""
        found = [s.get_secret_value() for s in (self.vspc_api_key, self.vspc_password) if s]
        if self.database_url is not None:
            try:
                password = make_url(self.database_url.get_secret_value()).password
            except ArgumentError:
                password = None
            if password:
                found.append(str(password))
        return [s for s in found if s]

    def validate_source(self) -> None:
        """Check what ``sync``/``run`` need from the console side; raise ConfigError if wrong."""
        if not self.vspc_url:
            raise ConfigError(
                "VSPC_URL is not set: give the console's base URL, "
                "e.g. VSPC_URL=https://vspc.example.com:1280"
            )
        url = self.label("vspc_url")
        parts = urlsplit(self.vspc_url)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ConfigError(
                f"{url} {self.vspc_url!r} is not an http(s) URL with a host, "
                "e.g. https://vspc.example.com:1280"
            )
        try:
            parts.port  # noqa: B018 - raises on a malformed port
        except ValueError:
            raise ConfigError(f"{url} {self.vspc_url!r} has an invalid port") from None
        if parts.username or parts.password:
            raise ConfigError(
                f"{url} must not carry credentials; use VSPC_API_KEY or VSPC_USERNAME/VSPC_PASSWORD"
            )
        has_key = self.vspc_api_key is not None and bool(self.vspc_api_key.get_secret_value())
        has_password = self.vspc_password is not None and bool(
            self.vspc_password.get_secret_value()
        )
        if has_key and (self.vspc_username or has_password):
            raise ConfigError(
                "both VSPC_API_KEY and VSPC_USERNAME/VSPC_PASSWORD are set: keep only one "
                "(an API key is recommended)"
            )
        if not has_key:
            if not self.vspc_username and not has_password:
                raise ConfigError(
                    "no VSPC credentials: set VSPC_API_KEY (recommended) or "
                    "VSPC_USERNAME and VSPC_PASSWORD"
                )
            if not self.vspc_username:
                raise ConfigError("VSPC_PASSWORD is set but VSPC_USERNAME is not")
            if not has_password:
                raise ConfigError("VSPC_USERNAME is set but VSPC_PASSWORD is not")
        if parts.scheme == "http" and self.vspc_url not in _warned_plain_http:
            _warned_plain_http.add(self.vspc_url)  # once per process, not at every run
            log.warning(
                "VSPC_URL uses plain http: credentials and data travel unencrypted "
                "(fine for the simulator or behind a TLS-terminating proxy)"
            )
        if self.vspc_verify_tls:
            self.tls_verify()  # reads the CA bundle now so a bad path fails at start

    def tls_verify(self) -> ssl.SSLContext | bool:
        """What httpx should use for ``verify``."""
        if not self.vspc_verify_tls:
            log.warning(
                "VSPC_VERIFY_TLS=false: the console's TLS certificate is NOT verified; "
                "set VSPC_CA_BUNDLE to its CA certificate instead"
            )
            return False
        if self.vspc_ca_bundle is None:
            return True
        path = self.vspc_ca_bundle
        try:
            return ssl.create_default_context(cafile=str(path))
        except FileNotFoundError:
            raise ConfigError(f"VSPC_CA_BUNDLE {str(path)!r} does not exist") from None
        except (OSError, ssl.SSLError) as exc:
            reason = getattr(exc, "strerror", None) or exc.__class__.__name__
            raise ConfigError(
                f"VSPC_CA_BUNDLE {str(path)!r} cannot be read as a PEM certificate file ({reason})"
            ) from None


def _read_secret_files(environ: dict[str, str]) -> dict[str, str]:
    """Resolve ``<NAME>_FILE`` variables into ``<NAME>`` values."""
    resolved: dict[str, str] = {}
    for name in SECRET_VARIABLES:
        path = environ.get(f"{name}_FILE")
        if not path:
            continue
        if environ.get(name):
            raise ConfigError(f"both {name} and {name}_FILE are set: keep only one")
        try:
            resolved[name] = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                f"{name}_FILE {path!r} cannot be read ({exc.strerror or exc.__class__.__name__})"
            ) from None
    return resolved


def _read_env_file(path: Path) -> dict[str, str]:
    from dotenv import dotenv_values

    if not path.is_file():
        raise ConfigError(f"the env file {str(path)!r} does not exist")
    return {k.upper(): v for k, v in dotenv_values(path).items() if v is not None}


def load_settings(
    overrides: dict[str, Any] | None = None,
    *,
    environ: dict[str, str] | None = None,
    env_file: Path | None = None,
    dotenv: bool = True,
    flags: Mapping[str, str] | None = None,
) -> Settings:
    """Build Settings from the environment, an optional ``.env`` file and explicit overrides.

    Precedence: overrides (CLI flags) > environment > ``.env`` file > defaults.
    ``dotenv=False`` ignores ``./.env`` (tests, embedding). ``flags`` names the flag each
    override came from (``{"vspc_page_size": "--page-size"}``), so that an error about it
    names the flag the user typed rather than the variable. Unknown variables with one of our
    prefixes become :attr:`Settings.notices`.
    """
    env = {k.upper(): v for k, v in (os.environ if environ is None else environ).items()}
    merged: dict[str, str] = {}
    notices: list[str] = []
    dotenv_path = env_file if env_file is not None else Path(".env")
    if env_file is not None or (dotenv and dotenv_path.is_file()):
        from_file = _read_env_file(dotenv_path)
        notices += unknown_variables(from_file, f"the env file {str(dotenv_path)!r}")
        merged.update(from_file)
    notices += unknown_variables(env, "the environment")
    merged.update(env)
    merged.update(_read_secret_files(merged))
    fields = {name.upper(): name for name in Settings.model_fields}
    values: dict[str, Any] = {fields[k]: v for k, v in merged.items() if k in fields}
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    values.update(given)
    labels = {k: v for k, v in (flags or {}).items() if k in given}
    try:
        settings = Settings.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, labels)) from None
    settings._flags = labels
    settings._notices = notices
    return settings


def known_variables() -> list[str]:
    """Every variable vspc-etl reads, ``*_FILE`` secrets included."""
    names = [name.upper() for name in Settings.model_fields]
    return sorted([*names, *(f"{name}_FILE" for name in SECRET_VARIABLES)])


def unknown_variables(names: Iterable[str], origin: str) -> list[str]:
    """A warning per variable with one of our prefixes that nothing reads (a typo, mostly)."""
    known = known_variables()
    notices = []
    for name in sorted(n.upper() for n in names):
        if not name.startswith(CHECKED_PREFIXES) or name in known or name in FOREIGN_VARIABLES:
            continue
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
        hint = f": did you mean {close[0]}?" if close else " (the README lists the settings)"
        notices.append(f"{name} in {origin} is not a vspc-etl setting and is ignored{hint}")
    return notices


def _describe(exc: ValidationError, labels: Mapping[str, str]) -> str:
    first = exc.errors()[0]
    field = str(first["loc"][0]) if first["loc"] else ""
    name = labels.get(field, field.upper()) if field else "configuration"
    secret = field.upper() in SECRET_VARIABLES
    given = "" if secret or "input" not in first else f" (got {first['input']!r})"
    return f"{name}: {first['msg']}{given}"
