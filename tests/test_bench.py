"""The benchmark scripts still run end to end (tiny sizes): their figures are the issues' evidence.

Each runs as a user would run it, in a process of its own, on the test session's PostgreSQL
(BENCH_DATABASE_URL) and simulators on 127.0.0.1; the tests read the Markdown it prints.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL

ROOT = Path(__file__).resolve().parent.parent


def run_bench(script: str, server_url: URL, *args: str) -> str:
    env = dict(os.environ, BENCH_DATABASE_URL=server_url.render_as_string(hide_password=False))
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def table_rows(output: str, first_cell: str) -> list[list[str]]:
    return [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in output.splitlines()
        if line.startswith(f"| {first_cell}")
    ]


def bench_databases(server_url: URL) -> list[str]:
    engine = create_engine(server_url)
    with engine.connect() as conn:
        names = conn.execute(
            text("SELECT datname FROM pg_database WHERE datname LIKE 'vspc_etl_%bench_%'")
        ).scalars()
        found = list(names)
    engine.dispose()
    return found


def test_sync_bench_runs_every_case(server_url: URL) -> None:
    before = bench_databases(server_url)
    out = run_bench(
        "sync_bench.py", server_url, "--jobs", "1000", "--latency", "0.01", "--latency-jobs", "1000"
    )
    rows = {row[1]: row for row in table_rows(out, "1,000")}
    assert list(rows) == ["first sync", "10 % changed", "unchanged", "+10 ms/request"]
    assert rows["first sync"][-1] == "1,000 inserted"
    assert rows["10 % changed"][-1] == "100 updated"
    assert rows["unchanged"][-1] == "1,000 unchanged"
    bound = re.fullmatch(
        r"(\d+) pages of (\d+) collections; bound ([0-9.]+) s; target .* s; (met|MISSED)",
        rows["+10 ms/request"][-1],
    )
    # 1,000 jobs of three platforms and their names: a page or two per collection; their
    # restore points, a first sync reads all of them: ~7 per job
    assert bound is not None and 16 <= int(bound.group(1)) <= 40
    # three platforms' jobs, organizations, both agent kinds, restore points; not the
    # simulator's control requests
    assert int(bound.group(2)) == 7
    assert float(bound.group(3)) == round(int(bound.group(1)) * 0.01 / 4, 2)
    for row in rows.values():
        assert float(row[2]) > 0  # wall seconds
        assert 20 < float(row[4]) < 1000  # peak RSS in MB, of the ETL process
    assert bench_databases(server_url) == before  # its throwaway databases are gone


def import_sync_bench() -> ModuleType:
    """``bench/sync_bench.py`` as a module (it imports its neighbours as scripts do)."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        return importlib.import_module("sync_bench")
    finally:
        sys.path.remove(str(ROOT / "bench"))


def test_a_console_like_the_baselines_serves_the_windows_jobs_and_organizations_only() -> None:
    sync_bench = import_sync_bench()
    api = "/api/v3"
    with (
        sync_bench.simulator(30, 0.0, like_baseline=True) as url,
        httpx.Client(base_url=url + api, headers={"Authorization": "Bearer bench-api-key"}) as c,
    ):
        jobs = c.get("/infrastructure/backupAgents/windows/jobs").json()
        assert jobs["meta"]["pagingInfo"]["total"] == 30  # every job a Windows one
        assert c.get("/organizations").status_code == 200
        refused = [
            "/infrastructure/backupAgents",
            "/infrastructure/backupAgents/windows",
            "/infrastructure/managementAgents",
            "/protectedWorkloads/computersManagedByConsole/restorePoints",
        ]
        assert [c.get(path).status_code for path in refused] == [404] * 4


