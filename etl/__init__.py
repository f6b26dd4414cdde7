"""vspc-etl: Veeam Service Provider Console agent jobs into PostgreSQL, with history.

Public API: :func:`run_once` (one sync), :func:`load_settings`, :class:`Settings`.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("vspc-etl")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0+unknown"

__all__ = ["__version__"]
