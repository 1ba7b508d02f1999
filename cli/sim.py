"""``trader sim``: run the TWS-protocol simulator in the foreground (``trader sim start``) and step its market clock
from another shell (``trader sim status`` / ``step`` / ``advance-to``, through its loopback control port).

``start`` binds its ports first and only then imports the data stack (pandas) and loads the bar files: a client
that connects meanwhile is queued by the kernel and served, byte for byte as before, once the catalog is loaded.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
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
    control_port: Annotated[
        int | None,
        typer.Option(
            help="Clock control port (default: --port + 1, i.e. 7498; any free port with --port 0; 0 = any free port).",
            min=0,
            max=65535,
        ),
    ] = None,
    control_host: Annotated[str, typer.Option(help="Clock control address: loopback only.")] = "127.0.0.1",
    no_control: Annotated[bool, typer.Option("--no-control", help="Serve no clock control endpoint.")] = False,
) -> None:
    """Start the simulator, print its ports and catalog, and serve until Ctrl-C."""
    import socket

    from simulator.config import SimConfig  # light: no pandas

    config = SimConfig(
        data_dir=data, port=port, server_version=server_version, partial_fill_participation=participation
    )
    try:
        listener = socket.create_server((config.host, port))  # SO_REUSEADDR, as asyncio's reuse_address=True
    except OSError as exc:
        raise fail(f"error: cannot listen on {config.host}:{port}: {exc.strerror or exc}") from None
    control: socket.socket | None = None
    if not no_control:
        from simulator.control import bind_control  # light (stdlib only), and after the API port listens

        if control_port is None:
            control_port = port + 1 if 0 < port < 65535 else 0
        try:
            control = bind_control(control_host, control_port)
        except ValueError as exc:
            listener.close()
            raise fail(f"error: --control-host: {exc}", EXIT_INPUT) from None
        except OSError as exc:
            listener.close()
            raise fail(
                f"error: cannot listen on {control_host}:{control_port} (clock control; see --control-port, "
                f"--no-control): {exc.strerror or exc}"
            ) from None
    with listener, control or contextlib.nullcontext():
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
            asyncio.run(_serve(sim, listener, control))
        except KeyboardInterrupt:
            console.print("simulator stopped")


async def _serve(sim: SimServer, listener: socket.socket, control: socket.socket | None) -> None:
    import asyncio

    from simulator.control import DEFAULT_CONTROL_PORT

    await sim.start(listener)
    try:
        console.print(f"TWS simulator listening on 127.0.0.1:{sim.port} (server version {sim.config.server_version})")
        if control is not None:
            host, cport = control.getsockname()[:2]
            await sim.serve_control(control)
            hint = "" if cport == DEFAULT_CONTROL_PORT else f" --control-port {cport}"
            hint += "" if host == "127.0.0.1" else f" --control-host {host}"
            console.print(f"clock control on {host}:{cport} (trader sim status{hint})", markup=False)
        console.print(f"data: {sim.config.resolved_data_dir()}")
        console.print(f"market clock: {sim.clock.now.isoformat()}; accounts: {', '.join(sim.state.accounts)}")
        for line in sim.describe():
            console.print(f"  {line}", markup=False)
        console.print("Ctrl-C to stop")
        await asyncio.Event().wait()
    finally:
        await sim.stop()


# ---- the clock, from another shell --------------------------------------------------------------------------

ControlPort = Annotated[
    int | None,
    typer.Option(
        "--control-port",
        envvar="TRADER_SIM__CONTROL_PORT",
        help="The simulator's clock control port (printed by `trader sim start`; default: the simulator's default).",
        min=1,
        max=65535,
    ),
]
ControlHost = Annotated[str, typer.Option("--control-host", help="Its loopback address.")]
Timeout = Annotated[float, typer.Option(help="Seconds to wait for the simulator's reply.", min=0.1)]
AsJson = Annotated[bool, typer.Option("--json", help="Print the simulator's JSON reply.")]
Symbol = Annotated[
    str | None, typer.Option(help="Step by this symbol's bars (its finest series at the clock; default: any series).")
]


def _ask_and_show(
    payload: dict[str, object],
    symbol: str | None,
    port: int | None,
    host: str,
    timeout: float,
    show: Callable[[dict[str, object]], None],
) -> None:
    if symbol:
        payload["symbol"] = symbol
    show(_ask(payload, port, host, timeout))


def _ask(payload: dict[str, object], port: int | None, host: str, timeout: float) -> dict[str, object]:
    """One control request; a refusal or no simulator is one line on stderr and exit 2 (bad input) or 1."""
    from simulator.control import DEFAULT_CONTROL_PORT, ControlUnavailable, request  # stdlib only

    try:
        reply = request(payload, port or DEFAULT_CONTROL_PORT, host=host, timeout_s=timeout)
    except ValueError as exc:  # a non-loopback --control-host
        raise fail(f"error: --control-host: {exc}", EXIT_INPUT) from None
    except ControlUnavailable as exc:
        raise fail(f"error: {exc}") from None
    if not reply.get("ok"):
        raise fail(f"error: {reply.get('error')}", EXIT_INPUT if reply.get("kind") == "input" else 1)
    result = reply.get("result")
    if not isinstance(result, dict):
        raise fail(f"error: unexpected reply from the simulator: {reply!r}")
    return result


def _print_json(result: dict[str, object]) -> None:
    import json

    console.print(json.dumps(result, indent=2), markup=False)


def _order_line(o: dict[str, object]) -> str:
    price = " ".join(str(p) for p in (o.get("lmt_price"), o.get("aux_price")) if p is not None)
    kind = f"{o['order_type']} {price}" if price else str(o["order_type"])
    return (
        f"#{o['order_id']} client {o['client_id']} permId {o['perm_id']}: {o['action']} {o['quantity']} "
        f"{o['symbol']} {kind} {o['tif']}, {o['status']}, filled {o['filled']}"
    )


def _print_status(status: dict[str, object]) -> None:
    symbol = f" ({status['symbol']})" if status.get("symbol") else ""
    lines = [f"market clock: {status['now']}", f"next bar{symbol}: {status['next_bar'] or 'none (end of data)'}"]
    orders = status.get("orders")
    assert isinstance(orders, list)
    lines.append(f"open orders: {status['open_orders']}")
    lines += [f"  {_order_line(o)}" for o in orders]
    positions = status.get("positions")
    assert isinstance(positions, list)
    lines.append(f"positions: {len(positions) or 'none'}")
    lines += [f"  {p['account']} {p['symbol']} {p['quantity']} avg cost {p['avg_cost']}" for p in positions]
    cash = status.get("cash")
    assert isinstance(cash, dict)
    lines.append("cash: " + ", ".join(f"{account} {value}" for account, value in cash.items()))
    clients = status.get("clients")
    assert isinstance(clients, list)
    lines.append(f"API clients: {', '.join(str(c) for c in clients) or 'none'}")
    for line in lines:
        console.print(line, markup=False)


def _print_step(result: dict[str, object]) -> None:
    bars = result.get("bars")
    counted = "" if bars is None else f" ({bars} bar{'s' if bars != 1 else ''})"
    console.print(f"market clock: {result['before']} -> {result['now']}{counted}", markup=False)
    fills = result.get("fills")
    ended = result.get("ended")
    assert isinstance(fills, list) and isinstance(ended, list)
    for f in fills:
        console.print(
            f"fill: #{f['order_id']} client {f['client_id']} {f['side']} {f['shares']} {f['symbol']} @ {f['price']}"
            f" at {f['time']} (commission {f['commission']})",
            markup=False,
        )
    for o in ended:
        console.print(f"ended: {_order_line(o)}", markup=False)
    if result.get("stopped") == "no fill":
        console.print("no fill", markup=False)
    elif result.get("stopped") == "no more bars":
        console.print("no more bars: the data ends here", markup=False)
    status = result.get("status")
    assert isinstance(status, dict)
    console.print(
        f"open orders: {status['open_orders']}; next bar: {status['next_bar'] or 'none (end of data)'}", markup=False
    )


@app.command("status")
@cli_errors
def status(
    symbol: Annotated[str | None, typer.Option(help="Show the next bar of this symbol's series.")] = None,
    control_port: ControlPort = None,
    control_host: ControlHost = "127.0.0.1",
    timeout: Timeout = 30.0,
    as_json: AsJson = False,
) -> None:
    """A running simulator's market clock, next bar, open orders, positions and API clients."""
    _ask_and_show(
        {"cmd": "status"}, symbol, control_port, control_host, timeout, _print_json if as_json else _print_status
    )


