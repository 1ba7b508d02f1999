"""services.market by hand: tick rounding, commission, matching, slippage, sessions and the position book."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from models.enums import OrderSide, OrderType
from services.market import (
    Bar,
    Position,
    Slippage,
    bar_price,
    fill_commission,
    ib_fixed_commission,
    immediate_price,
    participation_budget,
    sessions,
    to_price,
)

D = Decimal
BUY, SELL = OrderSide.BUY, OrderSide.SELL
T = datetime(2024, 1, 3, 15, 0, tzinfo=UTC)


def bar(open_: str, high: str, low: str, close: str, volume: int = 1000) -> Bar:
    return Bar(T, T, D(open_), D(high), D(low), D(close), D(volume))


def test_to_price_rounds_half_even_to_the_quantum() -> None:
    assert to_price(100.1) == D("100.10")
    assert to_price(100.125) == D("100.12")  # half-even on the exact repr
    assert to_price(100.135) == D("100.14")
    assert to_price(2.179012, D("0.0001")) == D("2.1790")


def test_commission_minimum_per_share_cap_and_per_fill_increase() -> None:
    assert ib_fixed_commission(D(100), D(10_000)) == D("1.00")  # 0.50 -> minimum
    assert ib_fixed_commission(D(300), D(30_000)) == D("1.500")
    assert ib_fixed_commission(D(10), D("5.00")) == D("0.0500")  # 1% of 5.00 caps below the minimum
    assert ib_fixed_commission(D(0), D(0)) == D(0)
    # 300 shares in fills of 100, 100, 100: 1.00, then 0.00 (still the minimum), then 0.50
    assert fill_commission(D(0), D(0), D(100), D(100)) == D("1.00")
    assert fill_commission(D(100), D(10_000), D(100), D(100)) == D(0)
    assert fill_commission(D(200), D(20_000), D(100), D(100)) == D("0.500")


def test_participation_budget_floors() -> None:
    assert participation_budget(D(2_005), D("0.1")) == D(200)
    assert participation_budget(D(100), D("0.29")) == D(29)
    assert participation_budget(D(100), None) is None


def test_immediate_fills_against_the_close() -> None:
    none: dict[str, Decimal | None] = {"limit": None, "stop": None}
    assert immediate_price(OrderType.MARKET, BUY, D(100), **none, triggered=False) == (D(100), False)
    assert immediate_price(OrderType.LIMIT, BUY, D(100), limit=D(99), stop=None, triggered=False) == (None, False)
    assert immediate_price(OrderType.LIMIT, SELL, D(100), limit=D(99), stop=None, triggered=False) == (D(100), False)
    # a BUY stop at 99 is already through: it triggers and fills at the close
    assert immediate_price(OrderType.STOP, BUY, D(100), limit=None, stop=D(99), triggered=False) == (D(100), True)
    assert immediate_price(OrderType.STOP, SELL, D(100), limit=None, stop=D(99), triggered=False) == (None, False)
    # STP LMT triggered but the close is above the BUY limit: it rests, triggered
    got = immediate_price(OrderType.STOP_LIMIT, BUY, D(100), limit=D("99.5"), stop=D(99), triggered=False)
    assert got == (None, True)


def test_bar_fills() -> None:
    b = bar("100", "102", "97", "101")
    none: dict[str, Decimal | None] = {"limit": None, "stop": None}
    assert bar_price(OrderType.MARKET, SELL, b, **none, triggered=False) == (D(100), False)
    assert bar_price(OrderType.LIMIT, BUY, b, limit=D(98), stop=None, triggered=False) == (D(98), False)
    assert bar_price(OrderType.LIMIT, BUY, b, limit=D(105), stop=None, triggered=False) == (D(100), False)
    assert bar_price(OrderType.LIMIT, SELL, b, limit=D(103), stop=None, triggered=False) == (None, False)
    assert bar_price(OrderType.LIMIT, SELL, b, limit=D(99), stop=None, triggered=False) == (D(100), False)
    assert bar_price(OrderType.STOP, BUY, b, limit=None, stop=D("101.5"), triggered=False) == (D("101.5"), True)
    assert bar_price(OrderType.STOP, SELL, b, limit=None, stop=D(98), triggered=False) == (D(98), True)
    assert bar_price(OrderType.STOP, SELL, b, limit=None, stop=D(96), triggered=False) == (None, False)
    gap = bar("95", "96", "94", "95")  # gapped down through a SELL stop at 98: the open
    assert bar_price(OrderType.STOP, SELL, gap, limit=None, stop=D(98), triggered=False) == (D(95), True)
    assert bar_price(OrderType.STOP, SELL, gap, limit=None, stop=D(98), triggered=True) == (D(95), True)
    # STP LMT SELL stop 98 limit 97: gapped to 95 is below the limit, so it rests triggered; later a LMT
    assert bar_price(OrderType.STOP_LIMIT, SELL, gap, limit=D(97), stop=D(98), triggered=False) == (None, True)
    assert bar_price(OrderType.STOP_LIMIT, SELL, b, limit=D(97), stop=D(98), triggered=True) == (D(100), True)
    assert bar_price(OrderType.STOP_LIMIT, SELL, b, limit=D(97), stop=D(98), triggered=False) == (D(98), True)


def test_slippage_worsens_market_and_stop_fills_only() -> None:
    b = bar("50", "51", "49", "50.5")
    bps = Slippage(bps=D(10), quantum=D("0.0001"))
    assert bar_price(OrderType.MARKET, BUY, b, limit=None, stop=None, triggered=False, slippage=bps)[0] == D("50.05")
    assert bar_price(OrderType.MARKET, SELL, b, limit=None, stop=None, triggered=False, slippage=bps)[0] == D("49.95")
    assert bar_price(OrderType.STOP, SELL, b, limit=None, stop=D("49.5"), triggered=False, slippage=bps)[0] == D(
        "49.4505"
    )
    assert bar_price(OrderType.LIMIT, BUY, b, limit=D("49.5"), stop=None, triggered=False, slippage=bps)[0] == D("49.5")
    cents = Slippage(per_share=D("0.02"))
    assert immediate_price(OrderType.MARKET, BUY, D("50.5"), limit=None, stop=None, triggered=False, slippage=cents)[
        0
    ] == D("50.52")
    assert immediate_price(OrderType.MARKET, SELL, D("50.5"), limit=None, stop=None, triggered=False, slippage=cents)[
        0
    ] == D("50.48")
    got = immediate_price(OrderType.LIMIT, SELL, D("50.5"), limit=D(50), stop=None, triggered=False, slippage=cents)
    assert got[0] == D("50.5")


def test_sessions_follow_the_holiday_calendar() -> None:
    # 2024-07-03 closes early (13:00 New York = 17:00 UTC); 2024-07-04 is a holiday
    assert sessions.in_rth(datetime(2024, 7, 2, 19, 59, tzinfo=UTC))  # 15:59
    assert not sessions.in_rth(datetime(2024, 7, 2, 20, 0, tzinfo=UTC))  # 16:00
    assert not sessions.in_rth(datetime(2024, 7, 2, 13, 29, tzinfo=UTC))  # 09:29
    assert sessions.in_rth(datetime(2024, 7, 2, 13, 30, tzinfo=UTC))
    assert sessions.in_rth(datetime(2024, 7, 3, 16, 59, tzinfo=UTC))
    assert not sessions.in_rth(datetime(2024, 7, 3, 17, 0, tzinfo=UTC))
    assert not sessions.in_rth(datetime(2024, 7, 4, 15, 0, tzinfo=UTC))
    assert sessions.order_session(datetime(2024, 7, 2, 19, 0, tzinfo=UTC)) == date(2024, 7, 2)
    assert sessions.order_session(datetime(2024, 7, 2, 21, 0, tzinfo=UTC)) == date(2024, 7, 3)
    assert sessions.order_session(datetime(2024, 7, 3, 18, 0, tzinfo=UTC)) == date(2024, 7, 5)  # after the early close
    assert sessions.order_session(datetime(2024, 7, 6, 15, 0, tzinfo=UTC)) == date(2024, 7, 8)  # Saturday


def test_sessions_outside_the_calendar_are_weekdays_0930_1600() -> None:
    assert sessions.session_hours(date(1970, 1, 1)) == (
        datetime(1970, 1, 1, 14, 30, tzinfo=UTC),
        datetime(1970, 1, 1, 21, 0, tzinfo=UTC),
    )
    assert sessions.session_hours(date(1970, 1, 3)) is None  # Saturday
    assert sessions.order_session(datetime(1970, 1, 2, 22, 0, tzinfo=UTC)) == date(1970, 1, 5)


def test_bar_session_and_rth_of_date_labelled_bars() -> None:
    daily = Bar(datetime(2024, 7, 4, tzinfo=UTC), T, D(1), D(1), D(1), D(1), D(1), intraday=False)
    assert daily.in_rth and daily.session == date(2024, 7, 4)
    late = Bar(datetime(2024, 7, 3, 2, 0, tzinfo=UTC), T, D(1), D(1), D(1), D(1), D(1))
    assert late.session == date(2024, 7, 2) and not late.in_rth  # 22:00 New York the day before


def test_book_average_cost_includes_commissions_and_realizes_net() -> None:
    pos = Position()
    assert pos.fill(D(100), D(50), D(1)) is None
    assert pos.avg_cost == D("50.01")  # (5000 + 1) / 100
    assert pos.fill(D(100), D(52), D(1)) is None
    assert pos.quantity == D(200) and pos.avg_cost == D("51.01")  # (5001 + 5201) / 200
    assert pos.fill(D(-50), D(55), D(1)) == D("198.50")  # (55 - 51.01) * 50 - 1
    assert pos.quantity == D(150) and pos.avg_cost == D("51.01")
    assert pos.unrealized(D(52)) == D("148.50")  # (52 - 51.01) * 150
    # flip: sell 200 at 50 closes 150 (all the commission), opens 50 short at 50
    assert pos.fill(D(-200), D(50), D(2)) == D("-153.50")  # (50 - 51.01) * 150 - 2
    assert pos.quantity == D(-50) and pos.avg_cost == D(50)
    assert pos.fill(D(50), D(48), D(1)) == D(99)  # (48 - 50) * 50 * -1 - 1
    assert pos.quantity == 0 and pos.avg_cost == 0
    assert pos.realized_pnl == D("144.00") and pos.commissions == D(6)


@pytest.mark.parametrize("mark", [None, D(10)])
def test_flat_book_has_no_unrealized(mark: Decimal | None) -> None:
    assert Position().unrealized(mark) == 0


def test_bar_from_floats_rounds_prices_and_keeps_the_volume() -> None:
    b = Bar.from_floats(T, T, (100.1, 100.125, 99.994, 100.135, 1234.0), intraday=False)
    assert (b.open, b.high, b.low, b.close, b.volume) == (
        D("100.10"),
        D("100.12"),
        D("99.99"),
        D("100.14"),
        D("1234.0"),
    )
    adjusted = Bar.from_floats(T, T, (2.179012, 2.5, 2.0, 2.25, 10.0), quantum=D("0.0001"))
    assert adjusted.open == D("2.1790") and adjusted.intraday


def test_a_trailing_stop_is_checked_before_it_follows_the_bar_and_never_moves_back() -> None:
    from services.market import Trail, trail_stop, trailing_price

    t0 = datetime(2024, 6, 3, 14, 30, tzinfo=UTC)

    def bar(o: str, h: str, lo: str, c: str) -> Bar:
        return Bar(t0, t0, Decimal(o), Decimal(h), Decimal(lo), Decimal(c), Decimal(100))

    amount, pct = Trail(amount=Decimal("0.50")), Trail(percent=Decimal(1))
    tick = Decimal("0.01")
    # a SELL trail (a long's stop): the high pulls it up, a lower high leaves it, a low at the old stop fills
    assert trail_stop(OrderSide.SELL, Decimal(99), amount, bar("100", "101", "99.5", "100.8"), tick) == Decimal(
        "100.50"
    )
    assert trail_stop(
        OrderSide.SELL, Decimal("100.50"), amount, bar("100", "100.7", "100.6", "100.6"), tick
    ) == Decimal("100.50")
    assert trail_stop(OrderSide.SELL, Decimal(99), pct, bar("100", "101", "99.5", "100.8"), tick) == Decimal("99.99")
    assert trail_stop(OrderSide.BUY, Decimal(101), amount, bar("100", "100.2", "99.9", "100"), tick) == Decimal(
        "100.40"
    )
    # checked at the stop as it stood before the bar (a gap fills at the open), then followed
    sell = OrderSide.SELL
    assert trailing_price(sell, bar("100", "103", "99.8", "102"), stop=Decimal(99), trail=amount, quantum=tick) == (
        None, Decimal("102.50"))  # fmt: skip
    assert trailing_price(sell, bar("98", "103", "97", "102"), stop=Decimal(99), trail=amount, quantum=tick) == (
        Decimal(98), Decimal(99))  # fmt: skip
    for bad in ({}, {"amount": Decimal(1), "percent": Decimal(1)}, {"amount": Decimal(0)}, {"percent": Decimal(100)}):
        with pytest.raises(ValueError):
            Trail(**bad)
