"""Logging set-up: one event per line on stderr, with secrets scrubbed from every record.

Known secret values (API key, password, database password) are replaced wherever they appear;
token-shaped text (``Bearer …``, ``access_token=…``, ``"refresh_token": "…"``) is masked too, so
tokens obtained at run time cannot leak through a library's debug log either.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable

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


_filter = RedactingFilter()


def setup_logging(level: str = "INFO", secrets: Iterable[str] = ()) -> RedactingFilter:
    """Configure the root logger once per process; later calls update level and secrets."""
    _filter.add(secrets)
    root = logging.getLogger()
    handler = next((h for h in root.handlers if getattr(h, "_vspc_etl", False)), None)
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        )
        handler.addFilter(_filter)
        handler._vspc_etl = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)
    # httpx logs every request at INFO; that belongs to DEBUG for an ETL.
    for noisy in ("httpx", "httpcore", "pgserver"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if level == "DEBUG" else logging.WARNING)
    return _filter
