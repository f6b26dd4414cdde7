"""Reports: the SLA read from the views of schema ``vspc``, as text, CSV, JSON, a chart or HTML.

``sla_report``, ``trend`` and ``monthly_reports`` query within a ``Window`` and ``Filters``;
``render``, ``write_chart`` and ``render_html`` present; ``grant_read_access`` lets a BI tool's
role read the schema.
"""

from etl.report.access import grant_read_access
from etl.report.chart import write_chart
from etl.report.filters import Filters, Window, last_days, month_window
from etl.report.html import render_html, write_reports
from etl.report.monthly import MonthlyReport, monthly_reports
from etl.report.output import FORMATS, render
from etl.report.queries import BY, Report, Trend, newest_session, sla_report, trend

__all__ = [
    "BY",
    "FORMATS",
    "Filters",
    "MonthlyReport",
    "Report",
    "Trend",
    "Window",
    "grant_read_access",
    "last_days",
    "month_window",
    "monthly_reports",
    "newest_session",
    "render",
    "render_html",
    "sla_report",
    "trend",
    "write_chart",
    "write_reports",
]
