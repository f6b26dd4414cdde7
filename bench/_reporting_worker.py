"""One sync in a process of its own for bench/reporting_bench.py; prints a JSON line of figures.

    python bench/_reporting_worker.py [--without-reporting]

Settings come from the environment like ``vspc-etl sync``. ``--without-reporting`` runs the
same sync with the reporting layer switched off (no names read, no sessions, no days): the
baseline the reporting layer's cost is measured against.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import etl.extract.reader
import etl.load.reporting
from etl.collections import NamesRead
from etl.config import load_settings
from etl.db import make_engine
from etl.extract.names import Names
from etl.pipeline import run_once


def _no_names(client: Any, inbox: etl.extract.reader.Channel, **kwargs: Any) -> None:
    inbox.put(NamesRead(Names()))


def main() -> int:
    if "--without-reporting" in sys.argv:
        etl.extract.reader.read_names = _no_names
        etl.load.reporting.record_job_runs = lambda conn, **kw: None  # type: ignore[assignment,return-value]
    settings = load_settings(dotenv=False)
    engine = make_engine(settings)
    started = time.perf_counter()
    result = run_once(settings, engine=engine)
    wall = time.perf_counter() - started
    engine.dispose()
    figures = {
        "status": result.status,
        "error": result.error,
        "inserted": result.inserted,
        "updated": result.updated,
        "wall_s": round(wall, 3),
        "timings": {k: round(v, 3) for k, v in result.timings.items()},
    }
    print(json.dumps(figures))
    return 0 if result.status == "success" else 1


if __name__ == "__main__":
    sys.exit(main())
