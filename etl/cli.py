"""The ``vspc-etl`` command: parses options, calls the library, turns errors into exit codes.

Exit codes: 0 success (or skipped: another sync was running), 1 the run failed (nothing of it
was committed), 2 configuration or usage error (including a console that cannot be reached as
configured: an unknown host, a TLS handshake or certificate refused; that run is recorded failed).
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click

from etl import __version__
from etl.alloc import tune_allocator, tune_gc
from etl.config import Settings, load_settings
from etl.errors import ConfigError, VspcEtlError
from etl.logs import setup_logging
from etl.simulator.cli import simulate

F = TypeVar("F", bound=Callable[..., Any])

log = logging.getLogger("etl.config")  # the settings' warnings, said once logging is set up

EXIT_FAILED = 1
EXIT_CONFIG = 2


def handle_errors(func: F) -> F:
    """Expected failures become one line on stderr and an exit code, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ConfigError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_CONFIG)
        except VspcEtlError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_FAILED)

    return wrapper  # type: ignore[return-value]


# The flag that sets each setting, so that an error about a value names what the user typed.
FLAGS = {
    "vspc_page_size": "--page-size",
    "vspc_source": "--source",
    "vspc_url": "--vspc-url",
    "sync_interval": "--interval",
    "sync_cron": "--cron",
    "http_port": "--http-port",
    "log_level": "--log-level",
}


def settings_from(ctx: click.Context, **overrides: Any) -> Settings:
    """Settings from env/.env plus this command's flags; logging configured with its secrets."""
    root = ctx.find_root().params
    if root.get("verbose"):
        overrides.setdefault("log_level", "DEBUG")
    if root.get("log_level"):
        overrides["log_level"] = root["log_level"]
    settings = load_settings(overrides, env_file=root.get("env_file"), flags=FLAGS)
    setup_logging(settings.log_level, settings.secrets(), settings.log_format)
    for notice in settings.notices:
        log.warning("%s", notice)
    return settings


# click 8.2+ signals a bare `vspc-etl` with this usage error (8.1 prints the help and exits 0)
_NO_ARGS_IS_HELP: Any = getattr(click.exceptions, "NoArgsIsHelpError", ())


