"""A test hook: hold a sync at a named point so a chaos test can ``kill -9`` it exactly there.

``VSPC_ETL_TEST_PAUSE=<point>:<marker file>`` makes :func:`pause` write the process id to the
marker file when the run reaches ``<point>``, then wait while that file exists (an hour at
most): the test kills the process there, or deletes the file to let the run go on. Unset, as
it always is outside tests, it costs one dictionary lookup. The points:

    copy      inside a page's COPY: rows sent, the COPY not ended (etl/load/stage.py)
    merge     inside the merge transaction, jobs upserted, history not yet written (merge.py)
    commit    the run's ``success`` row written, just before COMMIT (etl/pipeline.py)
"""

from __future__ import annotations

import os
import time
from pathlib import Path

VARIABLE = "VSPC_ETL_TEST_PAUSE"
POINTS = ("copy", "merge", "commit")
_LONGEST = 3600.0


def pause(point: str) -> None:
    """Hold here while the test's marker file exists, if ``VSPC_ETL_TEST_PAUSE`` names ``point``."""
    spec = os.environ.get(VARIABLE)
    if not spec:
        return
    name, _, marker = spec.partition(":")
    if name != point or not marker:
        return
    path = Path(marker)
    # Written whole, then renamed: a test that sees the marker also sees the pid in it.
    partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    partial.write_text(str(os.getpid()), encoding="ascii")
    partial.replace(path)
    deadline = time.monotonic() + _LONGEST
    while path.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
