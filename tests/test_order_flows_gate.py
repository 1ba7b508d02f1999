"""The order flows' gate and reconciliation as the order gate's input (issue 12), with the real flows on a Prefect
server and the real ib_async client against the TWS simulator.

* order-monitor, order-retry, order-cleanup and reconcile end Completed "Skipped" in IB's reset window without
  touching the broker; with the broker down, they skip too and reconcile leaves its flag as it was;
* order-monitor publishes ``broker-connectivity``;
* reconcile driven to a real failure (a position at the broker the DB does not know: an order placed at the
  simulator by another client) refuses the next order with the reconciliation reason; a clean run unblocks.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from prefect import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

from flows.orders import CONNECTIVITY_KEY, order_cleanup, order_monitor, order_retry, reconcile_flow
from models.enums import AnalystKind, BadRowPolicy, BarSize, OrderSide, OrderStatus, OrderType, SignalAction
from services.bars.validation import ValidationResult
from services.broker.ib_adapter import IBBroker
from services.broker.loop_owner import SyncBroker
from services.broker.types import ContractSpec, OrderRequest
from services.db import session_scope
from services.errors import BrokerConnectionError
from services.orders.context import reconciliation_problem, set_reconciliation
from services.repositories import signals
from services.runtime import Runtime, use_runtime
from services.settings import IBSettings, Settings, load_settings
from services.signals import Signal
from services.strategies import load_strategy_file
from simulator import SimConfig, SimServer
from tasks.market_data import MarketData
from tasks.market_gate import SKIP_DISCONNECTED, SKIP_RESET, order_flow_gate
from tasks.orders import order_for_signal
from tasks.signal import StoredSignal
from tests.orders_support import store_strategy

REPO = Path(__file__).resolve().parents[1]
RESET = dt.datetime(2024, 6, 4, 3, 50, tzinfo=dt.UTC)  # 23:50 New York
NOW = dt.datetime(2024, 6, 3, 15, 0, tzinfo=dt.UTC)  # Monday 11:00 New York
SIM_START = dt.datetime(2012, 6, 27, 14, 0, tzinfo=dt.UTC)  # inside the simulator's 5-minute SPY series


def test_order_flow_gate_rules() -> None:
    connected: Callable[[], str] = lambda: "connected"  # noqa: E731

    def down() -> str:
        raise BrokerConnectionError("cannot connect to 127.0.0.1:4002")

    assert order_flow_gate(RESET, connected) == SKIP_RESET
    assert order_flow_gate(RESET, None) == SKIP_RESET
    assert order_flow_gate(dt.datetime(2024, 6, 4, 4, 44, tzinfo=dt.UTC), None) == SKIP_RESET  # 00:44 New York
    assert order_flow_gate(dt.datetime(2024, 6, 4, 4, 45, tzinfo=dt.UTC), connected) is None  # 00:45: over
    assert order_flow_gate(NOW, connected) is None
    assert order_flow_gate(NOW, None) is None
    assert order_flow_gate(NOW, lambda: "lost") == f"{SKIP_DISCONNECTED} (lost)"
    assert order_flow_gate(NOW, down) == f"{SKIP_DISCONNECTED}: cannot connect to 127.0.0.1:4002"


class _NoBroker:
    calls = 0

    def __call__(self) -> object:
        type(self).calls += 1
        raise AssertionError("the reset window must stop the run before any broker use")


def _settings(db_url: str, tmp_path: Path) -> Settings:
    return load_settings({}, data_dir=tmp_path, database={"url": db_url}, trading={"dry_run": True})


@pytest.mark.prefect
@pytest.mark.postgres
@pytest.mark.slow
def test_order_flows_skip_the_reset_window_without_the_broker(prefect_api: object, db_url: str, tmp_path: Path) -> None:
    runtime = Runtime(_settings(db_url, tmp_path), broker_factory=_NoBroker(), clock=lambda: RESET)  # type: ignore[arg-type]
    with use_runtime(runtime):
        states = [f(return_state=True) for f in (order_monitor, order_retry, order_cleanup, reconcile_flow)]
    for state in states:
        assert state.is_completed() and state.name == "Skipped", state
        assert state.message == SKIP_RESET
    assert _NoBroker.calls == 0


@pytest.mark.prefect
@pytest.mark.postgres
@pytest.mark.slow
def test_a_down_broker_skips_and_reconcile_keeps_its_flag(prefect_api: object, db_url: str, tmp_path: Path) -> None:
    with session_scope(db_url) as s:
        set_reconciliation(s, "SPY: quantity 0 vs broker 3", now=NOW)
    closed = IBSettings(port=1, connect_timeout_s=1)  # nothing listens on port 1
    runtime = Runtime(
        _settings(db_url, tmp_path), broker_factory=lambda: IBBroker.from_settings(closed), clock=lambda: NOW
    )
    with use_runtime(runtime):
        monitor = order_monitor(return_state=True)
        reconciled = reconcile_flow(return_state=True)
    for state in (monitor, reconciled):
        assert state.is_completed() and state.name == "Skipped", state
        assert state.message is not None and state.message.startswith(f"{SKIP_DISCONNECTED}: cannot connect")
    with session_scope(db_url) as s:
        assert reconciliation_problem(s) == "SPY: quantity 0 vs broker 3"  # a skipped run proves nothing
    artifact = _artifact(monitor.state_details.flow_run_id, CONNECTIVITY_KEY)
    assert "no session" in artifact and SKIP_DISCONNECTED in artifact


def _artifact(flow_run_id: Any, key: str) -> str:
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    [artifact] = [a for a in found if a.key == key]
    assert isinstance(artifact.data, str)
    return artifact.data


@pytest.fixture
def sim() -> Iterator[SimServer]:
    with SimServer.in_thread(SimConfig(port=0, now=SIM_START)) as server:
        yield server


def _market_data() -> MarketData:
    start = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)
    closes = [100.0 + i for i in range(30)]
    frame = pd.DataFrame(
        {
            "timestamp": pd.DatetimeIndex([start + dt.timedelta(days=i) for i in range(30)]),
            "open": closes,
            "high": [c + 2 for c in closes],
            "low": [c - 2 for c in closes],
            "close": closes,
            "volume": [1e6] * 30,
        }
    )
    validation = ValidationResult(frame, [], BadRowPolicy.FLAG, BarSize.DAY_1, len(frame), 0, 0, 0, 0.0, 0.0)
    return MarketData(frame=frame, validation=validation)


def _buy_signal(db_url: str, day: int) -> StoredSignal:
    bar_time = dt.datetime(2024, 5, 1, tzinfo=dt.UTC) + dt.timedelta(days=day)
    with session_scope(db_url) as s:
        row = signals.record(
            s, strategy_name="spy-sma-cross", symbol="SPY", bar_time=bar_time, action=SignalAction.BUY,
            analyst=AnalystKind.OFFLINE, reason="test",
        )  # fmt: skip
        signal = Signal(SignalAction.BUY, "test", AnalystKind.OFFLINE, bar_time, 0.7, D("129"), D("125"), None)
        return StoredSignal(row.id, signal)


def filled(broker: SyncBroker, order_ref: str, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while (found := broker.find_order(order_ref)) is None or found.status is not OrderStatus.FILLED:
        if time.monotonic() > deadline:
            raise AssertionError(f"{order_ref} not filled within {timeout_s}s: {found}")
        time.sleep(0.02)


@pytest.mark.prefect
@pytest.mark.postgres
@pytest.mark.slow
def test_a_failed_reconcile_refuses_the_next_order_until_a_clean_run(
    prefect_api: object, db_url: str, tmp_path: Path, sim: SimServer
) -> None:
    base = load_strategy_file(REPO / "examples/strategies/spy-sma-cross.yaml")
    # the test's signals are days old at NOW: valid for 7 bars; the send-time gate reads the stored strategy
    definition = base.model_copy(update={"risk": base.risk.model_copy(update={"order_expiry_bars": 7})})
    store_strategy(db_url, definition)
    ours = IBSettings(port=sim.port, client_id=17, connect_timeout_s=5, request_timeout_s=5)
    runtime = Runtime(
        _settings(db_url, tmp_path), broker_factory=lambda: IBBroker.from_settings(ours), clock=lambda: NOW
    )
    outsider = SyncBroker(lambda: IBBroker.from_settings(ours.model_copy(update={"client_id": 99})))
    outsider.connect()
    try:
        with use_runtime(runtime):
            broker = runtime.broker()
            spy = broker.qualify(ContractSpec("SPY"))

            def order(day: int) -> Any:
                return order_for_signal(
                    definition, spy, _market_data(), _buy_signal(db_url, day),
                    broker=broker, dry_run=True, now=NOW,
                )  # fmt: skip

            assert reconcile_flow(return_state=True).result().ok  # clean to start with
            # another client buys 3 SPY at the broker: a position our DB does not know
            bought = outsider.place_order(spy, OrderRequest("outsider-1", OrderSide.BUY, D(3), OrderType.MARKET))
            assert bought.perm_id
            filled(outsider, "outsider-1")
            failed = reconcile_flow(return_state=True)
            assert failed.is_completed() and failed.name == "Completed"  # the run ran; its report failed
            report = failed.result()
            assert not report.ok and report.differences == ["SPY: quantity 0 vs broker 3"]
            refused = order(27)
            assert refused.status is OrderStatus.RISK_REJECTED and not refused.sent
            assert any(r.startswith("reconciliation") and "SPY: quantity 0 vs broker 3" in r for r in refused.reasons)
            # the outsider flattens the position: the next run is clean and orders pass the gate again
            sold = outsider.place_order(spy, OrderRequest("outsider-2", OrderSide.SELL, D(3), OrderType.MARKET))
            assert sold.perm_id
            filled(outsider, "outsider-2")
            assert reconcile_flow(return_state=True).result().ok
            with session_scope(db_url) as s:
                assert reconciliation_problem(s) is None
            passed = order(28)
            assert passed.status is not OrderStatus.RISK_REJECTED, passed.reasons
            assert not any(r.startswith("reconciliation") for r in passed.reasons), passed.reasons
    finally:
        outsider.close()
        runtime.close()
