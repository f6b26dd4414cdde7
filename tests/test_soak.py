"""The short soak: consecutive syncs against a changing console failing 10 % of requests.

The full one (300 runs) is ``python bench/soak.py``; results in bench/RESULTS.md.
"""

from __future__ import annotations

from sqlalchemy import Engine
from sqlalchemy.engine import URL

from bench.soak import FAULTS, soak


def test_short_soak_keeps_every_invariant_and_loses_nothing(
    fresh_db: Engine, database_url: URL
) -> None:
    report = soak(fresh_db, database_url, runs=40, jobs=60, page_size=10, rate=0.1, seed=3)
    assert report.violations == []
    assert report.lost == 0
    assert report.final_lost == 0
    assert report.final_jobs > 0
    assert report.points_lost == 0
    assert report.final_points_lost == 0
    assert report.final_points > report.final_jobs
    assert report.full_reads >= 1  # the first sync and the last at least
    assert report.runs >= 40
    assert report.statuses["success"] >= 38  # a failed run is allowed, not a broken warehouse
    assert report.complete >= 30
    assert set(report.faults) == set(FAULTS)  # every kind was really injected
    assert sum(report.faults.values()) >= report.requests * 0.05