class Cli(click.Group):
    """The command group, with click's own usage errors said in one line like ours."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except _NO_ARGS_IS_HELP as exc:
            exc.show()  # plain `vspc-etl`: the help, as click prints it
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            hint = ""
            if isinstance(exc, click.UsageError) and exc.ctx is not None:
                hint = f" (see `{exc.ctx.command_path} --help`)"
            click.echo(f"error: {exc.format_message().rstrip('.')}{hint}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("aborted", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


@click.group(cls=Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vspc-etl")
@click.option(
    "--env-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Read settings from this file (default: ./.env if present).",
)
@click.option("--log-level", help="DEBUG, INFO, WARNING or ERROR (default: LOG_LEVEL or INFO).")
@click.option("-v", "--verbose", is_flag=True, help="Same as --log-level DEBUG.")
def main(env_file: Path | None, log_level: str | None, verbose: bool) -> None:
    """Extract Veeam Service Provider Console agent jobs into PostgreSQL, with history.

    Settings come from environment variables (see README): DATABASE_URL, VSPC_URL,
    VSPC_API_KEY or VSPC_USERNAME/VSPC_PASSWORD, ... Secrets may be given as <NAME>_FILE.
    """
    tune_allocator()


@main.command()
@click.argument("revision", default="head")
@click.pass_context
@handle_errors
def migrate(ctx: click.Context, revision: str) -> None:
    """Create or upgrade the `vspc` schema (alembic upgrade REVISION, default head)."""
    from etl.db import database_url, describe, migrate_from_to, resolve_revision

    settings = settings_from(ctx)
    resolve_revision(revision)  # an unknown revision fails before any connection
    url = database_url(settings)
    before, after = migrate_from_to(url, revision)
    where = f"database {describe(url)}"
    if before == after:
        click.echo(f"{where}: nothing to migrate; it is at revision {after or 'base'}")
    elif before is None:
        click.echo(f"{where}: schema vspc created; it is at revision {after}")
    else:
        click.echo(f"{where}: migrated from revision {before}; it is at revision {after or 'base'}")


@main.command()
@click.option("--page-size", type=int, help="Records per request (VSPC_PAGE_SIZE, default 500).")
@click.option("--source", help="Name recorded in `source` columns (VSPC_SOURCE).")
@click.option("--vspc-url", help="Base URL of the console (VSPC_URL).")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a TTY).")
@click.pass_context
@handle_errors
def sync(
    ctx: click.Context,
    page_size: int | None,
    source: str | None,
    vspc_url: str | None,
    progress: bool | None,
) -> None:
    """Run one sync now and print a one-line summary."""
    from etl.db import check_schema, make_engine
    from etl.pipeline import run_once

    settings = settings_from(ctx, vspc_page_size=page_size, vspc_source=source, vspc_url=vspc_url)
    settings.validate_source()
    engine = make_engine(settings)
    tune_gc()
    show = sys.stderr.isatty() if progress is None else progress
    try:
        check_schema(engine)
        with progress_bar(show) as callback:
            result = run_once(settings, engine=engine, progress=callback)
    finally:
        engine.dispose()
    if result.misconfigured:
        # Recorded failed like any run, but only the settings can fix it: say what to change.
        click.echo(f"error: {result.error}", err=True)
        sys.exit(EXIT_CONFIG)
    click.echo(result.summary())
    if result.status == "failed":
        sys.exit(EXIT_FAILED)


@main.command()
@click.option("--interval", help="Time between runs: 900, 15m, 1h (SYNC_INTERVAL, default 15m).")
@click.option("--cron", help="Crontab line, wins over --interval (SYNC_CRON), e.g. '0 * * * *'.")
@click.option("--http-port", type=click.IntRange(0, 65535), help="HTTP_PORT; 0 serves no HTTP.")
@click.option("--source", help="Name recorded in `source` columns (VSPC_SOURCE).")
@click.option("--vspc-url", help="Base URL of the console (VSPC_URL).")
@click.pass_context
@handle_errors
def run(
    ctx: click.Context,
    interval: str | None,
    cron: str | None,
    http_port: int | None,
    source: str | None,
    vspc_url: str | None,
) -> None:
    """Run as a daemon: sync on a schedule, serve /healthz, /readyz and /metrics.

    Runs the same sync as `vspc-etl sync` every SYNC_INTERVAL (or on SYNC_CRON) until SIGTERM
    or SIGINT; a run in progress gets SHUTDOWN_GRACE seconds to finish, then is rolled back.
    """
    from etl.daemon import run_daemon
    from etl.schedule import build_schedule

    settings = settings_from(
        ctx,
        sync_interval=interval,
        sync_cron=cron,
        http_port=http_port,
        vspc_source=source,
        vspc_url=vspc_url,
    )
    build_schedule(settings)  # a schedule error is the one line printed, before any warning
    settings.validate_source()
    tune_gc()
    run_daemon(settings)


@contextmanager
def progress_bar(enabled: bool) -> Iterator[Callable[[int, int, int], None] | None]:
    """A rich progress bar of records read against the console's total."""
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=None,
        transient=True,
    ) as bar:
        task = bar.add_task("reading jobs", total=None)

        def update(pages: int, records: int, total: int) -> None:
            bar.update(task, completed=records, total=total or None)

        yield update


@main.command()
@click.option(
    "--days",
    type=click.IntRange(1, 365),
    default=30,
    show_default=True,
    help="Simulated days of history, ending now (a later demo continues up to its now).",
)
@click.option(
    "--every",
    default="6h",
    show_default=True,
    metavar="DURATION",
    help="Simulated time between two syncs: 6h, 90m, 1d.",
)
@click.option(
    "--jobs",
    type=click.IntRange(1, 1_000_000),
    help="Jobs in the simulated console (default 200; a later demo keeps the first's).",
)
@click.option(
    "--seed",
    type=click.IntRange(0),
    help="Simulator seed (default 1; a later demo keeps the first's).",
)
@click.option(
    "--force", is_flag=True, help="Add the demo to a database that holds other sources' data."
)
@click.pass_context
@handle_errors
def demo(
    ctx: click.Context, days: int, every: str, jobs: int | None, seed: int | None, force: bool
) -> None:
    """Build a month of SLA history from the built-in simulator, ending now, and show it.

    Syncs a simulated console every few simulated hours from --days ago up to now, each run
    recorded at its simulated time, then prints what the warehouse holds and what to try
    next. A later demo continues the history up to its own now. Uses DATABASE_URL if set,
    else the embedded PostgreSQL under ./.vspc-etl/; refuses a database holding other data.
    """
    import os
    import shlex
    import shutil
    from datetime import datetime, timedelta

    from etl.config import parse_duration
    from etl.demo import run_demo

    try:
        step = timedelta(seconds=parse_duration(every))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--every") from None
    if not timedelta(minutes=1) <= step <= timedelta(days=days):
        raise click.BadParameter(
            f"{every!r} must be between 1m and the --days ({days}d)", param_hint="--every"
        )
    # The commands to try next are written as the user runs vspc-etl: `.venv/bin/vspc-etl`
    # after the quickstart, where `vspc-etl` alone is not on the PATH.
    script = sys.argv[0]
    prog = "vspc-etl"
    if Path(script).name == "vspc-etl" and shutil.which("vspc-etl") != os.path.abspath(script):
        relative = os.path.relpath(script)
        prog = shlex.quote(script if relative.startswith("..") else relative)
    env_file = ctx.find_root().params.get("env_file")
    if env_file is not None:
        prog += f" --env-file {shlex.quote(str(env_file))}"

    @contextmanager
    def bar(total: int) -> Iterator[Callable[[int, int, datetime], None]]:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=True,
        ) as progress:
            task = progress.add_task("syncing", total=total)

            def update(done: int, total: int, at: datetime) -> None:
                progress.update(task, completed=done, description=f"syncing {at:%Y-%m-%d %H:%M}")

            yield update

    settings = settings_from(ctx)
    failed = run_demo(
        settings,
        days=days,
        every=step,
        jobs=jobs,
        seed=seed,
        force=force,
        echo=click.echo,
        prog=prog,
        progress=bar if sys.stderr.isatty() else None,
    )
    if failed:
        sys.exit(EXIT_FAILED)


