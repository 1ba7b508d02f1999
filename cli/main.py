"""The ``trader`` command line."""

from __future__ import annotations

import typer

from cli import strategies
from cli.common import cli_errors, console, settings

app = typer.Typer(
    name="trader",
    help="LLM-assisted strategies for Interactive Brokers, orchestrated by Prefect.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(strategies.app, name="strategies")


@app.command("init")
@cli_errors
def init() -> None:
    """Create or upgrade the database schema (safe to run twice)."""
    from services.db import init_database

    report = init_database(settings())
    console.print(f"database {report.url}: {report.action} (revision {report.revision})")


if __name__ == "__main__":
    app()
