"""Orders through the real ib_async client: fills, partial fills, stops, cancels, rejects, reconnect state."""

from __future__ import annotations

from decimal import Decimal

import pandas as pd
import pytest
from ib_async import IB, Index, LimitOrder, MarketOrder, Stock, StopOrder, Trade

from services.bars.loader import load_bars
from simulator import ManualTime, SimConfig, SimOrderStatus, SimServer
from simulator.config import default_data_dir
from tests.simulator.helpers import Connect, eventually

DATA = default_data_dir()
SPY_DAILY_LAST_CLOSE = Decimal("266.86")  # 2017-12-29 close 266.859985, on the 0.01 tick


async def _spy(ib: IB) -> Stock:
    spy = Stock("SPY", "SMART", "USD")
    await ib.qualifyContractsAsync(spy)
    return spy


def _errors(ib: IB) -> list[tuple[int, int, str]]:
    seen: list[tuple[int, int, str]] = []
    ib.errorEvent += lambda req_id, code, msg, _c: seen.append((req_id, code, msg))
    return seen


async def test_market_order_fills_with_execution_and_commission(sim: SimServer, connect: Connect) -> None:
    ib = await connect(client_id=11)
    spy = await _spy(ib)
    trade = ib.placeOrder(spy, MarketOrder("BUY", 300, orderRef="mkt-300"))
    await eventually(lambda: trade.isDone() and bool(trade.fills) and trade.fills[-1].commissionReport.commission > 0)
    assert trade.orderStatus.status == "Filled"
    assert trade.orderStatus.avgFillPrice == float(SPY_DAILY_LAST_CLOSE)
    [fill] = trade.fills
    assert fill.execution.orderRef == "mkt-300" and fill.execution.side == "BOT" and fill.execution.shares == 300
    assert fill.execution.permId == trade.orderStatus.permId > 0
    assert fill.commissionReport.commission == 1.50  # 300 x 0.005
    assert fill.commissionReport.execId == fill.execution.execId
    cost = 300 * SPY_DAILY_LAST_CLOSE + Decimal("1.50")
    assert sim.state.cash["DU1234567"] == Decimal(1_000_000) - cost
    [order] = sim.state.orders_by_ref("mkt-300")
    assert order.status is SimOrderStatus.FILLED and order.filled == 300
    await eventually(lambda: any(p.position == 300 for p in ib.positions()))
    assert ib.positions()[0].avgCost == pytest.approx(float(cost / 300))

    sell = ib.placeOrder(spy, MarketOrder("SELL", 100, orderRef="mkt-sell"))
    await eventually(lambda: bool(sell.fills) and sell.fills[-1].commissionReport.commission > 0)
    realized = sell.fills[0].commissionReport.realizedPNL
    assert realized == pytest.approx(float((SPY_DAILY_LAST_CLOSE - cost / 300) * 100 - 1))
    summary = {v.tag: v.value for v in await ib.accountSummaryAsync()}
    cash = sim.state.cash["DU1234567"]
    assert Decimal(summary["TotalCashValue"]) == cash.quantize(Decimal("0.01"))
    assert Decimal(summary["NetLiquidation"]) == (cash + 200 * SPY_DAILY_LAST_CLOSE).quantize(Decimal("0.01"))


async def test_commission_minimum_and_one_percent_cap(sim: SimServer, connect: Connect) -> None:
    ib = await connect(client_id=12)
    spy = await _spy(ib)
    small = ib.placeOrder(spy, MarketOrder("BUY", 10))
    await eventually(lambda: bool(small.fills) and small.fills[0].commissionReport.commission > 0)
    assert small.fills[0].commissionReport.commission == 1.00  # 10 x 0.005 = 0.05 -> minimum USD 1
    sim.clock.set("2009-03-10T00:00:00Z")  # SPY closed at 68.80 on 2009-03-09
    close = load_bars(DATA / "yahoofinance-SPY-20080101-20180101.csv").frame.set_index("timestamp")["close"]
    price = Decimal(repr(float(close[pd.Timestamp("2009-03-09", tz="UTC")]))).quantize(Decimal("0.01"))
    one = ib.placeOrder(spy, MarketOrder("BUY", 1))
    await eventually(lambda: bool(one.fills) and one.fills[0].commissionReport.commission > 0)
    assert one.fills[0].execution.price == float(price)
    assert one.fills[0].commissionReport.commission == float(price / 100)  # 1% of value < USD 1 minimum


@pytest.fixture
def sim_config(pacing_time: ManualTime) -> SimConfig:
    return SimConfig(data_dir=DATA, pacing_time=pacing_time, partial_fill_participation=0.1)


