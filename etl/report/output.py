"""A report as text: a table for people, CSV or JSON for programs.

CSV and JSON keep the views' values and every uid (rates as fractions 0..1, timestamps in
ISO 8601 with their offset; nulls empty in CSV, ``null`` in JSON). The table leads with names,
shows rates as percentages and fits ``WIDTH`` columns: names too long are shortened, a missing
name is shown as the start of its uid.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from etl.report.filters import Window
from etl.report.queries import Report, Session

FORMATS = ("table", "csv", "json")
WIDTH = 120
_GAP = "  "


def render(report: Report, fmt: str, *, width: int = WIDTH) -> str:
    """``report`` in ``fmt`` (table, csv or json), ending with a newline (empty table: "")."""
    if fmt == "csv":
        return _csv(report)
    if fmt == "json":
        records = [{k: _plain(v) for k, v in r.items()} for r in report.records()]
        return json.dumps(records, ensure_ascii=False, indent=2) + "\n"
    if fmt == "table":
        return _table(report, width)
    raise ValueError(f"format must be one of {', '.join(FORMATS)}")


def _plain(value: Any) -> Any:
    """A JSON-ready value."""
    if isinstance(value, Decimal):  # rates and hours, rounded by the views
        return float(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    return value


def _csv(report: Report) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(report.columns)
    for row in report.rows:
        writer.writerow(["" if v is None else _plain(v) for v in row])
    return out.getvalue()


def short_uid(uid: Any) -> str:
    """The first eight characters of a uid, marked as cut: what a table shows for no name."""
    return f"{str(uid)[:8]}…"


def name_or_uid(name: str | None, uid: Any) -> str:
    return name if name else ("" if uid is None else short_uid(uid))


def percent(value: Any) -> str:
    return "" if value is None else f"{float(value) * 100:.1f}%"


def _number(value: Any) -> str:
    return "" if value is None else str(value)


def _utc_minute(value: Any) -> str:
    return "" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M")


def _computer_rpo_met(record: dict[str, Any]) -> str:
    return "yes" if record["rpo_met"] else "no"


def _rpo_met(record: dict[str, Any]) -> str:
    if not record["is_enabled"]:
        return "disabled"
    return "yes" if record["rpo_met"] else "no"


@dataclass(frozen=True)
class Column:
    """A table column: its heading, its text per record, and whether names may be shortened."""

    heading: str
    cell: Callable[[dict[str, Any]], str]
    name: bool = False  # left-aligned, shortened to fit
    right: bool = True


def _field(key: str, show: Callable[[Any], str] = _number) -> Callable[[dict[str, Any]], str]:
    return lambda r: show(r[key])


_COUNTS = [
    Column("runs", _field("runs")),
    Column("success", _field("success_runs")),
    Column("warning", _field("warning_runs")),
    Column("failed", _field("failed_runs")),
    Column("success rate", _field("success_rate", percent)),
]
_SLA = [
    Column("protected", _field("jobs_protected")),
    Column("meeting RPO", _field("jobs_meeting_rpo")),
    Column("RPO compliance", _field("rpo_compliance", percent)),
]
_ORGANIZATION = Column(
    "organization",
    lambda r: name_or_uid(r["organization_name"], r["organization_uid"]),
    name=True,
    right=False,
)
_COMPUTER = Column(
    "computer",
    lambda r: name_or_uid(r["computer_name"], r["backup_agent_uid"]),
    name=True,
    right=False,
)
LAYOUTS: dict[str, list[Column]] = {
    "organization": [_ORGANIZATION, *_SLA, *_COUNTS],
    "day": [Column("day", _field("day", str), right=False), *_SLA, *_COUNTS],
    "job": [
        _ORGANIZATION,
        _COMPUTER,
        Column(
            "job", lambda r: name_or_uid(r["job_name"], r["instance_uid"]), name=True, right=False
        ),
        Column("status", _field("last_status", _number), right=False),
        Column("last success (UTC)", _field("last_success_at", _utc_minute), right=False),
        Column("RPO met", _rpo_met, right=False),
        Column("failures", _field("consecutive_failures")),
        Column("runs", _field("runs")),
        Column("success rate", _field("success_rate", percent)),
    ],
    "computer": [
        _ORGANIZATION,
        _COMPUTER,
        Column("platform", _field("system_type"), right=False),
        Column("jobs", _field("jobs")),
        Column("failing", _field("failing_jobs")),
        Column("last point (UTC)", _field("last_restore_point_at", _utc_minute), right=False),
        Column("RPO met", _computer_rpo_met, right=False),
        Column("agent", _field("connection_status"), right=False),
        Column("heartbeat (UTC)", _field("last_heartbeat_at", _utc_minute), right=False),
    ],
}


def shorten(value: str, width: int) -> str:
    """``value`` cut to ``width`` characters, the cut marked with an ellipsis."""
    if len(value) <= width:
        return value
    return value[: max(width - 1, 0)] + "…"


def fit(natural: Sequence[int], budget: int) -> list[int]:
    """Widths within ``budget``: the narrow columns keep theirs, the wide share the rest."""
    widths = list(natural)
    order = sorted(range(len(widths)), key=lambda i: widths[i])
    left = budget
    for position, i in enumerate(order):
        share = max(left // (len(order) - position), 1)
        widths[i] = min(widths[i], share)
        left -= widths[i]
    return widths


def _table(report: Report, width: int) -> str:
    if not report.rows:
        return ""
    layout = LAYOUTS[report.by]
    records = report.records()
    cells = [[column.cell(r) for column in layout] for r in records]
    natural = [
        max(len(column.heading), *(len(row[i]) for row in cells)) for i, column in enumerate(layout)
    ]
    named = [i for i, column in enumerate(layout) if column.name]
    fixed = sum(w for i, w in enumerate(natural) if i not in named)
    budget = width - fixed - len(_GAP) * (len(layout) - 1)
    widths = list(natural)
    for i, w in zip(named, fit([natural[i] for i in named], budget), strict=True):
        widths[i] = w

    def line(values: list[str]) -> str:
        parts = [
            shorten(v, w).rjust(w) if column.right else shorten(v, w).ljust(w)
            for v, w, column in zip(values, widths, layout, strict=True)
        ]
        return _GAP.join(parts).rstrip()

    rule = _GAP.join("-" * w for w in widths)
    headings = [column.heading for column in layout]
    return "\n".join([line(headings), rule, *(line(row) for row in cells)]) + "\n"


def empty_window(window: Window, zone: str, scope: str, newest: Session | None, today: date) -> str:
    """What to say when no session started in ``window``: the newest one there is, if any."""
    said = f"no session started in {window} ({zone}){scope}"
    if newest is None:
        return f"{said}, and none is recorded: run `vspc-etl sync` (or `vspc-etl demo`) first"
    when = newest.started_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    reach = (today - newest.day).days + 1
    hint = f": try --days {reach}" if newest.day < window.first and reach <= 3660 else ""
    return f"{said}; the newest one started {when}{hint}"
