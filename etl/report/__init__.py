"""Reports: the SLA read from the views of schema ``vspc``, as text, CSV, JSON or a chart.

``sla_report`` and ``trend`` query; ``render`` and ``write_chart`` present;
``grant_read_access`` lets a BI tool's role read the schema.
"""

from etl.report.access import grant_read_access
from etl.report.chart import write_chart
from etl.report.output import FORMATS, render
from etl.report.queries import BY, Report, Trend, sla_report, trend

__all__ = [
    "BY",
    "FORMATS",
    "Report",
    "Trend",
    "grant_read_access",
    "render",
    "sla_report",
    "trend",
    "write_chart",
]