@main.command()
@click.option(
    "--days",
    type=click.IntRange(1, 3660),
    default=30,
    show_default=True,
    help="Calendar days to report, today included (report_settings.time_zone).",
)
@click.option(
    "--by",
    type=click.Choice(["organization", "day", "job", "computer"]),
    default="organization",
    show_default=True,
    help="One row per organization, per day, per live job, or per live computer (its state "
    "now: newest restore point, RPO, failing jobs, agent connection).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json", "html"]),
    default="table",
    show_default=True,
    help="table for people; csv and json keep the views' values (rates 0..1); html: the "
    "customer SLA report of a --month (with --out).",
)
@click.option(
    "--chart",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write a trend chart (RPO compliance, success rate per day) to FILE.png/.svg.",
)
@click.option("--source", metavar="NAME", help="Only this console's jobs (a VSPC_SOURCE name).")
@click.option(
    "--organization",
    metavar="NAME|UID",
    help="Only this organization: its name, uid or a uid's start.",
)
@click.option(
    "--platform",
    type=click.Choice(["windows", "linux", "mac"], case_sensitive=False),
    help="Only this platform's jobs (system_type); with --by job or computer only: the daily and "
    "per-organization numbers count every platform together.",
)
@click.option(
    "--all-organizations",
    is_flag=True,
    help="With --format html: one report per organization, written into the --out directory.",
)
@click.option(
    "--month",
    metavar="YYYY-MM",
    help="With --format html: the calendar month in UTC, YYYY-MM (default: this one).",
)
@click.option(
    "--out",
    metavar="FILE|DIR",
    type=click.Path(path_type=Path),
    help="With --format html: the file to write (a directory with --all-organizations).",
)
@click.pass_context
@handle_errors
def report(
    ctx: click.Context,
    days: int,
    by: str,
    fmt: str,
    chart: Path | None,
    source: str | None,
    organization: str | None,
    platform: str | None,
    all_organizations: bool,
    month: str | None,
    out: Path | None,
) -> None:
    """Print the SLA of the last --days days, read from the views of schema vspc.

    With --format html, write the customer-facing SLA report of a calendar month instead.
    """
    if platform is not None and (
        by not in ("job", "computer") or fmt == "html" or chart is not None
    ):
        from etl.report.filters import PLATFORM_ONLY

        raise ConfigError(PLATFORM_ONLY)
    if fmt == "html":
        _check_html_options(ctx, chart, organization, all_organizations, month, out)
    elif all_organizations or month is not None or out is not None:
        raise ConfigError("--all-organizations, --month and --out go with --format html")
    if chart is not None:
        from etl.report.chart import check_chart_path

        check_chart_path(chart)  # a wrong suffix or a path that cannot be written: before any work
    settings = settings_from(ctx)
    if fmt == "html":
        assert out is not None
        _html_report(settings, source, organization, month, out)
    else:
        _text_report(settings, days, by, fmt, chart, source, organization, platform)


def _check_html_options(
    ctx: click.Context,
    chart: Path | None,
    organization: str | None,
    all_organizations: bool,
    month: str | None,
    out: Path | None,
) -> None:
    from etl.report import month_window
    from etl.report.files import check_writable

    for name in ("days", "by"):
        if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT:
            raise ConfigError(f"--{name} does not go with --format html: give --month YYYY-MM")
    if chart is not None:
        raise ConfigError("--chart does not go with --format html: the report has its own chart")
    if all_organizations == (organization is not None):
        raise ConfigError(
            "--format html needs either --organization NAME|UID or --all-organizations"
        )
    if out is None:
        what = "DIR" if all_organizations else "FILE.html"
        raise ConfigError(f"--format html needs --out {what}")
    if month is not None:
        month_window(month)  # a malformed month fails before any work
    check_writable(out, "--out", directory=all_organizations)


