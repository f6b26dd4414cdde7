"""The ``vspc-etl`` command: parses options, calls the library, turns errors into exit codes.

Exit codes: 0 success (or skipped: another sync was running), 1 the run failed (nothing of it
was committed), 2 configuration or usage error.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click

from etl import __version__
from etl.config import Settings, load_settings
from etl.errors import ConfigError, VspcEtlError
from etl.logs import setup_logging
from etl.simulator.cli import simulate

F = TypeVar("F", bound=Callable[..., Any])

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


def settings_from(ctx: click.Context, **overrides: Any) -> Settings:
    """Settings from env/.env plus this command's flags; logging configured with its secrets."""
    root = ctx.find_root().params
    if root.get("verbose"):
        overrides.setdefault("log_level", "DEBUG")
    if root.get("log_level"):
        overrides["log_level"] = root["log_level"]
    settings = load_settings(overrides, env_file=root.get("env_file"))
    setup_logging(settings.log_level, settings.secrets())
    return settings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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


@main.command()
@click.argument("revision", default="head")
@click.pass_context
@handle_errors
def migrate(ctx: click.Context, revision: str) -> None:
    """Create or upgrade the `vspc` schema (alembic upgrade REVISION, default head)."""
    from etl.db import database_url, describe
    from etl.db import migrate as run_migrations

    settings = settings_from(ctx)
    url = database_url(settings)
    head = run_migrations(url, revision)
    click.echo(f"database {describe(url)} is at revision {head or 'base'}")


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
    from etl.db import make_engine
    from etl.pipeline import run_once

    settings = settings_from(ctx, vspc_page_size=page_size, vspc_source=source, vspc_url=vspc_url)
    settings.validate_source()
    engine = make_engine(settings)
    show = sys.stderr.isatty() if progress is None else progress
    try:
        with progress_bar(show) as callback:
            result = run_once(settings, engine=engine, progress=callback)
    finally:
        engine.dispose()
    click.echo(result.summary())
    if result.status == "failed":
        sys.exit(EXIT_FAILED)


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
    type=click.IntRange(0, 365),
    default=3,
    show_default=True,
    help="Simulated days to sync after the first sync (one sync per day).",
)
@click.option(
    "--jobs",
    type=click.IntRange(1, 1_000_000),
    default=200,
    show_default=True,
    help="Jobs in the simulated console.",
)
@click.option("--seed", type=int, default=1, show_default=True, help="Simulator seed.")
@click.pass_context
@handle_errors
def demo(ctx: click.Context, days: int, jobs: int, seed: int) -> None:
    """Run the whole job against the built-in simulator: migrate, sync a few days, show it.

    Uses DATABASE_URL if set, else the embedded PostgreSQL under ./.vspc-etl/.
    """
    from etl.demo import run_demo

    settings = settings_from(ctx)
    failed = run_demo(settings, days=days, jobs=jobs, seed=seed, echo=click.echo)
    if failed:
        sys.exit(EXIT_FAILED)


main.add_command(simulate)
