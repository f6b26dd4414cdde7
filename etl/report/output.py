"""A report as text: an aligned table for people, CSV or JSON for programs.

CSV and JSON keep the views' values (rates as fractions 0..1, timestamps in ISO 8601 with
their offset); the table shows rates as percentages. Nulls are empty in CSV and the table,
``null`` in JSON.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from etl.report.queries import Report

FORMATS = ("table", "csv", "json")
_RATES = frozenset({"rpo_compliance", "success_rate"})


def render(report: Report, fmt: str) -> str:
    """``report`` in ``fmt`` (table, csv or json), ending with a newline."""
    if fmt == "csv":
        return _csv(report)
    if fmt == "json":
        records = [{k: _plain(v) for k, v in r.items()} for r in report.records()]
        return json.dumps(records, ensure_ascii=False, indent=2) + "\n"
    if fmt == "table":
        return _table(report)
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


def _cell(column: str, value: Any) -> str:
    if value is None:
        return ""
    if column in _RATES:
        return f"{float(value) * 100:.1f}%"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M %z")
    if isinstance(value, Decimal):
        return str(value)  # as rounded by the view: 461.40, not 461.4
    return str(_plain(value))


def _table(report: Report) -> str:
    if not report.rows:
        return f"no data for the last {report.days} day(s)\n"
    cells = [[_cell(c, v) for c, v in zip(report.columns, row, strict=True)] for row in report.rows]
    widths = [
        max(len(column), *(len(row[i]) for row in cells)) for i, column in enumerate(report.columns)
    ]
    numeric = [_is_number_column([row[i] for row in report.rows]) for i in range(len(widths))]

    def line(values: list[str]) -> str:
        parts = [
            v.rjust(w) if right else v.ljust(w)
            for v, w, right in zip(values, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(list(report.columns)), rule, *(line(row) for row in cells)]) + "\n"


def _is_number_column(values: list[Any]) -> bool:
    """Right-align columns of numbers (booleans are not numbers here)."""
    present = [v for v in values if v is not None]
    return bool(present) and all(
        isinstance(v, int | float | Decimal) and not isinstance(v, bool) for v in present
    )
