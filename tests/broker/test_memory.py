"""MemoryBroker and fill-rule specifics (the shared behaviour is in test_contract.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pandas as pd
import pytest

from models.enums import BarSize, OrderSide, OrderStatus, OrderType, SecType, TimeInForce
from services.broker.memory import MemoryBroker
from services.broker.types import BarRequest, Connectivity, ContractInfo, ContractSpec, OrderRequest
from services.errors import BrokerConnectionError, OrderRejectedError
from services.market import Bar, bar_price, ib_fixed_commission, immediate_price, participation_budget


def _daily(rows: list[tuple[str, float, float, float, float, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "timestamp": pd.to_datetime([r[0] for r in rows], utc=True),
            "open": [r[1] for r in rows],
            "high": [r[2] for r in rows],
            "low": [r[3] for r in rows],
            "close": [r[4] for r in rows],
            "volume": [r[5] for r in rows],
        }
    )


BARS = _daily(
    [
        ("2024-01-02", 100.0, 101.0, 99.0, 100.5, 1_000_000),
        ("2024-01-03", 100.5, 102.0, 100.0, 101.5, 1_000_000),
        ("2024-01-04", 101.0, 101.2, 97.0, 98.0, 1_000_000),
        ("2024-01-05", 98.5, 104.0, 97.0, 103.0, 2_000),
        ("2024-01-08", 103.0, 103.5, 102.0, 103.2, 1_000_000),
    ]
)
CLOSE_0102 = datetime(2024, 1, 2, 21, 0, tzinfo=UTC)  # 16:00 New York: the 01-02 bar is complete


@pytest.fixture
async def broker() -> MemoryBroker:
    b = MemoryBroker(bars={"XYZ": BARS}, start=CLOSE_0102)
    await b.connect()
    return b


async def _xyz(b: MemoryBroker) -> ContractInfo:
    return await b.qualify(ContractSpec("XYZ"))


def test_commission_minimum_per_share_and_cap() -> None:
    assert ib_fixed_commission(Decimal(100), Decimal(10_000)) == Decimal("1.00")
    assert ib_fixed_commission(Decimal(1000), Decimal(100_000)) == Decimal("5.000")
    # 1% of a tiny trade value caps the fee below the minimum
    assert ib_fixed_commission(Decimal(10), Decimal("5.00")) == Decimal("0.0500")
    assert ib_fixed_commission(Decimal(0), Decimal(0)) == Decimal(0)


def test_fill_rules() -> None:
    bar = Bar(CLOSE_0102, CLOSE_0102, Decimal(100), Decimal(102), Decimal(97), Decimal(101), Decimal(10))
    lmt = {"limit": Decimal("98.00"), "stop": None, "triggered": False}
    assert bar_price(OrderType.MARKET, OrderSide.BUY, bar, limit=None, stop=None, triggered=False)[0] == 100
    assert bar_price(OrderType.LIMIT, OrderSide.BUY, bar, **lmt)[0] == Decimal("98.00")  # type: ignore[arg-type]
    gap = {"limit": Decimal("105.00"), "stop": None, "triggered": False}
    assert bar_price(OrderType.LIMIT, OrderSide.BUY, bar, **gap)[0] == 100  # type: ignore[arg-type]
    assert bar_price(OrderType.LIMIT, OrderSide.SELL, bar, **gap)[0] is None  # type: ignore[arg-type]
    price, trig = bar_price(OrderType.STOP, OrderSide.BUY, bar, limit=None, stop=Decimal("101.5"), triggered=False)
    assert (price, trig) == (Decimal("101.5"), True)
    price, trig = immediate_price(
        OrderType.STOP, OrderSide.SELL, Decimal(101), limit=None, stop=Decimal(99), triggered=False
    )
    assert (price, trig) == (None, False)
    assert participation_budget(Decimal(2_000), Decimal("0.1")) == 200
    assert participation_budget(Decimal(2_000), None) is None


async def test_stop_order_triggers_on_a_later_bar(broker: MemoryBroker) -> None:
    xyz = await _xyz(broker)
    req = OrderRequest(
        "stp", OrderSide.SELL, Decimal(10), OrderType.STOP, stop_price=Decimal("99.00"), tif=TimeInForce.GTC
    )
    placed = await broker.place_order(xyz, req)
    assert placed.status is OrderStatus.SUBMITTED
    broker.clock.advance()  # 01-03: low 100.00, not through 99
    assert (await broker.find_order("stp")).filled == 0  # type: ignore[union-attr]
    broker.clock.advance()  # 01-04 opens 101.00, trades down to 97: fills at the stop
    order = await broker.find_order("stp")
    assert order is not None and order.status is OrderStatus.FILLED
    assert order.avg_fill_price == Decimal("99.00")


async def test_participation_splits_a_fill_across_bars() -> None:
    b = MemoryBroker(bars={"XYZ": BARS}, start=datetime(2024, 1, 4, 21, tzinfo=UTC), participation=Decimal("0.1"))
    await b.connect()
    xyz = await _xyz(b)
    # 01-04 closed at 98.00: a 97.50 limit rests
    req = OrderRequest("big", OrderSide.BUY, Decimal(300), OrderType.LIMIT, limit_price=Decimal("97.50"))
    assert (await b.place_order(xyz, req)).filled == 0
    b.clock.advance()  # 01-05: trades down to 97, volume 2,000 -> at most 200 shares, at the limit
    o = await b.find_order("big")
    assert o is not None and o.status is OrderStatus.PARTIALLY_FILLED and o.filled == 200
    assert o.avg_fill_price == Decimal("97.50")
    b.clock.advance()  # 01-08 is a later session: the DAY order placed for 01-05 expires with 200 filled
    o = await b.find_order("big")
    assert o is not None and o.filled == 200 and o.status is OrderStatus.CANCELLED


async def test_day_order_expires_at_the_next_session(broker: MemoryBroker) -> None:
    xyz = await _xyz(broker)
    await broker.place_order(
        xyz, OrderRequest("day", OrderSide.BUY, Decimal(1), OrderType.LIMIT, limit_price=Decimal(50))
    )
    # placed at 16:00 New York on 01-02, so it is an order for the 01-03 session
    broker.clock.advance()
    o = await broker.find_order("day")
    assert o is not None and o.status is OrderStatus.SUBMITTED
    broker.clock.advance()  # the 01-04 bar belongs to a later session
    o = await broker.find_order("day")
    assert o is not None and o.status is OrderStatus.CANCELLED


async def test_round_trip_books_cash_position_and_realized_pnl(broker: MemoryBroker) -> None:
    xyz = await _xyz(broker)
    await broker.place_order(xyz, OrderRequest("buy", OrderSide.BUY, Decimal(100)))
    broker.clock.advance()
    await broker.place_order(xyz, OrderRequest("sell", OrderSide.SELL, Decimal(100)))
    buy, sell = await broker.executions()
    assert (buy.price, sell.price) == (Decimal("100.50"), Decimal("101.50"))
    assert sell.realized_pnl == (Decimal("101.50") - (Decimal("10050") + 1) / 100) * 100 - 1
    assert await broker.positions() == []
    values = await broker.account_values()
    assert values.total_cash == Decimal(1_000_000) + 100 - 2


async def test_connectivity_gates_orders_and_state_survives(broker: MemoryBroker) -> None:
    xyz = await _xyz(broker)
    broker.set_link_lost()
    assert broker.connectivity is Connectivity.LOST
    with pytest.raises(BrokerConnectionError):
        await broker.place_order(xyz, OrderRequest("x", OrderSide.BUY, Decimal(1)))
    broker.set_link_lost(False)
    await broker.place_order(xyz, OrderRequest("y", OrderSide.BUY, Decimal(1)))
    await broker.close()
    with pytest.raises(BrokerConnectionError):
        await broker.open_orders()
    await broker.connect()
    assert [e.order_ref for e in await broker.executions()] == ["y"]
    assert await broker.find_order("x") is None


async def test_invalid_orders_are_rejected_with_ib_codes(broker: MemoryBroker) -> None:
    xyz = await _xyz(broker)
    with pytest.raises(OrderRejectedError) as err:
        await broker.place_order(
            xyz, OrderRequest("tick", OrderSide.BUY, Decimal(1), OrderType.LIMIT, limit_price=Decimal("100.005"))
        )
    assert err.value.code == 110
    with pytest.raises(OrderRejectedError) as err:
        await broker.cancel_order("nope")
    assert err.value.code == 10147


async def test_history_resamples_and_windows(broker: MemoryBroker) -> None:
    broker.clock.set(datetime(2024, 1, 9, tzinfo=UTC))
    xyz = await _xyz(broker)
    daily = await broker.historical_bars(xyz, BarRequest(BarSize.DAY_1, "3 D"))
    assert list(daily["timestamp"].dt.day) == [8]  # 3 calendar days back from 01-09 00:00 UTC
    weekly = await broker.historical_bars(xyz, BarRequest(BarSize.WEEK_1, "1 M"))
    assert len(weekly) == 2
    assert weekly.iloc[0]["high"] == 104.0 and weekly.iloc[0]["volume"] == 3_002_000


def test_contract_info_json_round_trip() -> None:
    info = ContractInfo(
        conid=1, symbol="X", sec_type=SecType.STK, exchange="SMART", primary_exchange="NYSE", currency="USD",
        min_tick=Decimal("0.01"), size_increment=Decimal("1"), long_name="X Corp",
    )  # fmt: skip
    data = info.to_json()
    assert data["min_tick"] == "0.01" and data["sec_type"] == "STK"
    assert ContractInfo.from_json({**data, "obsolete_field": 1}) == info


def test_package_surface_is_pinned_and_free_of_ib_async() -> None:
    import subprocess
    import sys

    import services.broker as pkg

    assert sorted(pkg.__all__) == [
        "AccountValues", "BarRequest", "BrokerOrder", "BrokerPort", "BrokerPosition", "Connectivity", "ContractInfo",
        "ContractSpec", "Execution", "LoopOwner", "MemoryBroker", "OrderRequest", "Quote", "SyncBroker",
    ]  # fmt: skip
    code = "import sys, services.broker; print('ib_async' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_only_the_adapter_imports_ib_async() -> None:
    import re
    from pathlib import Path

    import services.broker as pkg

    importers = {
        p.name
        for p in Path(pkg.__file__).parent.glob("*.py")
        if re.search(r"^\s*(import ib_async|from ib_async)", p.read_text(), re.MULTILINE)
    }
    assert importers == {"ib_adapter.py"}
