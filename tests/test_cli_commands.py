"""``trader positions``, ``resume``, ``orders list`` / ``show``, ``server start`` / ``stop``, ``run`` and ``demo`` on
real components: SQLite in a temp ``TRADER_DATA_DIR``, a real Prefect server, the TWS simulator over its socket."""

from __future__ import annotations

import datetime as dt
import os
import re
import socket
import time
from collections.abc import Callable
from decimal import Decimal as D
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from cli import common
from deployments.local_server import ServerInfo
from models.enums import OrderSide, OrderStatus, OrderType
from models.tables import Signal
from services.db import session_scope
from services.repositories import fills as fills_repo
from services.repositories import orders as orders_repo
from services.repositories import trading_state
from services.runtime import Runtime, use_runtime
from services.settings import load_settings
from simulator import SimConfig, SimServer
from tests.trader_cli import Invoke

REPO = Path(__file__).resolve().parents[1]
T0 = dt.datetime(2024, 3, 4, 15, 0, tzinfo=dt.UTC)


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting until {what}")
        time.sleep(0.1)


def cells(line: str) -> list[str]:
    return [c.strip() for c in line.split("│") if c.strip()]


def table_rows(output: str) -> dict[str, list[str]]:
    """Rows of a rich table in ``output`` keyed by their first cell."""
    rows = [cells(line) for line in output.splitlines() if line.startswith("│")]
    return {row[0]: row for row in rows if row}


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(common.console, "width", 160)  # no truncated table cells (the runner is not a terminal)


def database_url(trader: Invoke) -> str:
    result = trader("init")
    assert result.exit_code == 0, result.output
    return common.settings().database_url()


# ---------------------------------------------------------------------------------------------------------------------
# positions, resume, orders list / show


def test_positions_are_rebuilt_from_the_stored_fills(trader: Invoke) -> None:
    url = database_url(trader)
    with session_scope(url) as session:
        for exec_id, side, qty, price, minute in [
            ("0001.01", OrderSide.BUY, 10, "100", 0),
            ("0002.01", OrderSide.BUY, 10, "110", 1),
            ("0003.01", OrderSide.SELL, 5, "120", 2),
        ]:
            fills_repo.record(session, exec_id=exec_id, symbol="SPY", side=side, quantity=D(qty), price=D(price),
                              executed_at=T0 + dt.timedelta(minutes=minute), conid=756733,
                              commission=D("1"))  # fmt: skip
        fills_repo.record(session, exec_id="0004.01", symbol="AAPL", side=OrderSide.BUY, quantity=D(3),
                          price=D("50"), executed_at=T0, conid=265598, commission=D("0.5"))  # fmt: skip
    result = trader("positions")
    assert result.exit_code == 0, result.output
    rows = table_rows(result.output)
    # SPY: avg cost (1000 + 1 + 1100 + 1) / 20 = 105.1; the sale realizes (120 - 105.1) * 5 - 1 = 73.5
    assert [D(rows["SPY"][1]), *rows["SPY"][2:]] == [D(15), "105.1000", "73.50", "3.00"]
    assert [D(rows["AAPL"][1]), *rows["AAPL"][2:]] == [D(3), "50.1667", "0.00", "0.50"]


def test_resume_releases_the_kill_switch_engaged_by_halt(trader: Invoke) -> None:
    url = database_url(trader)
    halted = trader("halt", "--reason", "fat finger on SPY")
    assert halted.exit_code == 0, halted.output
    with session_scope(url) as session:
        state = trading_state.get_kill_switch(session)
        assert (state.engaged, state.reason) == (True, "fat finger on SPY")
    resumed = trader("resume")
    assert resumed.exit_code == 0, resumed.output
    assert "kill switch released" in resumed.output
    with session_scope(url) as session:
        state = trading_state.get_kill_switch(session)
        assert state.engaged is False
        assert state.changed_by == "cli"


def _store_orders(url: str) -> tuple[int, int]:
    checks = [
        {"name": "kill_switch", "passed": True, "detail": "off"},
        {"name": "max_notional", "passed": False, "detail": "5,250.00 > 5,000.00"},
    ]
    with session_scope(url) as session:
        filled = orders_repo.create(session, key="spy-a", symbol="SPY", side=OrderSide.BUY, quantity=D(10),
                                    order_type=OrderType.LIMIT, limit_price=D("52.50"),
                                    risk_decision={"checks": checks[:1]})  # fmt: skip
        for status in (OrderStatus.SUBMITTING, OrderStatus.SUBMITTED, OrderStatus.FILLED):
            assert orders_repo.set_status(session, filled, status, f"to {status.value}")
        rejected = orders_repo.create(session, key="spy-b", symbol="SPY", side=OrderSide.SELL, quantity=D(100),
                                      order_type=OrderType.MARKET, risk_decision={"checks": checks})  # fmt: skip
        assert orders_repo.set_status(session, rejected, OrderStatus.RISK_REJECTED, "max_notional")
        return filled.id, rejected.id


