"""The customer-facing SLA report: one self-contained HTML file per organization and month.

Rendered by Jinja2 from ``templates/sla_report.html.j2``: inline CSS, the daily trend as
inline SVG (geometry computed here, drawn by the template), no external request of any kind,
laid out to print on A4 from a browser.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from etl import __version__
from etl.report.files import write_text
from etl.report.monthly import Day, MonthlyReport
from etl.report.output import percent, short_uid

# The trend's drawing area, in SVG user units (the image scales to the page's width).
WIDTH, HEIGHT = 720, 230
LEFT, RIGHT, TOP, BOTTOM = 44, 12, 12, 34


@dataclass(frozen=True)
class Line:
    """One series of the trend: its runs of consecutive days as SVG points, and its dots."""

    label: str
    css: str
    segments: list[str]
    dots: list[tuple[float, float, str]]  # x, y, tooltip


@dataclass(frozen=True)
class TrendChart:
    width: int
    height: int
    left: int
    right: float
    top: int
    bottom: float
    y_ticks: list[tuple[float, str]]
    x_ticks: list[tuple[float, str]]
    lines: list[Line]


def trend_chart(report: MonthlyReport) -> TrendChart:
    """RPO compliance and success rate per day of the month, days without data left blank."""
    days = report.window.days
    by_day = {d.day: d for d in report.days}
    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - TOP - BOTTOM
    step = plot_w / max(len(days) - 1, 1)

    def x(i: int) -> float:
        return round(LEFT + i * step, 1)

    def y(value: float) -> float:
        return round(TOP + (1 - value) * plot_h, 1)

    def line(label: str, css: str, value: Any) -> Line:
        segments: list[str] = []
        dots: list[tuple[float, float, str]] = []
        current: list[str] = []
        for i, d in enumerate(days):
            found: Day | None = by_day.get(d)
            v = None if found is None else value(found)
            if v is None:
                if current:
                    segments.append(" ".join(current))
                current = []
                continue
            current.append(f"{x(i)},{y(v)}")
            dots.append((x(i), y(v), f"{d.isoformat()}: {label} {percent(v)}"))
        if current:
            segments.append(" ".join(current))
        return Line(label, css, segments, dots)

    return TrendChart(
        WIDTH,
        HEIGHT,
        LEFT,
        WIDTH - RIGHT,
        TOP,
        HEIGHT - BOTTOM,
        [(y(v / 100), f"{v}%") for v in (0, 25, 50, 75, 100)],
        [(x(i), str(d.day)) for i, d in enumerate(days) if d.day == 1 or d.day % 5 == 0],
        [
            line("RPO compliance", "rpo", lambda d: d.rpo_compliance),
            line("success rate", "success", lambda d: d.success_rate),
        ],
    )


def _environment() -> Any:
    from jinja2 import Environment, PackageLoader, StrictUndefined

    env = Environment(
        loader=PackageLoader("etl.report", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["percent"] = lambda v: percent(v) or "n/a"
    env.filters["utc"] = lambda v: (
        "n/a" if v is None else v.astimezone(UTC).strftime("%Y-%m-%d %H:%M")
    )
    env.filters["date"] = lambda d: f"{d.day} {d:%B %Y}"
    env.filters["short_uid"] = short_uid
    return env


def render_html(report: MonthlyReport, *, generated_at: datetime | None = None) -> str:
    """The report as one HTML document."""
    template = _environment().get_template("sla_report.html.j2")
    return str(
        template.render(
            r=report,
            organization=organization_label(report),
            month=f"{report.window.first:%B %Y}",
            chart=trend_chart(report),
            generated_at=(generated_at or datetime.now(UTC)).astimezone(UTC),
            version=__version__,
        )
    )


def organization_label(report: MonthlyReport) -> str:
    if report.organization_name:
        return report.organization_name
    if report.organization_uid is None:
        return "jobs without an organization"
    return f"organization {report.organization_uid}"


def file_name(report: MonthlyReport, taken: set[str]) -> str:
    """``sla-2026-11-acme-corp.html``: the name in ASCII; the uid's start if taken or empty."""
    ascii_name = unicodedata.normalize("NFKD", report.organization_name or "")
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_name.encode("ascii", "ignore").decode().lower())
    slug = slug.strip("-")[:60].strip("-")
    uid = str(report.organization_uid or "none")[:8]
    month = f"{report.window.first:%Y-%m}"
    name = f"sla-{month}-{slug or uid}.html"
    if name in taken:
        name = f"sla-{month}-{slug}-{uid}.html"
    taken.add(name)
    return name


def write_reports(reports: list[MonthlyReport], directory: Path) -> list[Path]:
    """One file per organization in ``directory``; returns the paths written."""
    taken: set[str] = set()
    written = []
    for report in reports:
        path = directory / file_name(report, taken)
        write_text(path, render_html(report))
        written.append(path)
    return written