def test_the_consoles_clock_starts_now_or_when_asked() -> None:
    sync_bench = import_sync_bench()
    before = datetime.now(UTC).replace(second=0, microsecond=0)
    now = sync_bench.console_start("now")
    assert before <= now <= datetime.now(UTC) and (now.second, now.microsecond) == (0, 0)
    asked = sync_bench.console_start("2026-12-01T06:30:00+01:00")
    assert asked == datetime(2026, 12, 1, 5, 30, tzinfo=UTC)
    for wrong, why in (("2026-12-01T06:30:00", "has no UTC offset"), ("today", "neither")):
        with pytest.raises(argparse.ArgumentTypeError, match=why):
            sync_bench.console_start(wrong)
    with sync_bench.simulator(30, 0.0, like_baseline=True, start=asked) as url:
        stats = httpx.get(f"{url}/_sim/stats", timeout=30).json()
        assert datetime.fromisoformat(stats["now"]) == asked


def test_sync_bench_compares_with_a_baseline_doing_the_same_work(server_url: URL) -> None:
    # This checkout as its own baseline: both sides read the Windows jobs and their names only.
    out = run_bench("sync_bench.py", server_url, "--jobs", "1000", "--baseline", str(ROOT))
    rows = table_rows(out, "1,000")
    assert [row[1] for row in rows] == [
        f"{case} ({side})"
        for case in ("first sync", "10 % changed", "unchanged")
        for side in ("this", "baseline")
    ]
    notes = [row[-1] for row in rows]
    assert notes[1::2] == ["1,000 inserted", "100 updated", "1,000 unchanged"]
    for note, expected in zip(notes[::2], notes[1::2], strict=True):
        match = re.fullmatch(rf"{expected}; [0-9.]+ x baseline, CPU ([0-9.]+) x", note)
        assert match, note
        # The same code on both sides: the two processes' CPU times are alike (start included).
        assert 0.5 < float(match[1]) < 2, note


def test_a_syncs_cpu_time_counts_its_whole_process(
    server_url: URL, monkeypatch: pytest.MonkeyPatch
) -> None:
    sync_bench = import_sync_bench()
    monkeypatch.setenv("BENCH_DATABASE_URL", server_url.render_as_string(hide_password=False))
    with sync_bench.simulator(200, 0.0) as url, sync_bench.database() as db:
        figures = sync_bench.sync(db, url, 2)
    assert (figures["status"], figures["inserted"]) == ("success", 200)
    # The worker's own figure is the run's; the one the pairs compare adds its start and imports.
    assert figures["process_cpu_s"] > figures["cpu_s"] > 0


def test_sync_bench_repeats_on_new_databases_and_summarises(server_url: URL) -> None:
    out = run_bench(
        "sync_bench.py", server_url, "--jobs", "1000", "--repeat", "2", "--start", "now"
    )
    rows = table_rows(out, "1,000")
    runs = [row for row in rows if len(row) == 10]
    summary = {row[1]: row for row in rows if len(row) == 6}
    cases = ["first sync", "10 % changed", "unchanged"]
    assert [row[1] for row in runs] == cases * 2
    # each repetition starts from an empty warehouse: its first sync inserts every job
    assert [row[-1] for row in runs if row[1] == "first sync"] == ["1,000 inserted"] * 2
    assert [row[-1] for row in runs if row[1] == "unchanged"] == ["1,000 unchanged"] * 2
    assert list(summary) == cases
    for case, row in summary.items():
        walls = sorted(float(r[2]) for r in runs if r[1] == case)
        assert row[2] == "2"
        assert (float(row[4]), float(row[5])) == (walls[0], walls[1])
        # the median of two runs is their mean (the table rounds each to 0.01 s)
        assert abs(float(row[3]) - (walls[0] + walls[1]) / 2) <= 0.011


