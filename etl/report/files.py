"""Where reports are written: checked before any query, replaced whole or not at all."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from etl.errors import ConfigError


def check_writable(path: Path, flag: str, *, directory: bool = False) -> None:
    """ConfigError, naming ``flag``, if ``path`` (a file, or a directory) cannot be written.

    Missing parent directories are fine when the nearest existing one is writable: they are
    created when the file is written.
    """
    shown = str(path)
    if path.exists():
        if directory and not path.is_dir():
            raise ConfigError(f"{flag} {shown!r} is a file: give a directory")
        if not directory and path.is_dir():
            raise ConfigError(f"{flag} {shown!r} is a directory: give a file name")
        if not os.access(path, os.W_OK):
            raise ConfigError(f"{flag} {shown!r} is not writable: choose another path")
        if not directory:
            _writable_dir(path.parent, flag, shown)
        return
    _writable_dir(path.parent, flag, shown)


def _writable_dir(parent: Path, flag: str, shown: str) -> None:
    existing = parent.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(
            f"{flag} {shown!r}: {str(existing)!r} is a file, not a directory; choose another path"
        )
    try:  # the one sure test, whoever runs it and whatever the file system: write there
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(
            f"{flag} {shown!r}: cannot write in {str(existing)!r} ({reason}); choose another path"
        ) from exc


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A temporary file beside ``path`` that replaces it when the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    temporary = Path(name)
    try:
        yield temporary
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_text(path: Path, content: str) -> None:
    """Write ``content`` to ``path`` whole (UTF-8)."""
    with replacing(path) as temporary:
        temporary.write_text(content, encoding="utf-8")


def write_with(path: Path, write: Callable[[Path], None]) -> None:
    """Let ``write`` fill a temporary file that then replaces ``path``."""
    with replacing(path) as temporary:
        write(temporary)
