"""THE order decision (services.orders.planning.plan_order), the one live, dry-run and replay call: the position
rule (one position, no pyramiding; an opposite signal closes and opens nothing), sizing, the order-only risk
checks and tick rounding."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal as D

import pytest

from models.enums import AnalystKind, OrderSide, OrderType, SignalAction, SizingMethod
from models.strategy import Risk
from services.orders.planning import plan_order
from services.signals import Signal
from tests.orders_support import strategy

BAR = dt.datetime(2024, 6, 3, tzinfo=dt.UTC)


def risk(**changes: object) -> Risk:
    base = strategy().risk
    sizing = base.sizing.model_copy(update={"method": SizingMethod.FIXED_QUANTITY, "quantity": D(10)})
    return Risk.model_validate(base.model_dump() | {"sizing": sizing} | changes)


def signal(action: SignalAction, entry: str = "100.005", stop: str | None = "95.003", target: str | None = "110.007"):  # type: ignore[no-untyped-def]
    return Signal(action, "test", AnalystKind.OFFLINE, BAR, 0.7, D(entry), D(stop) if stop else None,
                  D(target) if target else None)  # fmt: skip


def plan(action: SignalAction, position: str = "0", *, atr_calls: list[int] | None = None, **risk_changes: object):  # type: ignore[no-untyped-def]
    def atr() -> D | None:
        if atr_calls is not None:
            atr_calls.append(1)
        return D(2)

    return plan_order(
        signal(action),
        risk(**risk_changes),
        symbol="SPY",
        position=D(position),
        equity=D(100_000),
        atr=atr,
        size_increment=D(1),
        min_tick=D("0.01"),
    )


def test_a_buy_when_flat_opens_a_sized_bracketed_entry_rounded_to_the_tick() -> None:
    p = plan(SignalAction.BUY)
    assert (p.side, p.closing, p.opening, p.quantity, p.order_type) == (OrderSide.BUY, 0, 10, 10, OrderType.LIMIT)
    assert (p.limit, p.stop, p.target) == (D("100.00"), D("95.01"), D("110.01"))  # BUY down; its SELL exits up
    assert p.placed and p.refusal is None and p.note == "BUY 10 LMT @ 100.00 (open 10)"


def test_no_pyramiding_a_buy_while_long_places_nothing() -> None:
    p = plan(SignalAction.BUY, "10.000000")
    assert not p.placed and p.refusal is not None and p.refusal.name == "pyramiding"
    assert p.note == "already long 10: no pyramiding"
    short = plan(SignalAction.SELL, "-5", allow_short=True)
    assert not short.placed and short.note == "already short 5: no pyramiding"


@pytest.mark.parametrize("allow_short", [False, True])
def test_a_signal_against_the_position_closes_it_whole_and_opens_nothing(allow_short: bool) -> None:
    p = plan(SignalAction.SELL, "37", allow_short=allow_short)
    assert (p.side, p.closing, p.opening, p.stop, p.target) == (OrderSide.SELL, 37, 0, None, None)  # no bracket
    assert p.limit == D("100.01")  # a SELL limit rounds up
    cover = plan(SignalAction.BUY, "-8", allow_short=True)
    assert (cover.side, cover.closing, cover.opening) == (OrderSide.BUY, 8, 0)


def test_a_sell_when_flat_opens_a_short_only_when_allowed() -> None:
    refused = plan(SignalAction.SELL)
    assert not refused.placed and refused.refusal is not None and refused.refusal.name == "short_selling"
    short = plan(SignalAction.SELL, allow_short=True)
    assert (short.side, short.opening, short.limit) == (OrderSide.SELL, 10, D("100.01"))


def test_sizing_and_order_checks_refuse_with_a_reason() -> None:
    sizing = risk().sizing.model_copy(update={"quantity": D("0.4")})
    p = plan(SignalAction.BUY, sizing=sizing)
    assert not p.placed and p.refusal is not None and p.refusal.name == "sizing" and "rounds down to 0" in p.note


def test_market_orders_have_no_limit_and_the_atr_is_read_only_when_needed() -> None:
    calls: list[int] = []
    p = plan(SignalAction.BUY, order_type=OrderType.MARKET, atr_calls=calls)
    assert (p.order_type, p.limit, p.reference) == (OrderType.MARKET, None, D("100.005"))
    assert calls == []  # the signal has a stop: no ATR needed
    with pytest.raises(ValueError):
        plan_order(signal(SignalAction.HOLD), risk(), symbol="SPY", position=D(0), equity=None, atr=lambda: None,
                   size_increment=D(1), min_tick=D("0.01"))  # fmt: skip


def test_the_time_exit_closes_the_whole_position_by_market_once_held_max_holding_bars() -> None:
    from services.orders.planning import held_bars, plan_time_exit

    ends = [BAR + dt.timedelta(days=i) for i in range(1, 8)]  # seven completed daily bars
    opened = BAR + dt.timedelta(days=4, hours=-3)  # filled during the fourth bar (it ends at ends[3])
    assert held_bars(ends, opened) == 4 and held_bars(ends, ends[3] - dt.timedelta(seconds=1)) == 4
    # a fill at a bar's end is at the next bar's open (the replay counts from that bar): 3 bars, not 4
    assert held_bars(ends, ends[3]) == 3 and held_bars(ends, ends[-2]) == 1
    assert held_bars(ends, ends[-1]) == 0 and held_bars(ends, ends[-1] + dt.timedelta(seconds=1)) == 0
    r = risk(max_holding_bars=4)
    assert plan_time_exit(r, position=D(10), held=3, reference=D(100)) is None
    assert plan_time_exit(r, position=D(0), held=9, reference=D(100)) is None
    assert plan_time_exit(risk(), position=D(10), held=10_000, reference=D(100)) is None  # off by default
    long = plan_time_exit(r, position=D("10.000000"), held=4, reference=D(100))
    short = plan_time_exit(r, position=D(-7), held=5, reference=D(100))
    assert long is not None and short is not None
    assert (long.side, long.closing, long.opening, long.order_type, long.limit) == (
        OrderSide.SELL, 10, 0, OrderType.MARKET, None)  # fmt: skip
    assert (long.stop, long.target, long.reference) == (None, None, D(100))
    assert long.note == "SELL 10 MKT (close 10): time exit, held 4 bars (max 4)"
    assert (short.side, short.quantity) == (OrderSide.BUY, 7)


@pytest.mark.parametrize("bad", [0, -1, 10_001, 2.5])
def test_max_holding_bars_is_validated(bad: object) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="max_holding_bars"):
        risk(max_holding_bars=bad)


def test_a_trailing_stop_rule_makes_the_bracket_stop_a_trail_from_the_signal_stop_or_the_entry() -> None:
    from models.strategy import TrailingStop
    from services.market import Trail

    p = plan(SignalAction.BUY, trailing_stop=TrailingStop(amount=D("1.5")))
    assert (p.trail, p.stop, p.target) == (Trail(amount=D("1.5")), D("95.01"), D("110.01"))
    no_stop = plan_order(
        signal(SignalAction.BUY, stop=None), risk(trailing_stop=TrailingStop(percent=D(2))), symbol="SPY",
        position=D(0), equity=D(100_000), atr=lambda: D(2), size_increment=D(1), min_tick=D("0.01"),
    )  # fmt: skip
    assert (no_stop.trail, no_stop.stop) == (Trail(percent=D(2)), D("98.01"))  # 100.005 - 2 %, up for the SELL exit
    assert plan(SignalAction.SELL, "10", trailing_stop=TrailingStop(amount=D(1))).trail is None  # a close: no bracket
    assert plan(SignalAction.BUY).trail is None  # off by default
    from pydantic import ValidationError

    for bad in ({}, {"amount": D(1), "percent": D(1)}, {"percent": D(100)}):
        with pytest.raises(ValidationError, match="trailing_stop"):
            risk(trailing_stop=bad)
