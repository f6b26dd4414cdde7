"""The trend chart of ``vspc-etl report --chart FILE``: PNG or SVG, chosen by the file's suffix.

Two panels over exactly the requested window, RPO compliance on top and success rate below,
each with every organization together (thick) and the worst organizations by RPO compliance
(thin; ties broken by more failed runs). Drawn by matplotlib's Agg backend: no display needed,
and the same code writes both formats. matplotlib is the extra ``[chart]``
(``pip install 'vspc-etl[chart]'``): nothing else needs it, the HTML report included.
"""

from __future__ import annotations

import importlib.util
import math
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from etl.errors import ConfigError
from etl.report.files import check_writable, write_with
from etl.report.queries import Series, Trend

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

CHART_FORMATS = {".png": "png", ".svg": "svg"}


def chart_format(path: Path) -> str:
    """``png`` or ``svg`` from the file name; ConfigError for anything else, or when
    matplotlib (the extra ``[chart]``) is not installed, before any work is done."""
    fmt = CHART_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ConfigError(f"--chart {str(path)!r}: the file name must end in .png or .svg")
    if importlib.util.find_spec("matplotlib") is None:
        raise ConfigError(
            "--chart needs matplotlib, which is not installed: pip install 'vspc-etl[chart]'"
        )
    return fmt


def check_chart_path(path: Path) -> None:
    """ConfigError if ``path`` has the wrong suffix or cannot be written, or matplotlib is
    missing (before any query)."""
    chart_format(path)
    check_writable(path, "--chart")


def write_chart(trend: Trend, path: Path, *, title: str) -> None:
    """Draw ``trend`` into ``path`` (PNG or SVG by suffix), replacing it whole."""
    fmt = chart_format(path)
    import matplotlib

    matplotlib.use("Agg")  # a file, never a window
    from matplotlib import pyplot as plt

    # SVG keeps its text as text (searchable, smaller) rather than drawn glyphs.
    with plt.rc_context({"svg.fonttype": "none"}):
        fig, (rpo, success) = plt.subplots(2, 1, sharex=True, figsize=(11, 7), layout="constrained")
        try:
            _draw(fig, rpo, success, trend, title)
            write_with(path, lambda target: fig.savefig(target, format=fmt, dpi=100))
        finally:
            plt.close(fig)


def _draw(fig: Figure, rpo: Axes, success: Axes, trend: Trend, title: str) -> None:
    from matplotlib.ticker import PercentFormatter

    fig.suptitle(title)
    for axes, what, label in (
        (rpo, "rpo_compliance", "RPO compliance"),
        (success, "success_rate", "success rate"),
    ):
        _line(axes, trend, trend.overall, what, overall=True)
        for series in trend.worst:
            _line(axes, trend, series, what, overall=False)
        axes.set_ylabel(label)
        axes.set_ylim(-0.02, 1.02)
        axes.yaxis.set_major_formatter(PercentFormatter(1.0))
        axes.grid(True, alpha=0.3)
    # Exactly the window, whatever days hold data: half a day of room at either end.
    half = timedelta(hours=12)
    first = datetime.combine(trend.window.first, time()) - half
    last = datetime.combine(trend.window.last, time()) + half
    rpo.set_xlim(first, last)  # type: ignore[arg-type]
    if trend.has_data:
        # Beside the plots, not over them: the worst organizations' lines are low on the left.
        rpo.legend(
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            fontsize="small",
            title=f"worst {len(trend.worst)} by RPO compliance (ties: more failed runs)"
            if trend.worst
            else "no organization missed its RPO",
            title_fontsize="small",
        )
    else:
        rpo.text(
            0.5, 0.5, "no data in this window", ha="center", va="center", transform=rpo.transAxes
        )
    fig.autofmt_xdate()


def _line(axes: Axes, trend: Trend, series: Series, what: str, *, overall: bool) -> None:
    values = getattr(series, what)
    if all(v is None for v in values):
        return
    # A day without data is a gap in the line, not a straight line across it.
    ys = [math.nan if v is None else v for v in values]
    width, color = (2.5, "black") if overall else (1.2, None)
    marker = "." if len(ys) < 40 else ""
    axes.plot(
        cast(Any, trend.days), ys, marker=marker, label=series.label, linewidth=width, color=color
    )
