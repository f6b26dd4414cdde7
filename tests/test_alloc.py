"""The allocator thresholds `vspc-etl` sets at start (etl/alloc.py)."""

from __future__ import annotations

import platform
import sys

import pytest
from click.testing import CliRunner

import etl.cli
from etl.alloc import tune_allocator

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
