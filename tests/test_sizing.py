from __future__ import annotations

from decimal import Decimal as D

import pandas as pd
import pytest

from models.enums import OrderSide, SizingMethod
from models.strategy import Sizing
from services.orders.sizing import (
    SizingError,
    average_true_range,
    round_price,
    round_quantity,
    size_order,
)


def test_fixed_quantity_is_rounded_down_to_increment() -> None:
    s = Sizing(method=SizingMethod.FIXED_QUANTITY, quantity=D("7.9"))
    assert size_order(s, side=OrderSide.BUY, entry=D("100"), size_increment=D("1")).quantity == D(7)
    assert size_order(s, side=OrderSide.BUY, entry=D("100"), size_increment=D("0.5")).quantity == D("7.5")


def test_fixed_notional() -> None:
    s = Sizing(method=SizingMethod.FIXED_NOTIONAL, notional=D("10000"))
    r = size_order(s, side=OrderSide.BUY, entry=D("333.33"), size_increment=D("1"))
    assert r.quantity == D(30)  # 30.0003 -> 30
    assert r.raw_quantity > D(30)


def test_percent_of_equity_needs_equity() -> None:
    s = Sizing(method=SizingMethod.PERCENT_EQUITY, percent=D("10"))
    r = size_order(s, side=OrderSide.BUY, entry=D("250"), size_increment=D("1"), equity=D("100000"))
    assert r.quantity == D(40)
    with pytest.raises(SizingError, match="equity"):
        size_order(s, side=OrderSide.BUY, entry=D("250"), size_increment=D("1"), equity=None)


def test_risk_based_with_signal_stop() -> None:
    s = Sizing(method=SizingMethod.RISK_BASED, risk_fraction=D("0.01"))
    r = size_order(s, side=OrderSide.BUY, entry=D("100"), size_increment=D("1"), equity=D("50000"), stop=D("97"))
    assert r.quantity == D(166)  # 500 / 3 = 166.67 -> 166
    assert r.risk_per_share == D(3)
    sell = size_order(s, side=OrderSide.SELL, entry=D("100"), size_increment=D("1"), equity=D("50000"), stop=D("104"))
    assert sell.quantity == D(125)


def test_risk_based_falls_back_to_atr_stop() -> None:
    s = Sizing(method=SizingMethod.RISK_BASED, risk_fraction=D("0.02"), atr_multiple=D("2"))
    r = size_order(s, side=OrderSide.BUY, entry=D("50"), size_increment=D("1"), equity=D("10000"), atr=D("1.25"))
    assert r.stop == D("47.50")
    assert r.quantity == D(80)  # 200 / 2.5
    with pytest.raises(SizingError, match="needs a stop"):
        size_order(s, side=OrderSide.BUY, entry=D("50"), size_increment=D("1"), equity=D("10000"))


def test_stop_on_wrong_side_and_zero_quantity_are_refused() -> None:
    s = Sizing(method=SizingMethod.RISK_BASED, risk_fraction=D("0.01"))
    with pytest.raises(SizingError, match="wrong side"):
        size_order(s, side=OrderSide.BUY, entry=D("100"), size_increment=D("1"), equity=D("1000"), stop=D("101"))
    tiny = Sizing(method=SizingMethod.FIXED_NOTIONAL, notional=D("50"))
    with pytest.raises(SizingError, match="rounds down to 0"):
        size_order(tiny, side=OrderSide.BUY, entry=D("100"), size_increment=D("1"))


def test_price_rounding_direction() -> None:
    assert round_price(D("100.037"), D("0.01"), OrderSide.BUY) == D("100.03")
    assert round_price(D("100.031"), D("0.01"), OrderSide.SELL) == D("100.04")
    assert round_price(D("100.03"), D("0.01"), OrderSide.SELL) == D("100.03")
    assert round_price(D("4501.13"), D("0.25"), OrderSide.BUY) == D("4501.00")
    assert round_quantity(D("0.99"), D("1")) == D(0)


def test_atr_matches_a_hand_computation() -> None:
    frame = pd.DataFrame({"high": [11, 12, 13, 12], "low": [9, 10, 11, 10], "close": [10, 11, 12, 11]})
    # true ranges: max(2, 2, 0)=2, max(2, 2, 0)=2, max(2, 1, 2)=2 -> ATR(2) = 2
    assert average_true_range(frame, 2) == D("2.0000")
    assert average_true_range(frame, 5) is None


def test_caps_limit_the_method_size():
    sizing = Sizing(method=SizingMethod.RISK_BASED, risk_fraction=D("0.005"))
    kwargs = dict(side=OrderSide.BUY, entry=D("266.86"), size_increment=D("1"), equity=D("1000000"), stop=D("264.08"))
    uncapped = size_order(sizing, **kwargs)
    assert uncapped.quantity == D(1798)  # 5000 / 2.78
    by_notional = size_order(sizing, **kwargs, max_notional=D("25000"))
    assert by_notional.quantity == D(93)  # floor(25000 / 266.86)
    assert "capped to max notional" in by_notional.detail
    by_position = size_order(sizing, **kwargs, max_notional=D("25000"), max_quantity=D("50"))
    assert by_position.quantity == D(50)
