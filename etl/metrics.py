"""Prometheus metrics of the daemon: one registry per daemon, fed by hooks, served on /metrics.

    vspc_etl_runs_total{source,status}             runs recorded in vspc.etl_runs by this process
    vspc_etl_run_duration_seconds{source,status}   histogram of success/failed run durations
    vspc_etl_jobs_total{source,outcome}            seen/inserted/updated/unchanged/deleted/rejected
    vspc_etl_vspc_requests_total{outcome}          HTTP requests to VSPC (ok, 429, timeout, ...)
    vspc_etl_vspc_retries_total{reason}            retries of those requests, by what went wrong
    vspc_etl_last_success_timestamp_seconds{source}  end of the last successful sync (any replica)
    vspc_etl_run_in_progress                       1 while a run is going
    vspc_etl_unrecorded_runs_total{reason}         ticks that could not even record a run
    process_*, python_*                            the process collectors (RSS, CPU, GC)

The counters sum what ``etl_runs`` holds for the runs of this process: summed over replicas,
``runs_total`` by status equals the table's row count by status.
"""

from __future__ import annotations

import threading

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    gc_collector,
    generate_latest,
    platform_collector,
    process_collector,
)

from etl.pipeline import RunResult

STATUSES = ("success", "failed", "skipped")
JOB_OUTCOMES = ("seen", "inserted", "updated", "unchanged", "deleted", "rejected")
# A run takes from under a second (simulator, nothing changed) to many minutes (a big console).
DURATION_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600)


disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series: noise


class Metrics:
    """The daemon's metrics. ``source`` pre-creates the labelled series so they show at 0."""

    def __init__(self, source: str, registry: CollectorRegistry | None = None) -> None:
        self.source = source
        self._lock = threading.Lock()
        self._last_success = 0.0
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.runs = Counter(
            "vspc_etl_runs",
            "Sync runs recorded in vspc.etl_runs by this process, by status.",
            ["source", "status"],
            registry=r,
        )
        self.duration = Histogram(
            "vspc_etl_run_duration_seconds",
            "Duration of finished (success or failed) runs.",
            ["source", "status"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.jobs = Counter(
            "vspc_etl_jobs",
            "Jobs counted by successful runs, by what the run did with them.",
            ["source", "outcome"],
            registry=r,
        )
        self.requests = Counter(
            "vspc_etl_vspc_requests",
            "HTTP requests sent to the VSPC console, by outcome.",
            ["outcome"],
            registry=r,
        )
        self.retries = Counter(
            "vspc_etl_vspc_retries",
            "Retries of requests to the VSPC console, by reason.",
            ["reason"],
            registry=r,
        )
        self.last_success = Gauge(
            "vspc_etl_last_success_timestamp_seconds",
            "Unix time the last successful sync of the source finished (any replica).",
            ["source"],
            registry=r,
        )
        self.in_progress = Gauge(
            "vspc_etl_run_in_progress", "1 while this process runs a sync.", registry=r
        )
        self.unrecorded = Counter(
            "vspc_etl_unrecorded_runs",
            "Scheduled runs that could not be recorded in etl_runs (database unreachable, "
            "unexpected error).",
            ["reason"],
            registry=r,
        )
        process_collector.ProcessCollector(registry=r)
        platform_collector.PlatformCollector(registry=r)
        gc_collector.GCCollector(registry=r)
        for status in STATUSES:
            self.runs.labels(source, status)
        for outcome in JOB_OUTCOMES:
            self.jobs.labels(source, outcome)
        self.requests.labels("ok")

    def observe_run(self, result: RunResult) -> None:
        """Count a run that ``run_once`` returned (and so recorded in ``etl_runs``)."""
        self.runs.labels(result.source, result.status).inc()
        if result.status == "skipped":
            return
        self.duration.labels(result.source, result.status).observe(result.duration_s)
        if result.status == "success":
            for outcome in JOB_OUTCOMES:
                self.jobs.labels(result.source, outcome).inc(getattr(result, outcome))

    def note_success_at(self, timestamp: float) -> None:
        """Move the last-success gauge forward (never back) to ``timestamp``."""
        with self._lock:
            if timestamp > self._last_success:
                self._last_success = timestamp
                self.last_success.labels(self.source).set(timestamp)

    def on_http_event(self, kind: str, outcome: str) -> None:
        """The VSPC client's ``on_event`` hook."""
        if kind == "request":
            self.requests.labels(outcome).inc()
        elif kind == "retry":
            self.retries.labels(outcome).inc()

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