async def test_limit_rests_then_partially_fills_then_cancels(sim: SimServer, connect: Connect, ib_log) -> None:
    ib_log.allow(r"Error 202, reqId \d+: Order Canceled - reason:")
    ib = await connect(client_id=13)
    errors = _errors(ib)
    spy = await _spy(ib)
    sim.clock.set("2012-06-27T15:00:00Z")  # 11:00 New York; last complete bar closed at 133.00
    trade = ib.placeOrder(spy, LimitOrder("BUY", 2000, 132.80, orderRef="lmt-partial"))
    await eventually(lambda: trade.orderStatus.status == "Submitted")
    sim.clock.advance(1, symbol="SPY")  # 15:00 bar: low 132.97, no fill
    sim.clock.advance(2, symbol="SPY")  # 15:10 bar: low 132.78 crosses; 10% of 17,215 = 1,721 shares
    await eventually(lambda: trade.orderStatus.filled > 0)
    assert trade.orderStatus.status == "Submitted"
    assert (trade.orderStatus.filled, trade.orderStatus.remaining) == (1721, 279)
    assert trade.fills[0].execution.price == 132.80
    ib.cancelOrder(trade.order)
    await eventually(lambda: trade.orderStatus.status == "Cancelled" and any(e[1] == 202 for e in errors))
    [order] = sim.state.orders_by_ref("lmt-partial")
    assert order.status is SimOrderStatus.CANCELLED and order.filled == 1721
    completed = await ib.reqCompletedOrdersAsync(False)
    assert [t.order.orderRef for t in completed] == ["lmt-partial"]
    assert completed[0].order.filledQuantity == 1721


async def test_marketable_limit_fills_at_once_and_stops_trigger_on_advance(sim: SimServer, connect: Connect) -> None:
    ib = await connect(client_id=14)
    spy = await _spy(ib)
    sim.clock.set("2012-06-27T15:00:00Z")
    marketable = ib.placeOrder(spy, LimitOrder("BUY", 100, 133.50))
    await eventually(lambda: marketable.orderStatus.status == "Filled")
    assert marketable.orderStatus.avgFillPrice == 133.00  # the current close, better than the limit
    stop = ib.placeOrder(spy, StopOrder("SELL", 100, 132.85, orderRef="stop-1"))
    await eventually(lambda: stop.orderStatus.status == "PreSubmitted")
    sim.clock.advance(3, symbol="SPY")  # the 15:10 bar trades down to 132.78 through the stop
    await eventually(lambda: stop.orderStatus.status == "Filled")
    assert stop.orderStatus.avgFillPrice == 132.85


async def test_day_orders_expire_and_gtc_orders_stay(sim: SimServer, connect: Connect) -> None:
    ib = await connect(client_id=15)
    spy = await _spy(ib)
    sim.clock.set("2015-06-01T21:00:00Z")  # Monday after the close: DAY orders are for Tuesday's session
    day = ib.placeOrder(spy, LimitOrder("BUY", 10, 1.00, tif="DAY"))
    gtc = ib.placeOrder(spy, LimitOrder("BUY", 10, 1.00, tif="GTC"))
    await eventually(lambda: gtc.orderStatus.status == "Submitted")
    sim.clock.advance_to("2015-06-02T18:00:00Z")
    assert len(sim.state.open_orders()) == 2  # Tuesday 14:00 New York: both still working
    sim.clock.advance(1, symbol="SPY")  # Tuesday's bar completes at the close: the DAY order ends with it
    await eventually(lambda: day.orderStatus.status == "Cancelled")
    assert [o.order_ref for o in sim.state.open_orders()] == [gtc.order.orderRef]
    assert gtc.orderStatus.status == "Submitted"


async def test_next_open_mode_fills_market_orders_on_advance(pacing_time: ManualTime, connect: Connect) -> None:
    async with SimServer(SimConfig(data_dir=DATA, pacing_time=pacing_time, mkt_fill="next_open")) as sim:
        ib = await connect(client_id=16, server=sim)
        spy = await _spy(ib)
        sim.clock.set("2012-06-27T15:00:00Z")
        trade = ib.placeOrder(spy, MarketOrder("BUY", 100))
        await eventually(lambda: trade.orderStatus.status == "Submitted")
        assert not trade.fills
        sim.clock.advance(1, symbol="SPY")
        await eventually(lambda: trade.orderStatus.status == "Filled")
        assert trade.orderStatus.avgFillPrice == 133.00  # open of the 15:00 bar
        ib.disconnect()


