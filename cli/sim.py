"""``trader sim``: run the TWS-protocol simulator in the foreground (``trader sim start``).

``start`` binds its port first and only then imports the data stack (pandas) and loads the bar files: a client
that connects meanwhile is queued by the kernel and served, byte for byte as before, once the catalog is loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cli.common import EXIT_INPUT, cli_errors, console, fail

if TYPE_CHECKING:
    import socket

    from simulator import SimServer

app = typer.Typer(help="The TWS-protocol simulator (a fake TWS for ib_async, on recorded bars).", no_args_is_help=True)


@app.callback()
def _group() -> None:
    """The TWS-protocol simulator."""


@app.command("start")
@cli_errors
def start(
    port: Annotated[int, typer.Option(help="TCP port on 127.0.0.1 (0 = any free port).", min=0, max=65535)] = 7497,
    data: Annotated[Path | None, typer.Option(help="Directory of bar files (default: data/samples).")] = None,
    now: Annotated[
        str | None, typer.Option(help="Market clock start, ISO with zone (default: end of the last daily bar).")
    ] = None,
    server_version: Annotated[int, typer.Option(help="Highest API version to negotiate (157-178).")] = 178,
    participation: Annotated[
        float | None, typer.Option(help="Max share of a bar's volume one bar can fill (default: no limit).")
    ] = None,
) -> None:
    """Start the simulator, print its port and catalog, and serve until Ctrl-C."""
    import socket

    from simulator.config import SimConfig  # light: no pandas

    config = SimConfig(
        data_dir=data, port=port, server_version=server_version, partial_fill_participation=participation
    )
    try:
        listener = socket.create_server((config.host, port))  # SO_REUSEADDR, as asyncio's reuse_address=True
    except OSError as exc:
        raise fail(f"error: cannot listen on {config.host}:{port}: {exc.strerror or exc}") from None
    with listener:
        import asyncio
        import dataclasses

        from simulator import SimServer  # pandas and the bar loader: after the port accepts connections
        from simulator.clock import to_utc

        try:
            start_at = to_utc(now) if now else None
        except ValueError as exc:
            raise fail(f"error: --now: {exc}", EXIT_INPUT) from None
        sim = SimServer(dataclasses.replace(config, now=start_at))
        try:
            asyncio.run(_serve(sim, listener))
        except KeyboardInterrupt:
            console.print("simulator stopped")


async def _serve(sim: SimServer, listener: socket.socket) -> None:
    import asyncio

    await sim.start(listener)
    try:
        console.print(f"TWS simulator listening on 127.0.0.1:{sim.port} (server version {sim.config.server_version})")
        console.print(f"data: {sim.config.resolved_data_dir()}")
        console.print(f"market clock: {sim.clock.now.isoformat()}; accounts: {', '.join(sim.state.accounts)}")
        for line in sim.describe():
            console.print(f"  {line}", markup=False)
        console.print("Ctrl-C to stop")
        await asyncio.Event().wait()
    finally:
        await sim.stop()
