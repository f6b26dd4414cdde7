"""Settings, read once at the edge (CLI, daemon, tests) and passed down.

Environment variables are the interface (``docs/contract.md``); a ``.env`` file and CLI
flags may override them. Every secret may instead be given as ``<NAME>_FILE`` pointing at a file
that holds it (container secrets). Validation errors become one ``ConfigError`` sentence.
"""

from __future__ import annotations

import logging
import os
import re
import ssl
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from etl.errors import ConfigError

log = logging.getLogger(__name__)

SECRET_VARIABLES = ("VSPC_API_KEY", "VSPC_PASSWORD", "DATABASE_URL")
MAX_PAGE_SIZE = 10_000  # the console's MaxPageSize defaults to 500 but an admin may raise it

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

    @field_validator("sync_interval", mode="before")
    @classmethod
    def _duration(cls, value: object) -> int:
        return parse_duration(value)

    @field_validator("sync_cron", mode="before")
    @classmethod
    def _crontab(cls, value: object) -> object:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        from etl.schedule import cron_trigger  # checked now, so a typo fails at start

        cron_trigger(str(value))
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
        parts = urlsplit(self.vspc_url)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ConfigError(
                f"VSPC_URL {self.vspc_url!r} is not an http(s) URL with a host, "
                "e.g. https://vspc.example.com:1280"
            )
        try:
            parts.port  # noqa: B018 - raises on a malformed port
        except ValueError:
            raise ConfigError(f"VSPC_URL {self.vspc_url!r} has an invalid port") from None
        if parts.username or parts.password:
            raise ConfigError(
                "VSPC_URL must not carry credentials; use VSPC_API_KEY or "
                "VSPC_USERNAME/VSPC_PASSWORD"
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
        if parts.scheme == "http":
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
) -> Settings:
    """Build Settings from the environment, an optional ``.env`` file and explicit overrides.

    Precedence: overrides (CLI flags) > environment > ``.env`` file > defaults.
    ``dotenv=False`` ignores ``./.env`` (tests, embedding).
    """
    env = dict(os.environ if environ is None else environ)
    merged: dict[str, str] = {}
    dotenv_path = env_file if env_file is not None else Path(".env")
    if env_file is not None or (dotenv and dotenv_path.is_file()):
        merged.update(_read_env_file(dotenv_path))
    merged.update({k.upper(): v for k, v in env.items()})
    merged.update(_read_secret_files(merged))
    fields = {name.upper(): name for name in Settings.model_fields}
    values: dict[str, Any] = {fields[k]: v for k, v in merged.items() if k in fields}
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return Settings.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    first = exc.errors()[0]
    name = str(first["loc"][0]).upper() if first["loc"] else "configuration"
    secret = name in SECRET_VARIABLES
    given = "" if secret or "input" not in first else f" (got {first['input']!r})"
    return f"{name}: {first['msg']}{given}"
