"""The clock control endpoint: ``trader sim start`` in its own process, the real ib_async client, and the clock
stepped from outside by ``trader sim status`` / ``step`` / ``advance-to``.

Bars (data/samples/ib-spy-5min-20120627.csv, UTC): the clock starts at 14:30, after the 14:25 bar (close 133.09), so
a BUY LMT 132.80 rests; the first bar to trade at or below it is 15:10-15:15 (open 132.99, low 132.78): the fill is
132.80 at 15:15, the 9th bar. A BUY LMT 130 DAY never fills and ends at the 16:00 New York close (20:00 UTC).
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
from ib_async import IB, LimitOrder, Stock, Trade
from typer.testing import CliRunner, Result

from cli.sim import app
from simulator import SimServer
from simulator import control as sim_control
from tests.simulator.helpers import eventually

TRADER = str(Path(sys.executable).with_name("trader"))
NOT_LOOPBACK = "error: --control-host: control host must be a loopback"
START_DEADLINE_S = 120.0  # a cold start compiles pandas on a loaded box; the test waits for the line, not the time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class RunningSim:
    proc: asyncio.subprocess.Process
    port: int
    control_port: int
    lines: list[str] = field(default_factory=list)


@asynccontextmanager
async def sim_process(*args: str) -> AsyncIterator[RunningSim]:
    """``trader sim start --port 0 ARGS`` until its catalog is printed; SIGINT (Ctrl-C) at the end."""
    proc = await asyncio.create_subprocess_exec(
        TRADER, "sim", "start", "--port", "0", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert proc.stdout is not None
    stdout = proc.stdout
    lines: list[str] = []
    drain: asyncio.Task[None] | None = None
    try:
        while not lines or not lines[-1].startswith("Ctrl-C"):
            line = (await asyncio.wait_for(stdout.readline(), START_DEADLINE_S)).decode()
            assert line, "trader sim start exited:\n" + "".join(lines)
            lines.append(line.rstrip("\n"))
        port = int(re.search(r"listening on 127\.0\.0\.1:(\d+)", lines[0]).group(1))  # type: ignore[union-attr]
        control = int(re.search(r"clock control on 127\.0\.0\.1:(\d+)", lines[1]).group(1))  # type: ignore[union-attr]

        async def keep_reading() -> None:
            while line := await stdout.readline():
                lines.append(line.decode().rstrip("\n"))

        drain = asyncio.ensure_future(keep_reading())
        yield RunningSim(proc, port, control, lines)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if drain is not None:
            await asyncio.wait_for(drain, 10)


async def cli(*args: str) -> Result:
    """``trader sim ARGS`` in this process (CliRunner), on a worker thread: the ib_async client keeps its loop."""
    return await asyncio.to_thread(CliRunner().invoke, app, list(args))


async def trader_process(*args: str) -> tuple[int, str]:
    """``trader ARGS`` as its own process: exit code and stdout+stderr."""
    proc = await asyncio.create_subprocess_exec(
        TRADER, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), START_DEADLINE_S)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_paper_trade_through_history_by_stepping_the_clock_from_the_cli() -> None:
    async with sim_process("--now", "2012-06-27T14:30:00Z") as running:
        port = str(running.control_port)
        ib = IB()
        await ib.connectAsync("127.0.0.1", running.port, clientId=1, timeout=10)
        try:
            spy = Stock("SPY", "SMART", "USD")
            await ib.qualifyContractsAsync(spy)
            target: Trade = ib.placeOrder(spy, LimitOrder("BUY", 10, 132.80, tif="DAY"))
            day: Trade = ib.placeOrder(spy, LimitOrder("BUY", 10, 130.00, tif="DAY"))
            await eventually(lambda: target.orderStatus.status == day.orderStatus.status == "Submitted", 10)
            t_id, d_id = target.order.orderId, day.order.orderId  # ib_async's own ids (its reqIds share the counter)

            result = await cli("status", "--control-port", port)
            assert result.exit_code == 0, result.output
            assert result.output.splitlines() == [
                "market clock: 2012-06-27T14:30:00+00:00",
                "next bar: 2012-06-27T14:35:00+00:00",
                "open orders: 2",
                f"  #{t_id} client 1 permId 1000000001: BUY 10 SPY LMT 132.8 DAY, Submitted, filled 0",
                f"  #{d_id} client 1 permId 1000000002: BUY 10 SPY LMT 130 DAY, Submitted, filled 0",
                "positions: none",
                "cash: DU1234567 1000000",
                "API clients: 1",
            ]

            result = await cli("step", "3", "--control-port", port)
            assert result.exit_code == 0, result.output
            assert result.output.splitlines() == [
                "market clock: 2012-06-27T14:30:00+00:00 -> 2012-06-27T14:45:00+00:00 (3 bars)",
                "open orders: 2; next bar: 2012-06-27T14:50:00+00:00",
            ]
            assert target.orderStatus.status == "Submitted" and not target.fills

            # the real `trader` entry point, as a person types it in a second shell
            code, output = await trader_process("sim", "step", "20", "--until-fill", "--control-port", port)
            assert code == 0, output
            assert output.splitlines() == [
                "market clock: 2012-06-27T14:45:00+00:00 -> 2012-06-27T15:15:00+00:00 (6 bars)",
                f"fill: #{t_id} client 1 BOT 10 SPY @ 132.8 at 2012-06-27T15:15:00+00:00 (commission 1)",
                "open orders: 1; next bar: 2012-06-27T15:20:00+00:00",
            ]
            await eventually(lambda: target.orderStatus.status == "Filled" and bool(target.fills), 10)
            (fill,) = target.fills
            assert fill.execution.price == 132.80
            assert fill.execution.shares == 10
            assert fill.execution.side == "BOT"
            assert fill.execution.time == datetime(2012, 6, 27, 15, 15, tzinfo=UTC)
            await eventually(lambda: fill.commissionReport.commission == 1.0, 10)
            assert target.orderStatus.avgFillPrice == 132.80
            assert day.orderStatus.status == "Submitted"

            result = await cli("status", "--symbol", "spy", "--json", "--control-port", port)
            assert result.exit_code == 0, result.output
            status = json.loads(result.output)
            assert status["positions"] == [
                {"account": "DU1234567", "symbol": "SPY", "quantity": "10", "avg_cost": "132.9"}
            ]
            assert status["cash"] == {"DU1234567": "998671"}
            assert (status["now"], status["next_bar"], status["symbol"]) == (
                "2012-06-27T15:15:00+00:00",
                "2012-06-27T15:20:00+00:00",
                "SPY",
            )

            # bad input: one line, exit 2, the clock unmoved
            result = await cli("advance-to", "2012-06-27T15:00:00Z", "--control-port", port)
            assert result.exit_code == 2
            assert result.output == (
                "error: cannot advance backwards to 2012-06-27T15:00:00+00:00 (now 2012-06-27T15:15:00+00:00)\n"
            )
            result = await cli("advance-to", "2012-06-27T19:00:00", "--control-port", port)
            assert result.exit_code == 2
            assert result.output == (
                "error: timestamp 2012-06-27T19:00:00 has no timezone (use e.g. 2012-06-27T20:00:00Z)\n"
            )
            result = await cli("step", "--symbol", "XYZ", "--control-port", port)
            assert (result.exit_code, result.output) == (2, "error: unknown symbol 'XYZ'\n")

            # the session's close: the unfilled DAY order expires, and the client is told
            result = await cli("advance-to", "2012-06-27T16:00:00-04:00", "--control-port", port)
            assert result.exit_code == 0, result.output
            assert result.output.splitlines() == [
                "market clock: 2012-06-27T15:15:00+00:00 -> 2012-06-27T20:00:00+00:00",
                f"ended: #{d_id} client 1 permId 1000000002: BUY 10 SPY LMT 130 DAY, Cancelled, filled 0",
                "open orders: 0; next bar: 2012-06-27T20:05:00+00:00",
            ]
            await eventually(lambda: day.orderStatus.status == "Cancelled", 10)
            assert not day.fills
            assert await ib.reqCurrentTimeAsync() == datetime(2012, 6, 27, 20, tzinfo=UTC)
        finally:
            ib.disconnect()
    assert running.proc.returncode == 0, "\n".join(running.lines)
    assert running.lines[-1] == "simulator stopped"


async def test_no_simulator_listening_is_one_line_and_exit_1() -> None:
    port = str(free_port())
    for args in (["status"], ["step", "2"], ["advance-to", "2012-06-27T20:00:00Z"]):
        result = await cli(*args, "--control-port", port)
        assert result.exit_code == 1, result.output
        assert result.output == (
            f"error: no simulator is listening on 127.0.0.1:{port} "
            "(start one with `trader sim start`, or pass its --control-port)\n"
        )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["advance-to", "2012-06-27T20:00:00"], "error: timestamp 2012-06-27T20:00:00 has no timezone"),
        (["advance-to", "tomorrow"], "error: not an ISO timestamp: 'tomorrow'"),
        (["step", "0"], "greater than or equal to 1"),
        (["status", "--control-host", "192.0.2.1"], NOT_LOOPBACK),
        (["start", "--port", "0", "--control-host", "0.0.0.0"], NOT_LOOPBACK),
    ],
)
def test_bad_input_exits_2_before_any_simulator_is_asked(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1 or "Usage:" in result.output
    assert "Traceback" not in result.output


def test_the_control_default_is_next_to_the_default_api_port() -> None:
    from services.settings import IBSettings

    assert sim_control.DEFAULT_CONTROL_PORT == IBSettings().port + 1 == 7498


async def test_protocol_replies_line_by_line_and_hangs_up_on_garbage(sim: SimServer) -> None:
    port = await sim.serve_control()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b'{"cmd": "status"}\n\n{"cmd": "step", "bars": 0}\n{"cmd": "fly"}\n')
        writer.write(b'{"cmd": "advance_to", "ts": "2017-12-29 12:00"}\nPOST / HTTP/1.1\r\n{"cmd": "step"}\n')
        replies = [json.loads(await asyncio.wait_for(reader.readline(), 10)) for _ in range(5)]
        assert await asyncio.wait_for(reader.read(), 10) == b""  # closed after the non-JSON line
    finally:
        writer.close()
    assert replies[0]["ok"] is True and replies[0]["result"]["now"] == "2017-12-29T21:00:00+00:00"
    assert replies[1:] == [
        {"ok": False, "kind": "input", "error": "bars must be a whole number >= 1, not 0"},
        {"ok": False, "kind": "input", "error": "unknown command 'fly' (one of: status, step, advance_to)"},
        {
            "ok": False,
            "kind": "input",
            "error": "timestamp 2017-12-29 12:00:00 has no timezone (use e.g. 2017-12-29T21:00:00Z)",
        },
        {"ok": False, "kind": "input", "error": "not a JSON object (one request per line)"},
    ]
    assert sim.clock.now == datetime(2017, 12, 29, 21, tzinfo=UTC)  # the step after the garbage never ran


async def test_control_endpoint_binds_loopback_only(sim: SimServer) -> None:
    for host in ("0.0.0.0", "192.0.2.1", "::", "example.com"):
        with pytest.raises(ValueError, match="loopback"):
            await sim.serve_control(host=host)
    assert sim.control is None