def _text_report(
    settings: Settings,
    days: int,
    by: str,
    fmt: str,
    chart: Path | None,
    source: str | None,
    organization: str | None,
    platform: str | None = None,
) -> None:
    from etl.db import check_schema, make_engine
    from etl.report import Filters, last_days, newest_session, render, sla_report, trend
    from etl.report.filters import report_today, scope
    from etl.report.output import empty_window
    from etl.report.queries import reading

    engine = make_engine(settings)
    try:
        check_schema(engine)
        with engine.connect() as conn, reading():
            filters = Filters.given(
                conn, source=source, organization=organization, platform=platform
            )
            today, zone = report_today(conn)
            window = last_days(today, days)
            result = sla_report(conn, by=by, window=window, filters=filters)
            history = trend(conn, window=window, filters=filters) if chart is not None else None
            newest = newest_session(conn, filters) if result.runs == 0 else None
    finally:
        engine.dispose()
    click.echo(render(result, fmt), nl=False)
    if result.runs is None and not result.rows:
        click.echo(
            f"no live computer{scope(source, organization, platform)}: run `vspc-etl sync` "
            "(or `vspc-etl demo`) first",
            err=True,
        )
    if result.runs == 0:
        note = empty_window(window, zone, scope(source, organization, platform), newest, today)
        click.echo(note, err=True)
    if chart is not None and history is not None:
        from etl.report import write_chart

        write_chart(
            history, chart, title=f"vspc SLA{scope(source, organization)}, {window} ({zone})"
        )
        click.echo(f"chart written to {chart}", err=True)


def _html_report(
    settings: Settings, source: str | None, organization: str | None, month: str | None, out: Path
) -> None:
    from etl.db import check_schema, make_engine
    from etl.report import Filters, month_window, monthly_reports, render_html, write_reports
    from etl.report.files import write_text
    from etl.report.filters import current_month, scope
    from etl.report.queries import reading

    window = month_window(month or current_month())
    engine = make_engine(settings)
    try:
        check_schema(engine)
        with engine.connect() as conn, reading():
            filters = Filters.given(conn, source=source, organization=organization)
            reports = monthly_reports(conn, window, filters)
    finally:
        engine.dispose()
    label = f"{window.first:%Y-%m}"
    if not reports:
        raise ConfigError(
            f"nothing to report for {label}{scope(source, organization)}: no protected job and no "
            "session in that month (UTC); choose another --month"
        )
    if organization is not None:
        write_text(out, render_html(reports[0]))
        click.echo(f"SLA report for {label} written to {out}", err=True)
        return
    written = write_reports(reports, out)
    click.echo(f"{len(written)} SLA report(s) for {label} written to {out}", err=True)


@main.command()
@click.argument("role")
@click.pass_context
@handle_errors
def grant(ctx: click.Context, role: str) -> None:
    """Let ROLE read schema vspc: USAGE, SELECT on all tables and views, and future ones."""
    from etl.db import check_schema, make_engine
    from etl.report import grant_read_access

    settings = settings_from(ctx)
    engine = make_engine(settings)
    try:
        check_schema(engine)
        with engine.begin() as conn:
            grant_read_access(conn, role)
    finally:
        engine.dispose()
    click.echo(f"granted {role} read-only access to schema vspc (now and future objects)")


@main.command()
@click.option("--source", help="Check only this source (default: every source).")
@click.pass_context
@handle_errors
def verify(ctx: click.Context, source: str | None) -> None:
    """Check the warehouse's invariants; list each violation and exit 1, or exit 0 if sound.

    One current version per job, versions that meet exactly, jobs equal to their current
    versions, deleted_at iff tombstone, changes only from successful runs, no orphaned run;
    restore points marked gone only by a complete full read, and live only if it listed them.
    Only reads: a reader role is enough.
    """
    from etl.db import check_schema, make_engine
    from etl.verify import check_invariants, warehouse_counts

    settings = settings_from(ctx)
    engine = make_engine(settings)
    try:
        check_schema(engine)
        violations = check_invariants(engine, source)
        counts = warehouse_counts(engine, source)
    finally:
        engine.dispose()
    checked = (
        f"{counts['jobs']} jobs, {counts['versions']} versions, "
        f"{counts['points']} restore points, {counts['runs']} runs"
    )
    for violation in violations:
        click.echo(str(violation))
    if violations:
        click.echo(f"error: {len(violations)} invariant violation(s) in {checked}", err=True)
        sys.exit(EXIT_FAILED)
    click.echo(f"ok: {checked}; every invariant holds")


main.add_command(simulate)