async def test_slippage_goes_against_market_orders(pacing_time: ManualTime, connect: Connect) -> None:
    async with SimServer(SimConfig(data_dir=DATA, pacing_time=pacing_time, slippage=Decimal("0.02"))) as sim:
        ib = await connect(client_id=26, server=sim)
        spy = await _spy(ib)
        buy = ib.placeOrder(spy, MarketOrder("BUY", 10))
        sell = ib.placeOrder(spy, MarketOrder("SELL", 10))
        await eventually(lambda: buy.isDone() and sell.isDone())
        assert buy.orderStatus.avgFillPrice == float(SPY_DAILY_LAST_CLOSE + Decimal("0.02"))
        assert sell.orderStatus.avgFillPrice == float(SPY_DAILY_LAST_CLOSE - Decimal("0.02"))
        ib.disconnect()


async def test_rejects_are_error_201(sim: SimServer, connect: Connect, ib_log) -> None:
    ib_log.allow(r"Error 201, reqId \d+: Order rejected - reason:")
    ib_log.allow(r"Canceled order: ")
    ib = await connect(client_id=17)
    errors = _errors(ib)
    spy = await _spy(ib)
    sim.reject_next_order("Insufficient margin for the simulated test")
    injected = ib.placeOrder(spy, MarketOrder("BUY", 100))
    zero = ib.placeOrder(spy, MarketOrder("BUY", 0))
    spx = Index("SPX", "CBOE", "USD")
    await ib.qualifyContractsAsync(spx)
    index = ib.placeOrder(spx, MarketOrder("BUY", 1))
    unknown = ib.placeOrder(Stock(conId=99999, symbol="ZZZ", exchange="SMART", currency="USD"), MarketOrder("BUY", 1))
    trades: list[Trade] = [injected, zero, index, unknown]
    await eventually(lambda: all(t.orderStatus.status == "Cancelled" for t in trades))
    by_order = {req: msg for req, code, msg in errors if code == 201}
    assert by_order[injected.order.orderId].endswith("Insufficient margin for the simulated test")
    assert "quantity" in by_order[zero.order.orderId]
    assert "index" in by_order[index.order.orderId]
    assert "contract" in by_order[unknown.order.orderId]
    assert not sim.state.orders and sim.stats.orders_placed == 0


async def test_duplicate_order_id_is_103(sim: SimServer, connect: Connect, ib_log) -> None:
    ib_log.allow(r"Error 103, reqId \d+: Duplicate order id")
    ib_log.allow(r"Canceled order: ")
    ib = await connect(client_id=18)
    spy = await _spy(ib)
    first = ib.placeOrder(spy, MarketOrder("BUY", 1))
    await eventually(lambda: first.orderStatus.status == "Filled")
    ib.disconnect()
    again = await connect(client_id=18)  # a restarted process that reuses an old order id
    errors = _errors(again)
    reused = MarketOrder("BUY", 1)
    reused.orderId = first.order.orderId
    dup = again.placeOrder(spy, reused)
    await eventually(lambda: dup.orderStatus.status == "Cancelled")
    assert (first.order.orderId, 103, "Duplicate order id") in errors
    assert len(sim.state.orders) == 1


async def test_modify_an_open_order(sim: SimServer, connect: Connect) -> None:
    ib = await connect(client_id=19)
    spy = await _spy(ib)
    sim.clock.set("2012-06-27T15:00:00Z")
    trade = ib.placeOrder(spy, LimitOrder("BUY", 100, 130.00, orderRef="mod"))
    await eventually(lambda: trade.orderStatus.status == "Submitted")
    trade.order.lmtPrice = 133.20
    ib.placeOrder(spy, trade.order)
    await eventually(lambda: trade.orderStatus.status == "Filled")
    [order] = sim.state.orders_by_ref("mod")
    assert order.lmt_price == Decimal("133.2") and order.avg_fill_price == Decimal("133.00")


async def test_state_is_visible_again_after_reconnect(sim: SimServer, connect: Connect, ib_log) -> None:
    ib_log.allow(r"^Peer closed connection\.$")
    ib = await connect(client_id=21)
    spy = await _spy(ib)
    filled = ib.placeOrder(spy, MarketOrder("BUY", 50, orderRef="intent-mkt"))
    resting = ib.placeOrder(spy, LimitOrder("BUY", 50, 100.00, orderRef="intent-lmt", tif="GTC"))
    await eventually(lambda: filled.isDone() and resting.orderStatus.status == "Submitted")
    perm_ids = {filled.orderStatus.permId, resting.orderStatus.permId}
    sim.drop_connections()  # an unclean end, like a crashed process
    await eventually(lambda: not ib.isConnected())

    ib2 = await connect(client_id=21)
    open_refs = {t.order.orderRef: t for t in ib2.openTrades()}
    assert set(open_refs) == {"intent-lmt"}
    assert open_refs["intent-lmt"].order.permId == resting.orderStatus.permId
    by_ref = {t.order.orderRef: t for t in ib2.trades()}
    assert by_ref["intent-mkt"].orderStatus.status == "Filled"
    assert {t.order.permId for t in ib2.trades()} == perm_ids
    assert [f.execution.orderRef for f in ib2.fills()] == ["intent-mkt"]
    assert ib2.fills()[0].commissionReport.commission == 1.00
    assert [p.position for p in ib2.positions()] == [50]
    ib2.cancelOrder(open_refs["intent-lmt"].order)
    await eventually(lambda: open_refs["intent-lmt"].orderStatus.status == "Cancelled")
    ib_log.allow(r"Error 202")


