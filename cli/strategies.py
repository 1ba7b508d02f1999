"""``trader strategies``: create, list, show, update, activate, deactivate, delete."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.common import EXIT_FAILED, cli_errors, console, db_session, ensure_schema, err_console, fail, settings

app = typer.Typer(help="Manage stored strategy definitions.", no_args_is_help=True)

FileOption = Annotated[Path, typer.Option("--file", "-f", help="Strategy document (YAML or JSON).")]


@app.command("create")
@cli_errors
def create(file: FileOption) -> None:
    """Validate a strategy file and store it as a new strategy."""
    from services import strategies as store

    definition = store.load_strategy_file(file)
    with db_session() as session:
        store.save_definition(session, definition, create_only=True)
    console.print(f"created strategy {definition.name} ({definition.symbol}, {definition.bar_size.value})")


@app.command("update")
@cli_errors
def update(name: str, file: FileOption) -> None:
    """Replace a stored strategy with the (validated) document in FILE."""
    from services import strategies as store
    from services.repositories import strategies as repo

    definition = store.load_strategy_file(file)
    if definition.name != name:
        raise typer.BadParameter(f"the file defines {definition.name!r}, not {name!r}")
    with db_session() as session:
        repo.require(session, name)
        store.save_definition(session, definition)
    console.print(f"updated strategy {name}")


@app.command("list")
@cli_errors
def list_(active: Annotated[bool, typer.Option("--active", help="Only active strategies.")] = False) -> None:
    """List stored strategies."""
    from rich.table import Table

    from services.repositories import strategies as repo

    table = Table("name", "symbol", "bar size", "schedule", "prompt", "active")
    with db_session() as session:
        for row in repo.list_strategies(session, active_only=active):
            prompt = f"{row.prompt_template_name} v{row.prompt_template_version}" if row.prompt_template_name else "-"
            table.add_row(
                row.name,
                row.symbol,
                str(row.bar_size),
                f"{row.cron} {row.timezone}",
                prompt,
                "yes" if row.active else "no",
            )
    console.print(table)


@app.command("show")
@cli_errors
def show(name: str) -> None:
    """Show one strategy with its next three run times."""
    from services import strategies as store

    with db_session() as session:
        definition = store.get_definition(session, name)
    console.print_json(definition.model_dump_json())
    console.print("next runs:")
    for when in store.next_run_times(definition, count=3):
        state = "" if definition.active else " (inactive: will not run)"
        console.print(f"  {when.isoformat()}{state}")


NOT_REACHABLE = (
    "Prefect server not reachable: the deployment stays as it is until `trader deploy` or the next strategy-sync run"
)


def _converge_deployment(name: str) -> None:
    """Bring ``name``'s Prefect deployment in line with the database now (pause, resume, remove), if a server
    answers at PREFECT_API_URL; otherwise say that it stays as it is. The database change is already committed."""
    import httpx
    from prefect.exceptions import PrefectException

    from deployments.bootstrap import server_reachable
    from deployments.sync import FLOW_NAME, sync_from_database

    if not server_reachable():
        err_console.print(f"warning: {NOT_REACHABLE}", markup=False)
        return
    deployment = f"{FLOW_NAME}/{name}"
    try:
        report = sync_from_database(
            settings().database_url(), work_pool=settings().prefect.work_pool, app_dir=None, only=[name]
        )
    except (httpx.HTTPError, PrefectException) as exc:
        raise fail(
            f"error: deployment {deployment} not updated ({type(exc).__name__}: {exc}); "
            "run `trader deploy` once the Prefect server works",
            EXIT_FAILED,
        ) from None
    change = report.change_of(name)
    if change is None:
        console.print(f"deployment {deployment}: none (nothing to remove)", markup=False)
    elif change == "unchanged":
        console.print(f"deployment {deployment} unchanged (already in line)", markup=False)
    else:
        console.print(f"deployment {deployment} {change}", markup=False)


@app.command("activate")
@cli_errors
def activate(name: str) -> None:
    """Mark a strategy active and resume its Prefect deployment (when the server is reachable)."""
    from services import strategies as store

    ensure_schema()
    store.set_active_now(settings().database_url(), name, True)
    console.print(f"activated {name}")
    _converge_deployment(name)


@app.command("deactivate")
@cli_errors
def deactivate(name: str) -> None:
    """Mark a strategy inactive and pause its Prefect deployment (when the server is reachable)."""
    from services import strategies as store

    ensure_schema()
    store.set_active_now(settings().database_url(), name, False)  # under the exclusive send lock: holds at once
    console.print(f"deactivated {name}")
    _converge_deployment(name)


@app.command("delete")
@cli_errors
def delete(name: str) -> None:
    """Delete a strategy (its signals and orders are kept) and remove its Prefect deployment (when reachable)."""
    from services import strategies as store
    from services.repositories import strategies as repo

    with db_session() as session:
        repo.require(session, name)
    store.delete_now(settings().database_url(), name)  # under the exclusive send lock: holds at once
    console.print(f"deleted {name}")
    _converge_deployment(name)
