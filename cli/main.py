"""The ``trader`` command line.

Startup cost is part of the interface: ``trader --help`` and ``trader GROUP --help`` import typer, rich and the
``cli`` modules only; each command imports the services it needs when it runs (tests/test_cli_imports.py pins it;
benchmarks/bench_cli.py measures it). Help is click's plain layout: rich's help renderer alone costs more to import
than all of ``import typer, rich``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

import typer
from typer.core import TyperGroup, TyperOption

from cli import (
    approvals,
    broker,
    common,
    data,
    demo,
    deploy,
    llm,
    orders,
    prompts,
    replay,
    sim,
    strategies,
    symbols,
    worker,
)
from cli.common import cli_errors, console, fail, settings


class TraderGroup(TyperGroup):
    """A command group whose unset boolean flags (``--help``, the completion options) default to False, not None.

    Typer 0.29 coerces every value that is not already a bool through a pydantic TypeAdapter, so an unset flag
    (None) made ``trader orders --help`` import pydantic for the root group's ``--help``. False means the same to
    the flags' callbacks.
    """

    def get_params(self, ctx: Any) -> Any:
        params = super().get_params(ctx)
        for param in params:
            if isinstance(param, TyperOption) and param.is_bool_flag and param.default is None:
                param.default = False
        return params


app = typer.Typer(
    name="trader",
    help="LLM-assisted strategies for Interactive Brokers, orchestrated by Prefect.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help for every group (they inherit it)
    cls=TraderGroup,
)
for name, group in {
    "strategies": strategies.app,
    "data": data.app,
    "sim": sim.app,
    "symbols": symbols.app,
    "orders": orders.app,
    "prompts": prompts.app,
    "broker": broker.app,
    "approvals": approvals.app,
    "llm": llm.app,
}.items():
    app.add_typer(group, name=name, cls=TraderGroup)
app.command("positions")(orders.positions)
app.command("pnl")(orders.pnl)
app.command("halt")(orders.halt)
app.command("resume")(orders.resume)
app.command("demo")(demo.demo)
deploy.register(app)  # bootstrap, deploy, trigger
app.command("worker")(worker.worker)
app.command("approve")(approvals.approve)
app.command("reject")(approvals.reject)
app.command("replay")(replay.replay_command)

server_app = typer.Typer(help="A local Prefect server under the data directory.", no_args_is_help=True)
app.add_typer(server_app, name="server", cls=TraderGroup)


@app.command("init")
@cli_errors
def init() -> None:
    """Create or upgrade the database schema and load the shipped prompt templates (safe to run twice)."""
    from services.db import init_database, session_scope
    from services.prompt_library import seed_templates

    report = init_database(settings())
    console.print(f"database {report.url}: {report.action} (revision {report.revision})")
    with session_scope(settings().database_url()) as session:
        seeded = seed_templates(session)
    console.print(f"prompt templates: {len(seeded.created)} created, {len(seeded.unchanged)} unchanged")


@app.command("run")
@cli_errors
def run(
    name: Annotated[str, typer.Argument(help="Strategy name.")],
    sim_clock: Annotated[
        bool,
        typer.Option(
            "--sim-clock",
            help="Take the market's 'now' from the simulator's clock (its control port, TRADER_SIM__CONTROL_PORT): "
            "paper-trading through history with `trader sim step`.",
        ),
    ] = False,
) -> None:
    """Run one strategy now, in this process, against the configured broker (TRADER_IB__*)."""
    from flows.strategy import strategy_run
    from services.repositories import strategies as repo
    from services.runtime import Runtime, get_runtime, use_runtime

    with common.db_session() as session:
        repo.require(session, name)  # an unknown name is bad input (exit 2), not a "Skipped" run
    runtime = Runtime(settings(), clock=_simulator_clock()) if sim_clock else get_runtime()
    try:
        with use_runtime(runtime):
            state = strategy_run(name, return_state=True)
            result = state.result()  # raises what a failed run raised
    finally:
        runtime.close()
    if result is None:  # the gate ended the run early (Completed "Skipped": inactive, market closed, IB reset)
        console.print(f"{name}: {state.message}; nothing fetched or ordered", markup=False)
        return
    console.print(f"{name}: {result.action}")
    console.print(f"  reason: {result.reason}", markup=False)
    console.print(f"  flow run: {result.flow_run_id}")
    if result.chart_png:
        console.print(f"  chart: {result.chart_png}")


def _simulator_clock() -> Callable[[], datetime]:
    """The market clock of the simulator serving the control port in the settings (checked once now)."""
    from simulator.control import DEFAULT_CONTROL_PORT, ControlUnavailable, request

    port = settings().sim.control_port or DEFAULT_CONTROL_PORT

    def now() -> datetime:
        reply = request({"cmd": "status"}, port, timeout_s=10)
        if not reply.get("ok"):
            raise ControlUnavailable(f"the simulator on port {port} refused a status request: {reply.get('error')}")
        return datetime.fromisoformat(str(reply["result"]["now"]))

    try:
        now()
    except ControlUnavailable as exc:
        raise fail(f"error: --sim-clock: {exc}") from None
    return now


@server_app.command("start")
@cli_errors
def server_start() -> None:
    """Start a local Prefect server (detached) and print its URL."""
    from deployments.local_server import start_server

    info = start_server(settings().ensure_data_dir() / "prefect")
    console.print(f"Prefect server: {info.ui_url} (API {info.api_url}); export PREFECT_API_URL={info.api_url}")


@server_app.command("stop")
@cli_errors
def server_stop() -> None:
    """Stop the local Prefect server started by `trader server start` or `trader demo`."""
    from deployments.local_server import stop_server

    stopped = stop_server(settings().ensure_data_dir() / "prefect")
    console.print("stopped" if stopped else "no local server was running")


if __name__ == "__main__":
    app()
