"""``trader orders cancel``, ``trader pnl``, ``trader halt --cancel-all`` against a MemoryBroker-backed runtime."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from decimal import Decimal as D
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from cli import common
from cli.main import app
from models.enums import OrderSide, OrderStatus, OrderType
from services.broker.loop_owner import SyncBroker
from services.broker.memory import MemoryBroker
from services.broker.types import OrderRequest
from services.db import session_scope
from services.errors import BrokerConnectionError
from services.orders.monitor import record_executions
from services.orders.submit import OrderIntent, submit_order
from services.repositories import fills as fills_repo
from services.repositories import orders as orders_repo
from services.repositories import trading_state
from services.runtime import Runtime, use_runtime
from services.settings import load_settings
from tests.orders_support import BAR0, SPY, bars, send_ctx, store_strategy, strategy

NOW = BAR0 + dt.timedelta(minutes=50)


@pytest.fixture(autouse=True)
def _owner(db_url: str) -> None:
    store_strategy(db_url, strategy(allow_short=True))  # fills are recorded after the orders here


Invoke = Callable[..., Result]


class DownBroker(MemoryBroker):
    """A broker whose connection is refused (a fake, like TWS not running)."""

    async def connect(self) -> None:
        raise BrokerConnectionError("connection refused (test)")


@pytest.fixture
def mb() -> MemoryBroker:
    broker = MemoryBroker([SPY], {"SPY": bars()})
    broker.clock.set(NOW)
    return broker


def make_trader(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, broker: MemoryBroker) -> Iterator[Invoke]:
    monkeypatch.setenv("TRADER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TRADER_DATABASE__URL", db_url)
    common.settings.cache_clear()
    runner = CliRunner()
    with use_runtime(Runtime(load_settings(), broker_factory=lambda: broker, clock=lambda: NOW)):
        yield lambda *args: runner.invoke(app, list(args))
    common.settings.cache_clear()


@pytest.fixture
def trader(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mb: MemoryBroker) -> Iterator[Invoke]:
    yield from make_trader(db_url, tmp_path, monkeypatch, mb)


@pytest.fixture
def sync(mb: MemoryBroker) -> Iterator[SyncBroker]:
    broker = SyncBroker(lambda: mb)
    broker.connect()
    yield broker
    broker.close()


def place(db_url: str, broker: SyncBroker, minute: int, *, limit: str | None = "50.00", dry_run: bool = False,
          side: OrderSide = OrderSide.BUY, qty: int = 10) -> int:  # fmt: skip
    intent = OrderIntent("spy-test", "SPY", side, D(qty), BAR0 + dt.timedelta(minutes=minute),
                         order_type=OrderType.LIMIT if limit else OrderType.MARKET,
                         limit_price=D(limit) if limit else None, conid=SPY.conid,
                         expires_at=NOW + dt.timedelta(hours=6), reference_price=D("101"))  # fmt: skip
    result = submit_order(db_url, broker, SPY, intent, send_ctx(NOW, dry_run=dry_run))
    return result.order_id


def status(db_url: str, order_id: int) -> OrderStatus:
    with session_scope(db_url) as s:
        row = orders_repo.get(s, order_id)
        assert row is not None
        return row.status


def test_cancel_goes_through_the_broker(db_url: str, trader: Invoke, sync: SyncBroker) -> None:
    working = place(db_url, sync, 40)
    filled = place(db_url, sync, 45, limit=None)
    assert status(db_url, working) is OrderStatus.SUBMITTED and status(db_url, filled) is OrderStatus.FILLED
    result = trader("orders", "cancel", str(working))
    assert result.exit_code == 0, result.output
    assert "cancelled" in result.output
    assert status(db_url, working) is OrderStatus.CANCELLED
    sync.connect()  # the CLI closed the runtime's session on the same in-memory broker
    assert sync.open_orders() == []
    assert {o.order_ref: o.status for o in sync.completed_orders()}[f"spy-test:SPY:{BAR0:%Y%m%dT}1410:BUY"] is (
        OrderStatus.CANCELLED
    )
    again = trader("orders", "cancel", str(working))
    assert again.exit_code == 2 and "cancelled: already final" in again.output
    assert "Traceback" not in again.output
    done = trader("orders", "cancel", str(filled))
    assert done.exit_code == 2 and "filled: already final" in done.output
    missing = trader("orders", "cancel", "9999")
    assert missing.exit_code == 2 and "no such order" in missing.output


def test_cancel_with_the_broker_down_exits_1_and_changes_nothing(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sync: SyncBroker
) -> None:
    working = place(db_url, sync, 40)
    down = DownBroker([SPY], {"SPY": bars()})
    for trader in make_trader(db_url, tmp_path, monkeypatch, down):
        result = trader("orders", "cancel", str(working))
        assert result.exit_code == 1, result.output
        assert "connection refused" in result.output and "Traceback" not in result.output
    assert status(db_url, working) is OrderStatus.SUBMITTED
    assert len(sync.open_orders()) == 1


def test_pnl_realized_unrealized_commissions(db_url: str, trader: Invoke, sync: SyncBroker) -> None:
    place(db_url, sync, 40, limit=None, qty=10)
    place(db_url, sync, 45, limit=None, qty=4, side=OrderSide.SELL)
    assert record_executions(db_url, sync.executions()) == 2
    with session_scope(db_url) as s:
        buy, sell = fills_repo.effective(s)
    assert buy.commission is not None and sell.commission is not None
    avg = (buy.quantity * buy.price + buy.commission) / buy.quantity
    realized = (sell.price - avg) * sell.quantity - sell.commission
    unrealized = (D("120") - avg) * 6
    result = trader("pnl", "--mark", "SPY=120")
    assert result.exit_code == 0, result.output
    [spy] = [line for line in result.output.splitlines() if "SPY" in line]
    [total] = [line for line in result.output.splitlines() if "TOTAL" in line]
    cells = [c.strip() for c in spy.split("│") if c.strip()]
    assert cells[1] == "6" and cells[3] == "120"
    assert cells[4:] == [f"{realized:.2f}", f"{unrealized:.2f}", f"{buy.commission + sell.commission:.2f}"]
    assert [c.strip() for c in total.split("│") if c.strip()][1:] == cells[4:]
    # marks from the broker's snapshot when none is given
    from_broker = trader("pnl")
    assert from_broker.exit_code == 0 and "n/a" not in from_broker.output, from_broker.output
    # --day: today's fills only (the fills here are executed in 2024, "today" is the runtime clock's day)
    day = trader("pnl", "--day", "--mark", "SPY=120")
    assert day.exit_code == 0, day.output
    bad = trader("pnl", "--mark", "SPY=abc", "--mark", "=3")
    assert bad.exit_code == 2 and "2 problems" in bad.output and "Traceback" not in bad.output


def test_pnl_day_counts_only_todays_fills(db_url: str, trader: Invoke, sync: SyncBroker) -> None:
    place(db_url, sync, 40, limit=None, qty=10)
    place(db_url, sync, 45, limit=None, qty=10, side=OrderSide.SELL)
    assert record_executions(db_url, sync.executions()) == 2
    with session_scope(db_url) as s:
        for fill in fills_repo.effective(s)[:1]:
            fill.executed_at = fill.executed_at - dt.timedelta(days=3)  # the buy was days ago
    whole = trader("pnl", "--offline")
    day = trader("pnl", "--day", "--offline")
    assert whole.exit_code == 0 and day.exit_code == 0, whole.output + day.output

    def commissions(output: str) -> str:
        [total] = [line for line in output.splitlines() if "TOTAL" in line]
        return [c.strip() for c in total.split("│") if c.strip()][-1]

    with session_scope(db_url) as s:
        buy, sell = fills_repo.effective(s)
    assert commissions(whole.output) == f"{buy.commission + sell.commission:.2f}"  # type: ignore[operator]
    assert commissions(day.output) == f"{sell.commission:.2f}"


def test_halt_cancel_all(db_url: str, trader: Invoke, sync: SyncBroker) -> None:
    real = place(db_url, sync, 40)
    dry = place(db_url, sync, 35, dry_run=True)  # tagged dry run: cancelled in the DB only
    sync.place_order(SPY, OrderRequest("manual-tws-order", OrderSide.BUY, D(1), OrderType.LIMIT, limit_price=D(50)))
    result = trader("halt", "--reason", "test stop", "--cancel-all")
    assert result.exit_code == 0, result.output
    assert "kill switch ENGAGED" in result.output and "manual-tws-order" in result.output
    assert status(db_url, real) is OrderStatus.CANCELLED and status(db_url, dry) is OrderStatus.CANCELLED
    sync.connect()
    assert sync.open_orders() == []
    with session_scope(db_url) as s:
        kill = trading_state.get_kill_switch(s)
        assert kill.engaged and kill.reason == "test stop"


def test_halt_cancel_all_with_the_broker_down_still_engages(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sync: SyncBroker
) -> None:
    real = place(db_url, sync, 40)
    down = DownBroker([SPY], {"SPY": bars()})
    for trader in make_trader(db_url, tmp_path, monkeypatch, down):
        result = trader("halt", "--reason", "broker gone", "--cancel-all")
        assert result.exit_code == 1, result.output
        assert "connection refused" in result.output and "1 still working" in result.output
    with session_scope(db_url) as s:
        assert trading_state.get_kill_switch(s).engaged
    assert status(db_url, real) is OrderStatus.SUBMITTED
