"""The allocator thresholds `vspc-etl` sets at start (etl/alloc.py)."""

from __future__ import annotations

import gc
import platform
import sys
import weakref
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy.engine import URL

import etl.cli
import etl.daemon
import etl.pipeline
from etl.alloc import tune_allocator, tune_gc
from etl.pipeline import RunResult

GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


def test_glibc_takes_the_thresholds() -> None:
    assert tune_allocator() is GLIBC


def test_the_operators_environment_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "1048576")
    assert tune_allocator() is False


def test_every_command_tunes_the_allocator_first(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bool] = []
    monkeypatch.setattr(etl.cli, "tune_allocator", lambda: calls.append(True) or True)
    result = CliRunner().invoke(etl.cli.main, ["simulate", "--help"])
    assert result.exit_code == 0, result.output
    assert calls == [True]


def test_tune_gc_freezes_what_lives() -> None:
    assert gc.get_freeze_count() == 0
    tune_gc()
    assert gc.get_freeze_count() > 10_000  # the imported modules' objects, at least
    # cyclic garbage made afterwards is still collected
    cycle: list[object] = []
    cycle.append(cycle)
    ref = weakref.ref(Node())
    del cycle
    assert gc.collect() >= 1
    assert ref() is None


class Node:
    def __init__(self) -> None:
        self.me = self


def test_sync_and_run_tune_the_collector_before_their_first_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, database_url: URL
) -> None:
    events: list[str] = []
    monkeypatch.setattr(etl.cli, "tune_gc", lambda: events.append("tune_gc"))

    def run_once(settings: Any, **options: Any) -> Any:
        events.append("run_once")
        return RunResult(1, "cli", "success", pages=1)

    monkeypatch.setattr(etl.pipeline, "run_once", run_once)
    monkeypatch.setattr(etl.daemon, "run_daemon", lambda settings: events.append("run_daemon"))
    monkeypatch.chdir(tmp_path)
    env = {
        "DATABASE_URL": database_url.render_as_string(hide_password=False),
        "VSPC_URL": "http://127.0.0.1:9",  # never asked: no run happens
        "VSPC_API_KEY": "key",
    }
    runner = CliRunner()
    result = runner.invoke(etl.cli.main, ["sync", "--no-progress"], env=env)
    assert result.exit_code == 0, result.output
    result = runner.invoke(etl.cli.main, ["run", "--http-port", "0"], env=env)
    assert result.exit_code == 0, result.output
    assert events == ["tune_gc", "run_once", "tune_gc", "run_daemon"]
