"""Replay fill rules by hand (services.market with the replay's bps slippage and 4-place prices), and the engine's
limit / short / flagged-bar paths on real bars."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest

from models.enums import OrderSide, OrderType, SignalAction, TimeInForce
from services.bars.loader import load_bars
from services.llm.store import InMemoryLlmCallStore
from services.market import Bar, Slippage, bar_price, bracket_exit, ib_fixed_commission
from services.replay.engine import PRICE_Q, PendingOrder, price, replay
from services.settings import load_settings
from services.strategies import load_strategy_file, parse_strategy

ROOT = Path(__file__).resolve().parents[1]
SPY = ROOT / "data" / "samples" / "yahoofinance-SPY-20080101-20180101.csv"
DAILY = ROOT / "data" / "samples" / "synthetic" / "SYNTH-1995-2014.csv"  # generated: services.bars.synthetic
D = Decimal
NOW = dt.datetime(2024, 1, 2, tzinfo=dt.UTC)


def order(side: OrderSide, kind: OrderType, limit: str | None = None) -> PendingOrder:
    return PendingOrder(side, D(100), kind, TimeInForce.DAY, D(limit) if limit else None, 0, D(0), None, None, "test")


class FillModel:
    """The replay's calls into services.market (as the engine makes them), with the old test's signatures."""

    def __init__(self, slippage_bps: Decimal) -> None:
        self.slippage = Slippage(bps=slippage_bps, quantum=PRICE_Q)

    def order_fill(self, o: PendingOrder, open_: Decimal, high: Decimal, low: Decimal) -> Decimal | None:
        bar = Bar(NOW, NOW, open_, high, low, open_, D(0))
        return bar_price(o.order_type, o.side, bar, limit=o.limit, stop=None, triggered=False, slippage=self.slippage)[
            0
        ]

    def exit_fill(
        self, long: bool, stop: Decimal | None, target: Decimal | None, open_: Decimal, high: Decimal, low: Decimal
    ) -> tuple[Decimal, str] | None:
        side = OrderSide.SELL if long else OrderSide.BUY
        bar = Bar(NOW, NOW, open_, high, low, open_, D(0))
        return bracket_exit(side, bar, stop=stop, target=target, slippage=self.slippage)

    @staticmethod
    def commission(quantity: Decimal, fill_price: Decimal) -> Decimal:
        return ib_fixed_commission(quantity, quantity * fill_price)


def test_market_orders_fill_at_the_open_with_slippage() -> None:
    model = FillModel(D(10))  # 10 bps
    assert model.order_fill(order(OrderSide.BUY, OrderType.MARKET), D(50), D(51), D(49)) == D("50.0500")
    assert model.order_fill(order(OrderSide.SELL, OrderType.MARKET), D(50), D(51), D(49)) == D("49.9500")


def test_limit_orders_fill_when_crossed_at_the_better_of_open_and_limit() -> None:
    model = FillModel(D(10))  # no slippage on limits
    buy = order(OrderSide.BUY, OrderType.LIMIT, "49.5")
    assert model.order_fill(buy, D(50), D(51), D(49)) == D("49.5")
    assert model.order_fill(buy, D(49), D(51), D("48.5")) == D(49)  # gapped below: the open
    assert model.order_fill(buy, D(50), D(51), D("49.6")) is None  # never reached
    sell = order(OrderSide.SELL, OrderType.LIMIT, "50.5")
    assert model.order_fill(sell, D(50), D(51), D(49)) == D("50.5")
    assert model.order_fill(sell, D(52), D(53), D(51)) == D(52)
    assert model.order_fill(sell, D(50), D("50.4"), D(49)) is None


def test_stops_win_over_targets_and_gaps_fill_at_the_open() -> None:
    model = FillModel(D(0))
    assert model.exit_fill(True, D(45), D(60), D(50), D(61), D(44)) == (D(45), "stop")  # both touched: stop
    assert model.exit_fill(True, D(45), D(60), D(43), D(44), D(42)) == (D(43), "stop")  # gap down through stop
    assert model.exit_fill(True, D(45), D(60), D(62), D(63), D(61)) == (D(62), "target")  # gap up through target
    assert model.exit_fill(True, D(45), D(60), D(50), D(55), D(46)) is None
    assert model.exit_fill(False, D(55), D(40), D(50), D(56), D(49)) == (D(55), "stop")  # short
    assert model.exit_fill(False, D(55), D(40), D(50), D(51), D(39)) == (D(40), "target")
    assert FillModel(D(100)).exit_fill(True, D(45), None, D(50), D(51), D(44)) == (D("44.5500"), "stop")


def test_commission_is_ib_fixed() -> None:
    assert FillModel.commission(D(100), D(50)) == D("1.00")  # minimum
    assert FillModel.commission(D(1000), D(50)) == D("5.000")  # 0.005/share
    assert FillModel.commission(D(1000), D("0.10")) == D("1.0000")  # capped at 1 % of 100 USD
    assert price(2.179012) == D("2.1790")


def _variant(**risk: object) -> object:
    base = load_strategy_file(ROOT / "examples" / "replay" / "orcl-sma-cross.yaml").model_dump(mode="json")
    base["risk"].update(risk)
    return parse_strategy(base)


def test_day_limit_orders_live_one_bar_and_fill_only_when_crossed() -> None:
    definition = _variant(order_type="LMT", tif="DAY")
    frame = load_bars(DAILY).frame
    result = replay(
        definition,  # type: ignore[arg-type]
        frame,
        start="2005-01-01",
        end="2009-12-31",
        settings=load_settings({}),
        store=InMemoryLlmCallStore(),
    )
    adjusted = frame.assign(**{k: frame[k] * frame["adj_close"] / frame["close"] for k in ("open", "high", "low")})
    lows = dict(zip(adjusted["timestamp"], adjusted["low"], strict=True))
    highs = dict(zip(adjusted["timestamp"], adjusted["high"], strict=True))
    placed = [d for d in result.decisions if d.order and d.order.startswith(("BUY", "SELL"))]
    assert placed and len(result.fills) < len(placed)  # some limits expired unfilled
    times = list(adjusted["timestamp"])
    for fill in result.fills:
        if fill.reason.startswith("signal"):
            # filled on the bar right after its decision, at or better than the limit (the decision's close)
            decided = times[times.index(pd.Timestamp(fill.bar_time)) - 1]
            decision = next(d for d in result.decisions if d.bar_time == decided)
            assert decision.entry is not None
            if fill.side is OrderSide.BUY:
                assert fill.price <= decision.entry and price(lows[pd.Timestamp(fill.bar_time)]) <= decision.entry
            else:
                assert fill.price >= decision.entry and price(highs[pd.Timestamp(fill.bar_time)]) >= decision.entry


def test_shorts_open_only_when_allowed() -> None:
    frame = load_bars(DAILY).frame
    settings = load_settings({})
    longs_only = replay(
        _variant(allow_short=False),  # type: ignore[arg-type]
        frame,
        start="2008-01-01",
        end="2009-12-31",
        settings=settings,
        store=InMemoryLlmCallStore(),
    )
    with_shorts = replay(
        _variant(allow_short=True),  # type: ignore[arg-type]
        frame,
        start="2008-01-01",
        end="2009-12-31",
        settings=settings,
        store=InMemoryLlmCallStore(),
    )
    assert {t.direction for t in longs_only.trades} == {"long"}
    assert "short" in {t.direction for t in with_shorts.trades}
    assert min(with_shorts.positions) < 0 <= min(longs_only.positions)
    for t in with_shorts.trades:
        if t.direction == "short" and t.exit_price is not None and t.pnl is not None:
            assert t.pnl == (t.entry_price - t.exit_price) * t.quantity - t.commission


def test_flagged_bars_make_the_decision_abstain() -> None:
    # data/samples SPY has two OHLC-inconsistent rows (2015-03-05, 2015-03-30) that validation flags
    definition = load_strategy_file(ROOT / "examples" / "strategies" / "spy-sma-cross.yaml")
    result = replay(
        definition,
        load_bars(SPY).frame,
        start="2015-03-01",
        end="2015-03-31",
        settings=load_settings({}),
        store=InMemoryLlmCallStore(),
    )
    by_day = {d.bar_time.date().isoformat(): d for d in result.decisions}
    for day in ("2015-03-05", "2015-03-30"):
        assert by_day[day].action is SignalAction.ABSTAIN and "flagged" in by_day[day].reason
    assert sum(d.action is SignalAction.ABSTAIN for d in result.decisions) == 2


def test_progress_reports_every_decision() -> None:
    seen: list[tuple[int, int]] = []
    replay(
        load_strategy_file(ROOT / "examples" / "replay" / "orcl-sma-cross.yaml"),
        load_bars(DAILY).frame,
        start="2014-12-01",
        end="2014-12-31",
        decide_every=2,
        settings=load_settings({}),
        store=InMemoryLlmCallStore(),
        progress=lambda done, total: seen.append((done, total)),
    )
    assert seen == [(i, 11) for i in range(1, 12)]


@pytest.mark.parametrize("cash", [D(0), D(-5)])
def test_cash_must_be_positive(cash: Decimal) -> None:
    from services.errors import InputError

    with pytest.raises(InputError):
        replay(
            load_strategy_file(ROOT / "examples" / "replay" / "orcl-sma-cross.yaml"),
            load_bars(DAILY).frame,
            start="2014-12-01",
            end="2014-12-31",
            settings=load_settings({}),
            store=InMemoryLlmCallStore(),
            initial_cash=cash,
        )