def test_orders_list_shows_the_stored_orders_newest_first(trader: Invoke) -> None:
    filled, rejected = _store_orders(database_url(trader))
    result = trader("orders", "list")
    assert result.exit_code == 0, result.output
    rows = [cells(line) for line in result.output.splitlines() if line.startswith("│")]
    assert [r[:4] for r in rows] == [
        [str(rejected), "spy-b", "risk_rejected", "SELL"],
        [str(filled), "spy-a", "filled", "BUY"],
    ]
    # qty, filled (no fill rows were stored) and limit (a market order has none; neither has an error)
    assert [D(c) for c in rows[0][4:]] == [D(100), D(0)]
    assert [D(c) for c in rows[1][4:]] == [D(10), D(0), D("52.50")]


def test_orders_show_prints_events_and_risk_checks(trader: Invoke) -> None:
    filled, rejected = _store_orders(database_url(trader))
    result = trader("orders", "show", str(rejected))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert re.fullmatch(r"spy-b: risk_rejected SELL 100(\.0+)? SPY", lines[0]), lines[0]
    assert [re.sub(r"^  \S+ ", "", line) for line in lines[1:3]] == [
        "None -> created ",
        "created -> risk_rejected max_notional",
    ]
    assert lines[3:] == ["  pass kill_switch: off", "  FAIL max_notional: 5,250.00 > 5,000.00"]
    events = trader("orders", "show", str(filled)).output
    assert "submitted -> filled to filled" in events
    assert "FAIL" not in events
    missing = trader("orders", "show", str(rejected + 100))
    assert missing.exit_code == 2
    assert f"no order {rejected + 100}" in missing.output


# ---------------------------------------------------------------------------------------------------------------------
# server start / stop


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _process_gone(pid: int) -> bool:
    try:
        reaped, _ = os.waitpid(pid, os.WNOHANG)
        if reaped == pid:
            return True
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.prefect
@pytest.mark.slow
def test_server_start_serves_the_api_and_stop_ends_it(trader: Invoke, tmp_path: Path) -> None:
    started = trader("server", "start")
    home = tmp_path / "data" / "prefect"
    try:
        assert started.exit_code == 0, started.output
        match = re.search(r"\(API (http://127\.0\.0\.1:(\d+)/api)\); export PREFECT_API_URL=\1", started.output)
        assert match, started.output
        api_url, port = match.group(1), int(match.group(2))
        assert httpx.get(f"{api_url}/health", timeout=10).json() is True
        pid = int((home / "server.pid").read_text().split()[0])
        again = trader("server", "start")  # finds the running one
        assert again.exit_code == 0 and api_url in again.output
    finally:
        stopped = trader("server", "stop")
    assert stopped.exit_code == 0, stopped.output
    assert stopped.output.strip() == "stopped"
    wait_for(lambda: not _port_open(port), f"port {port} is closed")
    wait_for(lambda: _process_gone(pid), f"the server process {pid} is gone")
    assert trader("server", "stop").output.strip() == "no local server was running"


# ---------------------------------------------------------------------------------------------------------------------
# run NAME, demo (the session's Prefect server)

LAST_DAILY_CLOSE = dt.datetime(2017, 12, 29, 21, 0, tzinfo=dt.UTC)  # of the sample SPY daily file