def test_reporting_bench_runs_its_pairs_and_queries(server_url: URL) -> None:
    hours = {datetime.now(UTC).hour}
    out = run_bench(
        "reporting_bench.py",
        server_url,
        *("--jobs", "200", "--orgs", "4", "--days", "10"),
        *("--daily", "1", "--hourly", "2", "--repeat", "1"),
    )
    hours.add(datetime.now(UTC).hour)
    history = re.search(
        r"History: 200 jobs over 4 organizations \(([0-9]+) of them have run\), 10 days: "
        r"([0-9,]+) snapshot versions \([^)]*\), ([0-9,]+) sessions",
        out,
    )
    assert history is not None, out
    ran = int(history.group(1))
    assert 150 < ran < 200  # the simulator makes some jobs that have never run: no history
    assert history.group(2) == history.group(3) == f"{ran * 10:,}"
    # the history ends before every job's first observed session: the first sync appends them
    first = re.search(r"its ([0-9,]+) sessions .*; ([0-9,]+) of them older than a stored", out)
    assert first is not None, out
    assert 100 < int(first.group(1).replace(",", "")) <= ran and first.group(2) == "0"
    daily = table_rows(out, "after 24 h")
    assert len(daily) == 1
    summary = re.search(
        r"daily \(all jobs ran\), 1 A/B pairs: added median ([-+0-9.]+)% .*; mean wall with / "
        r"mean wall without ([-+0-9.]+)%\)",
        out,
    )
    assert summary is not None, out
    # one pair: its own added figure, by either measure
    assert summary.group(1) == summary.group(2) == daily[0][5].rstrip("%")
    assert len(table_rows(out, "after 1 h")) in {min(2, h) for h in hours}
    queries = {row[0]: row for row in table_rows(out, "")}
    assert queries["job_sla_current, all jobs"][-1] == "200"
    assert queries["dashboard: organization"][-1] == "4"
    assert "`UPDATE vspc.report_settings SET time_zone = 'Europe/Moscow'`" in queries


def test_report_bench_times_one_organization_and_all(server_url: URL) -> None:
    month = datetime.now(UTC).strftime("%Y-%m")  # the demo's short history ends now
    out = run_bench(
        "report_bench.py", server_url, "--jobs", "40", "--days", "2", "--month", month,
        "--repeat", "1",
    )  # fmt: skip
    rows = table_rows(out, "40")
    assert [row[:2] for row in rows] == [["40", "2"], ["40", "2"]]  # one organization per 20 jobs
    assert rows[0][2].startswith("`--organization` (")
    assert rows[1][2] == "`--all-organizations` (2 files)"
    for row in rows:
        median, most, cpu = (float(cell) for cell in row[3:])
        assert 0 < median <= most and cpu > 0
    # the restore points it added, and every day of the month answered by the fast query
    found = re.search(r"^restore points: ([\d,]+); days asked of job_sla_at: (\d+)$", out, re.M)
    assert found and int(found[1].replace(",", "")) > 0 and found[2] == "0"
    assert "vspc_etl_report_bench_40" not in bench_databases(server_url)  # dropped


def test_points_bench_pairs_syncs_with_and_without_restore_points(server_url: URL) -> None:
    """Its pairs are a *new* read of the points beside a refused one, then a full read; each
    ratio is the points side's time over the other's, and the summary their median."""
    out = run_bench(
        "points_bench.py", server_url, "--jobs", "200", "--days", "1", "--pairs", "3",
        "--full-pairs", "1",
    )  # fmt: skip
    stored = re.search(r"([\d,]+) restore points stored after 1 days", out)
    assert stored is not None and int(stored.group(1).replace(",", "")) > 200
    rows = table_rows(out, "15-minute sync") + table_rows(out, "full read")
    pairs = [row for row in rows if len(row) == 11]
    summary = {row[0]: row for row in rows if len(row) == 5}
    assert [(row[0], row[1], row[8]) for row in pairs] == [
        ("15-minute sync", "1", "new"),
        ("15-minute sync", "2", "new"),
        ("15-minute sync", "3", "new"),
        ("full read", "1", "full"),
    ]
    for row in pairs:  # the ratio of the unrounded times: within what rounding allows
        a, b, ratio = float(row[2]), float(row[3]), float(row[4])
        assert (a - 0.005) / (b + 0.005) - 0.005 <= ratio <= (a + 0.005) / (b - 0.005) + 0.005
    # a full read sees every stored live point, a new read the window's only
    assert int(pairs[3][9].replace(",", "")) > int(pairs[0][9].replace(",", "")) > 0
    ratios = [float(row[4]) for row in pairs[:3]]
    assert summary["15-minute sync"][2] == ", ".join(f"{r:.2f}" for r in ratios)
    assert summary["15-minute sync"][3] == f"**{sorted(ratios)[1]:.2f}**"
    assert summary["full read"][1] == "1"
