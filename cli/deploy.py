"""``trader bootstrap`` / ``trader deploy`` / ``trader trigger``: the Prefect side of operations.

All three talk to the Prefect server at ``PREFECT_API_URL`` and fail with exit 1 when it is not reachable.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from cli.common import EXIT_INPUT, cli_errors, console, fail, settings


def _require_server() -> None:
    from deployments.bootstrap import server_reachable

    if not server_reachable():
        raise fail("error: no Prefect server: set PREFECT_API_URL (e.g. `trader server start` prints it)")


def _require_active(name: str) -> None:
    """Refuse (exit 2) a strategy that is not stored or is deactivated: its run would only be skipped."""
    from cli.common import db_session
    from services.repositories import strategies as repo

    with db_session() as session:
        row = repo.get_by_name(session, name)
        active = None if row is None else row.active
    if active is None:
        raise fail(f"error: no strategy named {name!r}", EXIT_INPUT)
    if not active:
        raise fail(f"error: strategy {name!r} is deactivated: `trader strategies activate {name}` first", EXIT_INPUT)


@cli_errors
def bootstrap() -> None:
    """Create the work pool, the global concurrency/rate limits, the variables and the notification automations
    (TRADER_NOTIFICATIONS__*; safe to run twice)."""
    from deployments.bootstrap import bootstrap as run_bootstrap

    _require_server()
    report = run_bootstrap(settings())
    for line in report.lines():
        console.print(line, markup=False)


@cli_errors
def deploy(
    app_dir: Annotated[
        Path | None, typer.Option(help="Directory the worker runs flows from (default: this checkout).")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be deployed.")] = False,
) -> None:
    """One deployment per stored strategy (cron + timezone); pause inactive ones, remove deleted ones."""
    from cli.common import db_session
    from deployments.sync import APP_DIR, desired_from_database, sync_from_database

    with db_session():
        pass
    if dry_run:
        for want in desired_from_database(settings().database_url()):
            state = "active" if want.active else "paused"
            console.print(f"{want.name}: {want.cron} ({want.timezone}) {state}", markup=False)
        return
    _require_server()
    report = sync_from_database(
        settings().database_url(), work_pool=settings().prefect.work_pool, app_dir=app_dir or APP_DIR
    )
    for line in report.lines():
        console.print(line, markup=False)


@cli_errors
def trigger(
    name: Annotated[str, typer.Argument(help="Strategy name.")],
    bar_time: Annotated[
        str | None, typer.Option(help="Bar time (ISO with zone); the idempotency key is NAME:BAR_TIME.")
    ] = None,
    wait: Annotated[float, typer.Option(help="Seconds to wait for the run to finish (0: return at once).", min=0)] = 0,
) -> None:
    """Run an active strategy through its deployment (a worker executes it); once per strategy and bar time."""
    from deployments.triggers import idempotency_key, trigger_strategy

    when: datetime | None = None
    if bar_time:
        try:
            when = datetime.fromisoformat(bar_time)
        except ValueError as exc:
            raise fail(f"error: --bar-time: {exc}", EXIT_INPUT) from None
        if when.tzinfo is None:
            raise fail("error: --bar-time: give a timezone (e.g. 2017-12-29T16:00-05:00)", EXIT_INPUT)
    _require_active(name)
    _require_server()
    run = trigger_strategy(name, when, timeout=wait)
    state = run.state.name if run.state else "unknown"
    console.print(f"{name}: flow run {run.id} ({state}), key {idempotency_key(name, when)}", markup=False)
    if wait and run.state is not None and run.state.is_final() and not run.state.is_completed():
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add the commands to the ``trader`` app."""
    app.command("bootstrap")(bootstrap)
    app.command("deploy")(deploy)
    app.command("trigger")(trigger)
