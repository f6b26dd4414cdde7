"""matplotlib is the extra [chart]: without it `report --chart` says how to install it.

The drawing itself is tested with the report (tests/test_report.py); here the package as a
user installs it without the extra, simulated by hiding matplotlib from the import system.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from etl.cli import main

ROOT = Path(__file__).resolve().parent.parent
MISSING = "error: --chart needs matplotlib, which is not installed: pip install 'vspc-etl[chart]'\n"
# Nothing listens here: a command that reached the database would fail with exit 1 instead.
NO_DATABASE = {"DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:9/none"}


def test_matplotlib_is_the_chart_extra_and_in_dev() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not any(d.startswith("matplotlib") for d in project["dependencies"])
    assert project["optional-dependencies"]["chart"] == ["matplotlib>=3.8"]
    assert "vspc-etl[chart]" in project["optional-dependencies"]["dev"]


def test_report_chart_without_matplotlib_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` fails
    target = tmp_path / "sla.png"
    result = CliRunner().invoke(main, ["report", "--chart", str(target)], env=NO_DATABASE)
    assert (result.exit_code, result.stdout, result.stderr) == (2, "", MISSING)
    assert not target.exists()
    # A wrong suffix is still the first thing said.
    bad = CliRunner().invoke(main, ["report", "--chart", "sla.pdf"], env=NO_DATABASE)
    assert bad.exit_code == 2
    assert bad.stderr == "error: --chart 'sla.pdf': the file name must end in .png or .svg\n"


def test_the_command_without_matplotlib_exits_2_without_a_traceback(tmp_path: Path) -> None:
    hide = "import sys; sys.modules['matplotlib'] = None; from etl.cli import main; main()"
    done = subprocess.run(
        [sys.executable, "-c", hide, "report", "--chart", str(tmp_path / "sla.svg")],
        env={"PATH": "/usr/bin:/bin", **NO_DATABASE},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout, done.stderr) == (2, "", MISSING)
