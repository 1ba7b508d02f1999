"""One contract suite for every BrokerPort implementation: MemoryBroker and IBBroker against the simulator."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.bars import TIMESTAMP
from models.enums import BarSize, OrderSide, OrderStatus, OrderType, SecType
from services.bars.loader import load_bars
from services.broker.memory import MemoryBroker
from services.broker.port import BrokerPort
from services.broker.types import BarRequest, ContractInfo, ContractSpec, OrderRequest
from services.errors import ContractNotFoundError, OrderRejectedError
from simulator.catalog import KNOWN_SYMBOLS, Catalog, Instrument, bar_files, symbol_from_filename
from tests.broker.conftest import HarnessFactory, IBLogGuard
from tests.broker.harness import Harness

SPY_DAILY_CLOSE_AT = datetime(2017, 12, 29, 21, 0, tzinfo=UTC)  # 16:00 New York: the last SPY daily bar is complete


def _tick(value: float) -> Decimal:
    return Decimal(repr(float(value))).quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN)


def test_both_implementations_satisfy_the_protocol(harness: Harness) -> None:
    assert isinstance(harness.broker, BrokerPort)


async def test_qualify_details_and_unknown_symbol(harness: Harness, ib_log: IBLogGuard) -> None:
    ib_log.allow(r"Error 200\b")  # IB's "no security definition" for the unknown symbol
    spy = await harness.broker.qualify(ContractSpec("SPY"))
    assert (spy.symbol, spy.conid, spy.sec_type) == ("SPY", KNOWN_SYMBOLS["SPY"].con_id, SecType.STK)
    assert spy.currency == "USD"
    assert spy.primary_exchange == "ARCA"
    assert spy.min_tick == Decimal("0.01")
    by_conid = await harness.broker.qualify(ContractSpec("", conid=spy.conid))
    assert by_conid.symbol == "SPY"
    details = await harness.broker.contract_details(ContractSpec("AAPL"))
    assert [d.conid for d in details] == [KNOWN_SYMBOLS["AAPL"].con_id]
    assert await harness.broker.contract_details(ContractSpec("NOSUCH")) == []
    with pytest.raises(ContractNotFoundError):
        await harness.broker.qualify(ContractSpec("NOSUCH"))


async def test_matching_symbols_by_ticker_prefix_then_name_word(harness: Harness) -> None:
    by_prefix = await harness.broker.matching_symbols("sp")
    assert [(s.symbol, s.conid, s.sec_type) for s in by_prefix] == [
        ("SPX", KNOWN_SYMBOLS["SPX"].con_id, "IND"),
        ("SPY", KNOWN_SYMBOLS["SPY"].con_id, "STK"),
    ]
    assert by_prefix[1].primary_exchange == "ARCA" and by_prefix[1].description == "SPDR S&P 500 ETF TRUST"
    by_word = await harness.broker.matching_symbols("apple")
    assert [s.symbol for s in by_word] == ["AAPL"]
    assert await harness.broker.matching_symbols("zzzz") == []


async def test_ticker_prefix_matches_rank_before_name_word_matches_in_both_implementations() -> None:
    """The shipped catalog cannot show the ranking (no name-word match sorts before a prefix match there)."""
    spark = ("ABCD", 900001, "STK", "NYSE", "SPARK ENERGY INC")  # "sp" starts a word of its name only
    etf = ("SPY", 756733, "STK", "ARCA", "SPDR S&P 500 ETF TRUST")  # "sp" starts its ticker
    catalog = Catalog([Instrument(conid, sym, kind, primary, name) for sym, conid, kind, primary, name in (spark, etf)])
    assert [i.symbol for i in catalog.matching("sp")] == ["SPY", "ABCD"]
    memory = MemoryBroker(
        [ContractInfo(conid, sym, SecType(kind), "SMART", primary, "USD", Decimal("0.01"), long_name=name)
         for sym, conid, kind, primary, name in (spark, etf)]
    )  # fmt: skip
    await memory.connect()
    assert [m.symbol for m in await memory.matching_symbols("sp")] == ["SPY", "ABCD"]


COMPARED = (TIMESTAMP, "open", "high", "low", "close", "volume")


def _full_request(frame: pd.DataFrame, size: BarSize) -> BarRequest:
    stamps = pd.DatetimeIndex(frame[TIMESTAMP])
    if size in (BarSize.DAY_1, BarSize.WEEK_1, BarSize.MONTH_1):
        end = stamps[-1].to_pydatetime() + timedelta(days=1)
        years = (stamps[-1] - stamps[0]).days // 365 + 2
        return BarRequest(size, f"{years} Y", end=end, use_rth=False)
    end = stamps[-1].to_pydatetime() + timedelta(hours=1)
    days = stamps.tz_convert("America/New_York").date
    weekdays = int(np.busday_count(days[0], days[-1] + timedelta(days=1)))  # "n D" = the last n weekdays
    return BarRequest(size, f"{weekdays} D", end=end, use_rth=False)


async def test_history_for_every_sample_file_matches_the_loader(
    harness: Harness, data_dir: Path, ib_log: IBLogGuard
) -> None:
    ib_log.allow(r"Error 162\b.*returned no data")  # a one-day chunk on a market holiday (2011-01-17) is empty
    harness.set_time(datetime(2020, 1, 1, tzinfo=UTC))
    files = bar_files(data_dir)
    assert len(files) >= 5  # data/samples holds five real files (its synthetic/ subfolder is not listed)
    for path in files:
        loaded = load_bars(path)
        assert loaded.bar_size is not None
        symbol = symbol_from_filename(path)
        sec_type = SecType(KNOWN_SYMBOLS[symbol].sec_type) if symbol in KNOWN_SYMBOLS else SecType.STK
        contract = await harness.broker.qualify(ContractSpec(symbol, sec_type=sec_type))
        got = await harness.broker.historical_bars(contract, _full_request(loaded.frame, loaded.bar_size))
        cols = [c for c in (*COMPARED, "wap", "trade_count") if c in loaded.frame]
        assert len(got) == len(loaded.frame), path.name
        pd.testing.assert_frame_equal(
            got[cols].reset_index(drop=True), loaded.frame[cols].reset_index(drop=True), check_exact=True, obj=path.name
        )


async def test_market_order_fills_with_execution_and_commission(harness: Harness) -> None:
    harness.set_time(SPY_DAILY_CLOSE_AT)
    spy = await harness.broker.qualify(ContractSpec("SPY"))
    last = (await harness.broker.historical_bars(spy, BarRequest(BarSize.DAY_1, "5 D"))).iloc[-1]
    assert last[TIMESTAMP] == pd.Timestamp("2017-12-29", tz="UTC")

    order = await harness.broker.place_order(spy, OrderRequest("mkt-1", OrderSide.BUY, Decimal(100)))
    assert order.order_ref == "mkt-1" and order.perm_id

    async def filled() -> bool:
        o = await harness.broker.find_order("mkt-1")
        execs = [e for e in await harness.broker.executions() if e.order_ref == "mkt-1"]
        return o is not None and o.status is OrderStatus.FILLED and bool(execs) and execs[0].commission is not None

    await harness.settle(filled)
    done = await harness.broker.find_order("mkt-1")
    assert done is not None
    assert done.filled == Decimal(100) and done.remaining == 0
    assert done.avg_fill_price == _tick(last["close"])
    (execution,) = [e for e in await harness.broker.executions() if e.order_ref == "mkt-1"]
    assert execution.side is OrderSide.BUY and execution.quantity == Decimal(100)
    assert execution.price == _tick(last["close"])
    assert execution.perm_id == order.perm_id
    assert execution.commission == Decimal("1.00")  # 100 * 0.005 = 0.50 -> IB minimum 1.00
    assert execution.time == SPY_DAILY_CLOSE_AT
    (position,) = [p for p in await harness.broker.positions() if p.symbol == "SPY"]
    assert position.quantity == Decimal(100)
    assert position.avg_cost == (Decimal(100) * _tick(last["close"]) + Decimal(1)) / Decimal(100)
    assert "mkt-1" in [o.order_ref for o in await harness.broker.completed_orders()]
    values = await harness.broker.account_values()
    assert values.total_cash == Decimal(1_000_000) - Decimal(100) * _tick(last["close"]) - Decimal(1)


PARTICIPATION = Decimal("0.01")
LMT_AT = datetime(2011, 1, 4, 15, 0, tzinfo=UTC)  # 10:00 New York, inside the SPY 1-minute file


async def test_limit_order_rests_partially_fills_and_is_cancelled(
    make_harness: HarnessFactory, data_dir: Path, ib_log: IBLogGuard
) -> None:
    ib_log.allow(r"Error 202\b")  # IB answers a cancel with "202 Order Canceled"
    h = await make_harness(PARTICIPATION)
    minute = load_bars(data_dir / "nt-spy-minute-2011.csv").frame
    h.set_time(LMT_AT)
    spy = await h.broker.qualify(ContractSpec("SPY"))
    ends = minute[TIMESTAMP] + pd.Timedelta(minutes=1)
    current = minute[ends <= pd.Timestamp(LMT_AT)].iloc[-1]
    limit = _tick(current["close"]) - Decimal("0.05")
    # the first later bar trading at or through the limit, and its volume budget
    later = minute[ends > pd.Timestamp(LMT_AT)].reset_index(drop=True)
    hit = int((later["low"].map(_tick) <= limit).idxmax())
    budget = int(PARTICIPATION * Decimal(repr(float(later.loc[hit, "volume"]))))
    assert budget > 0
    qty = Decimal(budget + 37)

    order = await h.broker.place_order(
        spy, OrderRequest("lmt-1", OrderSide.BUY, qty, OrderType.LIMIT, limit_price=limit)
    )
    assert order.status is OrderStatus.SUBMITTED and order.filled == 0
    assert "lmt-1" in [o.order_ref for o in await h.broker.open_orders()]

    if hit > 0:
        h.advance(hit, symbol="SPY")
        assert (await h.broker.find_order("lmt-1")).filled == 0  # type: ignore[union-attr]
    h.advance(1, symbol="SPY")

    async def partial() -> bool:
        o = await h.broker.find_order("lmt-1")
        return o is not None and o.status is OrderStatus.PARTIALLY_FILLED

    await h.settle(partial)
    o = await h.broker.find_order("lmt-1")
    assert o is not None
    assert o.filled == Decimal(budget) and o.remaining == qty - budget
    assert o.avg_fill_price == min(_tick(later.loc[hit, "open"]), limit)

    cancelled = await h.broker.cancel_order("lmt-1")
    assert cancelled.order_ref == "lmt-1"

    async def is_cancelled() -> bool:
        o = await h.broker.find_order("lmt-1")
        return o is not None and o.status is OrderStatus.CANCELLED

    await h.settle(is_cancelled)
    assert "lmt-1" not in [o.order_ref for o in await h.broker.open_orders()]
    final = await h.broker.find_order("lmt-1")
    assert final is not None and final.filled == Decimal(budget)
    assert sum(e.quantity for e in await h.broker.executions() if e.order_ref == "lmt-1") == Decimal(budget)


async def test_rejected_order_raises_with_ib_code(harness: Harness, ib_log: IBLogGuard) -> None:
    ib_log.allow(r"Error 201\b")
    harness.set_time(SPY_DAILY_CLOSE_AT)
    spy = await harness.broker.qualify(ContractSpec("SPY"))
    harness.reject_next_order("margin requirement not met")
    with pytest.raises(OrderRejectedError) as err:
        await harness.broker.place_order(spy, OrderRequest("rej-1", OrderSide.BUY, Decimal(10)))
    assert err.value.code == 201
    assert err.value.order_ref == "rej-1"
    assert "margin requirement not met" in str(err.value)
    found = await harness.broker.find_order("rej-1")
    assert found is not None and found.status is OrderStatus.REJECTED
    # the next order goes through
    ok = await harness.broker.place_order(spy, OrderRequest("rej-2", OrderSide.BUY, Decimal(10)))
    assert ok.status in (OrderStatus.SUBMITTED, OrderStatus.FILLED)


async def test_state_is_reconciled_by_order_ref_after_reconnect(harness: Harness, ib_log: IBLogGuard) -> None:
    ib_log.allow(r"Peer closed connection")
    harness.set_time(SPY_DAILY_CLOSE_AT)
    spy = await harness.broker.qualify(ContractSpec("SPY"))
    mkt = await harness.broker.place_order(spy, OrderRequest("rc-mkt", OrderSide.BUY, Decimal(20)))
    lmt = await harness.broker.place_order(
        spy, OrderRequest("rc-lmt", OrderSide.BUY, Decimal(5), OrderType.LIMIT, limit_price=Decimal("100.00"))
    )

    async def mkt_filled() -> bool:
        o = await harness.broker.find_order("rc-mkt")
        return o is not None and o.status is OrderStatus.FILLED

    await harness.settle(mkt_filled)
    await harness.drop_and_reconnect()

    async def synced() -> bool:
        return bool(await harness.broker.open_orders()) and bool(await harness.broker.executions())

    await harness.settle(synced)
    open_refs = {o.order_ref: o for o in await harness.broker.open_orders()}
    assert set(open_refs) == {"rc-lmt"}
    assert open_refs["rc-lmt"].perm_id == lmt.perm_id
    assert open_refs["rc-lmt"].limit_price == Decimal("100.00")
    completed = {o.order_ref: o for o in await harness.broker.completed_orders()}
    assert completed["rc-mkt"].perm_id == mkt.perm_id
    assert completed["rc-mkt"].status is OrderStatus.FILLED
    assert completed["rc-mkt"].filled == Decimal(20)
    (execution,) = [e for e in await harness.broker.executions() if e.order_ref == "rc-mkt"]
    assert execution.perm_id == mkt.perm_id and execution.quantity == Decimal(20)
    assert execution.commission == Decimal("1.00")
    assert (await harness.broker.find_order("nope", perm_id=lmt.perm_id)) is not None
    # the same intent is never sent twice: placing rc-lmt again returns the order IB already has
    again = await harness.broker.place_order(
        spy, OrderRequest("rc-lmt", OrderSide.BUY, Decimal(5), OrderType.LIMIT, limit_price=Decimal("100.00"))
    )
    assert again.perm_id == lmt.perm_id
    assert len([o for o in await harness.broker.open_orders() if o.order_ref == "rc-lmt"]) == 1