async def test_other_clients_see_all_open_orders_and_global_cancel(sim: SimServer, connect: Connect, ib_log) -> None:
    ib_log.allow(r"Error 202, reqId \d+: Order Canceled")
    owner = await connect(client_id=22)
    spy = await _spy(owner)
    trade = owner.placeOrder(spy, LimitOrder("SELL", 5, 999.00, orderRef="far"))
    await eventually(lambda: trade.orderStatus.status == "Submitted")
    watcher = await connect(client_id=23)
    assert watcher.openTrades() == []  # reqOpenOrders is per clientId
    everyone = await watcher.reqAllOpenOrdersAsync()
    assert [t.order.orderRef for t in everyone] == ["far"]
    watcher.reqGlobalCancel()
    await eventually(lambda: trade.orderStatus.status == "Cancelled")


async def test_what_if_order_estimates_without_placing(sim: SimServer, connect: Connect) -> None:
    ib = await connect(client_id=24)
    spy = await _spy(ib)
    state = await ib.whatIfOrderAsync(spy, MarketOrder("BUY", 100))
    assert state.commission == 1.0 and state.commissionCurrency == "USD"
    assert Decimal(state.initMarginChange) == (100 * SPY_DAILY_LAST_CLOSE * Decimal("0.25")).quantize(Decimal("0.01"))
    assert Decimal(state.equityWithLoanBefore) == Decimal(1_000_000)
    assert not sim.state.orders and not sim.state.executions


async def test_bracket_children_wait_for_the_parent_and_cancel_each_other(sim: SimServer, connect: Connect) -> None:
    ib = await connect(client_id=25)
    spy = await _spy(ib)
    sim.clock.set("2012-06-27T15:00:00Z")
    parent, take_profit, stop_loss = [
        ib.placeOrder(spy, o) for o in ib.bracketOrder("BUY", 100, 132.90, takeProfitPrice=133.10, stopLossPrice=132.70)
    ]
    await eventually(lambda: stop_loss.orderStatus.status == "PreSubmitted")
    assert take_profit.orderStatus.status == "PreSubmitted"  # held until the parent fills
    sim.clock.advance(3, symbol="SPY")  # 15:10 bar: low 132.78 fills the parent at 132.90
    await eventually(lambda: parent.orderStatus.status == "Filled" and take_profit.orderStatus.status == "Submitted")
    assert parent.orderStatus.avgFillPrice == 132.90
    sim.clock.advance(6, symbol="SPY")  # 15:35 bar: high 133.12 reaches the take-profit
    await eventually(lambda: take_profit.orderStatus.status == "Filled" and stop_loss.orderStatus.status == "Cancelled")
    assert take_profit.orderStatus.avgFillPrice == 133.10
    assert sim.state.positions[("DU1234567", 756733)].quantity == 0
    await eventually(lambda: ib.positions() == [])  # ib_async drops flat positions


async def test_untransmitted_orders_wait_for_the_transmitting_child(sim: SimServer, connect: Connect) -> None:
    ib = await connect(client_id=26)
    spy = await _spy(ib)
    sim.clock.set("2012-06-27T15:00:00Z")
    parent, take_profit, stop_loss = ib.bracketOrder("BUY", 300, 132.90, takeProfitPrice=133.50, stopLossPrice=132.75)
    held = [ib.placeOrder(spy, o) for o in (parent, take_profit)]  # transmit=False on both
    await ib.reqCurrentTimeAsync()  # a round trip: both placeOrders have been handled
    assert not sim.state.orders and [t.orderStatus.status for t in held] == ["PendingSubmit"] * 2
    assert [(p.transmit, p.parent_id) for p in sim.state.placed] == [(False, 0), (False, parent.orderId)]
    last = ib.placeOrder(spy, stop_loss)  # transmit=True: TWS sends the whole bracket
    await eventually(lambda: all(t.order.permId for t in [*held, last]))
    assert [t.orderStatus.status for t in [*held, last]] == ["Submitted", "PreSubmitted", "PreSubmitted"]
    assert held[0].order.permId < held[1].order.permId < last.order.permId  # accepted together, parent first
    assert {o.parent_perm_id for o in sim.state.orders.values() if o.parent_id} == {held[0].order.permId}
