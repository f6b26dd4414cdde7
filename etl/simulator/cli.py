"""``vspc-etl simulate``: serve a simulated VSPC console until SIGINT or SIGTERM."""

from __future__ import annotations

import signal
import threading
from datetime import datetime
from types import FrameType

import click

from etl.simulator.wire import PLATFORMS


def _platform_list(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(part.strip().lower() for part in value.split(",")))
    unknown = [part for part in chosen if part not in PLATFORMS]
    if unknown or not chosen:
        raise click.BadParameter(
            f"{', '.join(unknown) or 'nothing'} is not a platform; use some of "
            f"{','.join(PLATFORMS)}, separated by commas."
        )
    return chosen


@click.command("simulate")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    default=1280,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port to listen on (0: any free port).",
)
@click.option(
    "--jobs",
    default=200,
    show_default=True,
    type=click.IntRange(0),
    help="Number of agent jobs to generate, split over --platforms (most to Windows).",
)
@click.option(
    "--platforms",
    default="windows,linux,mac",
    show_default=True,
    callback=_platform_list,
    help="Platforms whose agents and jobs exist, comma-separated: windows,linux,mac.",
)
@click.option(
    "--outage-rate",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="Chance per computer per virtual day of going offline for a while "
    "(its jobs do not run, its management agent turns Inaccessible).",
)
@click.option("--seed", default=1, show_default=True, help="Seed of the generated data.")
@click.option(
    "--api-key",
    default="sim-api-key",
    show_default=True,
    help="API key accepted as the bearer token.",
)
@click.option("--username", default="admin", show_default=True, help="User of the password grant.")
@click.option(
    "--password", default="sim-password", show_default=True, help="Password of that user."
)
@click.option(
    "--token-ttl",
    default=3600.0,
    show_default=True,
    type=click.FloatRange(min=0.001),
    help="Seconds an access token lives.",
)
@click.option(
    "--token-uses",
    type=click.IntRange(min=1),
    default=None,
    help="Requests an access token answers before its session ends with a 401, as when "
    "another application logs in with the same account (default: unlimited).",
)
@click.option(
    "--one-session-per-user",
    is_flag=True,
    help="End a user's sessions whenever that user logs in or refreshes again.",
)
@click.option(
    "--max-page-size",
    default=500,
    show_default=True,
    type=click.IntRange(1),
    help="Largest limit served; larger ones are capped.",
)
@click.option(
    "--fault-rate",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="Probability that a jobs request fails (429, 520, 503, reset).",
)
@click.option(
    "--advance-every",
    type=click.FloatRange(min=0.001),
    default=None,
    help="Let virtual time pass every SECONDS of real time (default: never).",
)
@click.option(
    "--advance-hours",
    default=24.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Virtual hours that pass each time.",
)
@click.option(
    "--latency",
    default=0.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds added to every page of a job collection.",
)
@click.option(
    "--refuse",
    multiple=True,
    metavar="PATH_PREFIX",
    help="Answer 404 to every request whose path is PATH_PREFIX or lies below it, as an older "
    "console without that endpoint does (e.g. /api/v3/infrastructure/managementAgents); "
    "repeatable.",
)
@click.option(
    "--start",
    metavar="INSTANT",
    help="The console's clock at start, an ISO 8601 instant with its offset (e.g. "
    "2026-11-01T00:00:00Z). Default: 2026-11-01T00:00:00Z, so that a seed always gives the "
    "same data.",
)
def simulate(
    host: str,
    port: int,
    jobs: int,
    platforms: tuple[str, ...],
    outage_rate: float,
    seed: int,
    api_key: str,
    username: str,
    password: str,
    token_ttl: float,
    token_uses: int | None,
    one_session_per_user: bool,
    max_page_size: int,
    fault_rate: float,
    advance_every: float | None,
    advance_hours: float,
    latency: float,
    refuse: tuple[str, ...],
    start: str | None,
) -> None:
    """Serve a simulated Veeam Service Provider Console REST API v3 over plain HTTP.

    Serves the backup agent jobs of each platform (/infrastructure/backupAgents/windows/jobs,
    .../linux/jobs, .../mac/jobs), the agents (/infrastructure/backupAgents and
    .../windows, .../linux, .../mac), the management agents (/infrastructure/managementAgents),
    the restore points (/protectedWorkloads/computersManagedByConsole/restorePoints) and the
    organizations. Prints the URL and credentials to use, then serves until interrupted.
    """
    # Here, not at the top: every ``vspc-etl`` command imports this module to register it.
    from etl.simulator.app import Simulator
    from etl.simulator.server import SimulatorServer

    begin = _instant(start) if start is not None else None

    sim = Simulator(
        jobs=jobs,
        seed=seed,
        api_keys=(api_key,),
        users={username: password},
        token_ttl=token_ttl,
        token_uses=token_uses,
        one_session_per_user=one_session_per_user,
        max_page_size=max_page_size,
        latency=latency,
        platforms=platforms,
        outage_rate=outage_rate,
        refuse=refuse,
        start=begin,
    )
    if fault_rate:
        sim.faults.random(fault_rate, seed=seed)
    try:
        server = SimulatorServer(sim, host=host, port=port)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with server:
            click.echo(
                f"VSPC simulator: VSPC_URL={server.url} VSPC_API_KEY={api_key} "
                f"(or VSPC_USERNAME={username} VSPC_PASSWORD={password}); "
                f"{jobs} jobs ({','.join(platforms)}), seed {seed}"
            )
            while not stop.wait(advance_every or 0.5):
                if advance_every:
                    summary = sim.advance(advance_hours)
                    click.echo(
                        f"advanced to {summary.now.isoformat()}: {len(summary.changed)} changed, "
                        f"{len(summary.added)} added, {len(summary.deleted)} deleted",
                        err=True,
                    )
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _instant(value: str) -> datetime:
    try:
        instant = datetime.fromisoformat(value)
    except ValueError:
        instant = None
    if instant is None or instant.tzinfo is None:
        raise click.BadParameter(
            f"{value!r} is not an ISO 8601 instant with an offset (e.g. 2026-11-01T00:00:00Z)",
            param_hint="--start",
        )
    return instant


if __name__ == "__main__":
    simulate()
