"""Logging set-up: one event per line on stderr, with secrets scrubbed from every record.

Known secret values (API key, password, database password) are replaced wherever they appear;
token-shaped text (``Bearer …``, ``access_token=…``, ``"refresh_token": "…"``) is masked too, so
tokens obtained at run time cannot leak through a library's debug log either.

Two formats: ``text`` for a person at a terminal, ``json`` (one object per line: ``timestamp``,
``level``, ``logger``, ``event``, plus ``run_id``, ``source``, ``status``, ``counts`` and
``duration_s`` when the caller passes them with ``extra=``) for a log collector.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Literal

MASK = "***"
_TOKENISH = re.compile(
    r"(?i)(bearer\s+|(?:access_token|refresh_token|password|api_key|mfa_token)"
    r"[\"']?\s*[:=]\s*[\"']?)([^\s\"'&,}]+)"
)


class RedactingFilter(logging.Filter):
    """Rewrites each record's message with secrets masked (attach it to handlers)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets: set[str] = set()
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        # Very short values would mask innocent text; they are not plausible secrets anyway.
        self.secrets.update(s for s in secrets if s and len(s) >= 4)

    def redact(self, text: str) -> str:
        for secret in sorted(self.secrets, key=len, reverse=True):
            text = text.replace(secret, MASK)
        return _TOKENISH.sub(lambda m: m.group(1) + MASK, text)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = self.redact(message)
        if record.exc_info and record.exc_info[1] is not None:
            # Formatting the traceback later would bypass us: render and scrub it now.
            clean += "\n" + self.redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
            record.exc_text = None
        record.msg, record.args = clean, ()
        return True


# Fields a caller may attach with ``extra=`` that the JSON format carries.
EXTRA_FIELDS = ("run_id", "source", "status", "counts", "duration_s", "error")


class JsonFormatter(logging.Formatter):
    """One JSON object per record. The message was scrubbed by the filter; extras are here."""

    def __init__(self, redacting: RedactingFilter) -> None:
        super().__init__()
        self.redacting = redacting

    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "event": record.getMessage(),
        }
        for name in EXTRA_FIELDS:
            if name in record.__dict__:
                event[name] = self._scrub(record.__dict__[name])
        if record.exc_info and record.exc_info[1] is not None:  # no filter ran (foreign handler)
            event["event"] += "\n" + self.redacting.redact(self.formatException(record.exc_info))
        return json.dumps(event, ensure_ascii=False, default=str)

    def _scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.redacting.redact(value)
        if isinstance(value, dict):
            return {str(k): self._scrub(v) for k, v in value.items()}
        return value


TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"

_filter = RedactingFilter()


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record is emitted, not when it was made:
    a command run in-process (tests, an embedding program) gets its own log on its stderr."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass  # StreamHandler.__init__ assigns one; the current sys.stderr always wins


def resolve_format(log_format: str | None) -> Literal["json", "text"]:
    """``json`` or ``text``; unset means json unless stderr is a terminal."""
    if log_format in ("json", "text"):
        return log_format  # type: ignore[return-value]
    return "text" if sys.stderr.isatty() else "json"


def setup_logging(
    level: str = "INFO", secrets: Iterable[str] = (), log_format: str | None = None
) -> RedactingFilter:
    """Configure the root logger once per process; later calls update level, secrets, format."""
    _filter.add(secrets)
    root = logging.getLogger()
    handler = next((h for h in root.handlers if getattr(h, "_vspc_etl", False)), None)
    if handler is None:
        handler = _StderrHandler()
        handler.addFilter(_filter)
        handler._vspc_etl = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    if resolve_format(log_format) == "json":
        handler.setFormatter(JsonFormatter(_filter))
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT, "%H:%M:%S"))
    root.setLevel(level)
    # httpx logs every request at INFO and APScheduler every job start and end; that belongs
    # to DEBUG for an ETL (the daemon logs each run itself), as do alembic's context lines and
    # matplotlib's font cache; `vspc-etl migrate` says itself what it did.
    for noisy in ("httpx", "httpcore", "pgserver", "apscheduler", "alembic", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if level == "DEBUG" else logging.WARNING)
    return _filter