@app.command("step")
@cli_errors
def step(
    bars: Annotated[int, typer.Argument(help="How many bars to step.", min=1)] = 1,
    symbol: Symbol = None,
    until_fill: Annotated[
        bool, typer.Option("--until-fill", help="Step one bar at a time, at most BARS, and stop after a fill.")
    ] = False,
    control_port: ControlPort = None,
    control_host: ControlHost = "127.0.0.1",
    timeout: Timeout = 30.0,
    as_json: AsJson = False,
) -> None:
    """Advance a running simulator's clock by BARS bars: resting orders fill and DAY orders expire on the way,
    and connected API clients get their order statuses and executions."""
    payload: dict[str, object] = {"cmd": "step", "bars": bars, "until_fill": until_fill}
    _ask_and_show(payload, symbol, control_port, control_host, timeout, _print_json if as_json else _print_step)


@app.command("advance-to")
@cli_errors
def advance_to(
    ts: Annotated[str, typer.Argument(help="ISO timestamp with a zone, e.g. 2012-06-27T20:00:00Z; not before now.")],
    control_port: ControlPort = None,
    control_host: ControlHost = "127.0.0.1",
    timeout: Timeout = 30.0,
    as_json: AsJson = False,
) -> None:
    """Advance a running simulator's clock to TS, matching orders against every bar completed on the way."""
    from datetime import datetime

    try:
        target = datetime.fromisoformat(ts)
    except ValueError:
        raise fail(f"error: not an ISO timestamp: {ts!r}", EXIT_INPUT) from None
    if target.tzinfo is None:
        raise fail(f"error: timestamp {ts} has no timezone (use e.g. 2012-06-27T20:00:00Z)", EXIT_INPUT)
    payload: dict[str, object] = {"cmd": "advance_to", "ts": target.isoformat()}
    _ask_and_show(payload, None, control_port, control_host, timeout, _print_json if as_json else _print_step)