@pytest.mark.postgres
@pytest.mark.prefect
@pytest.mark.slow
def test_run_executes_the_strategy_against_the_broker_in_the_settings(
    trader: Invoke, prefect_api: ServerInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = database_url(trader)
    created = trader("strategies", "create", "--file", str(REPO / "examples" / "strategies" / "spy-sma-cross.yaml"))
    assert created.exit_code == 0, created.output
    with SimServer.in_thread(SimConfig(data_dir=REPO / "data" / "samples")) as sim:
        sim.clock.set(LAST_DAILY_CLOSE - dt.timedelta(minutes=5))
        monkeypatch.setenv("TRADER_IB__PORT", str(sim.port))  # the broker comes from the settings
        common.settings.cache_clear()
        # Only the market's "now" is the simulator's (the wall clock would make the gate depend on the day).
        with use_runtime(Runtime(load_settings(), clock=lambda: sim.clock.now)):
            result = trader("run", "spy-sma-cross")
        assert result.exit_code == 0, result.output
        connected = sim.stats.connections
    assert connected >= 1
    match = re.search(
        r"^spy-sma-cross: (BUY|SELL|HOLD|ABSTAIN)\n  reason: (.+)\n  flow run: (\S+)$", result.output, re.M
    )
    assert match, result.output
    action, reason, run_id = match.groups()
    with session_scope(url) as session:
        signal = session.scalars(select(Signal).where(Signal.flow_run_id == run_id)).one()
        assert (signal.action.value, signal.reason) == (action, reason)
    chart = re.search(r"^  chart: (\S+)$", result.output, re.M)
    assert chart, result.output
    assert Path(chart.group(1)).is_file()


@pytest.mark.postgres
@pytest.mark.prefect
@pytest.mark.slow
def test_run_with_sim_clock_decides_at_the_simulators_time(
    trader: Invoke, prefect_api: ServerInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`trader run --sim-clock` takes the market's now from the simulator's control port (paper-trading through
    history): at 2017-12-29 15:55 New York the daily strategy runs and orders on that day, where the wall clock
    would give a different day (or a closed market)."""
    import asyncio

    url = database_url(trader)
    created = trader("strategies", "create", "--file", str(REPO / "examples" / "strategies" / "spy-sma-cross.yaml"))
    assert created.exit_code == 0, created.output
    refused = trader("run", "spy-sma-cross", "--sim-clock")  # nothing serves the control port yet
    assert refused.exit_code == 1 and "--sim-clock: no simulator is listening" in refused.output, refused.output
    with SimServer.in_thread(SimConfig(data_dir=REPO / "data" / "samples")) as sim:
        sim.clock.set(LAST_DAILY_CLOSE - dt.timedelta(minutes=5))
        loop = sim._loop
        assert loop is not None
        control_port = asyncio.run_coroutine_threadsafe(sim.serve_control(), loop).result(10)
        monkeypatch.setenv("TRADER_IB__PORT", str(sim.port))
        monkeypatch.setenv("TRADER_SIM__CONTROL_PORT", str(control_port))
        common.settings.cache_clear()
        result = trader("run", "spy-sma-cross", "--sim-clock")
        assert result.exit_code == 0, result.output
    match = re.search(r"^  flow run: (\S+)$", result.output, re.M)
    assert match, result.output
    with session_scope(url) as session:
        signal = session.scalars(select(Signal).where(Signal.flow_run_id == match.group(1))).one()
        # the wall clock (2026, the sample data ends in 2017) would skip the run or decide on another bar
        assert signal.bar_time == dt.datetime(2017, 12, 28, tzinfo=dt.UTC)


@pytest.mark.postgres
@pytest.mark.prefect
@pytest.mark.slow
def test_demo_runs_every_example_and_prints_signals_charts_and_prompts(
    trader: Invoke, prefect_api: ServerInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PREFECT_API_URL", prefect_api.api_url)  # else the demo starts its own server
    result = trader("demo")
    assert result.exit_code == 0, result.output
    assert f"Prefect UI: {prefect_api.ui_url}" in result.output
    signals = re.findall(r"^(spy-sma-cross|aapl-rsi-reversion): (BUY|SELL|HOLD|ABSTAIN)$", result.output, re.M)
    assert sorted(name for name, _ in signals) == ["aapl-rsi-reversion", "spy-sma-cross"], result.output
    with session_scope(common.settings().database_url()) as session:
        stored = {(s.strategy_name, s.action.value) for s in session.scalars(select(Signal))}
    assert set(signals) == stored
    charts = re.findall(r"^  chart:  (\S+)  \(interactive: (\S+)\)$", result.output, re.M)
    prompts = re.findall(r"^  prompt: (\S+)$", result.output, re.M)
    assert len(charts) == 2 and len(prompts) == 2, result.output
    for png, html in charts:
        assert Path(png).is_file() and Path(html).is_file()
    for prompt in prompts:
        assert Path(prompt).is_file()
    runs = re.findall(rf"^  run:    {re.escape(prefect_api.ui_url)}/runs/flow-run/(\S+)$", result.output, re.M)
    assert len(runs) == 2
