"""Fill rules against bars and IB's fixed commission, the same rules as the TWS simulator (``simulator/matching``).

A bar is seen once it is complete (intraday: start + bar length; date-labelled bars: 16:00 New York that day).

- **At placement** against the last completed bar: MKT fills at its close; LMT fills at the close when marketable
  (BUY ``close <= limit``, SELL ``close >= limit``); STP / STP LMT trigger when the close is through the stop,
  then fill like MKT / LMT.
- **On each newly completed bar**: MKT fills at the open; LMT BUY fills when ``low <= limit`` at
  ``min(open, limit)`` (SELL: ``high >= limit`` at ``max(open, limit)``); STP BUY triggers when ``high >= stop``
  and fills at ``max(open, stop)`` (SELL mirrors); a triggered STP LMT fills there if within the limit, else
  rests as LMT. Intraday bars outside 09:30-16:00 New York are skipped.
- **Partial fills**: with a participation rate, at most ``int(rate * volume)`` shares trade per bar, shared by
  all orders on that bar; ``None`` = no volume limit. Prices are rounded to the 0.01 tick.
- **Commission** (IB fixed, US stocks): 0.005 USD/share, at least 1.00, at most 1% of the trade value per order;
  each fill is charged the increase of the order's cumulative commission.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Final

from models.enums import OrderSide, OrderType

TICK: Final = Decimal("0.01")
PER_SHARE: Final = Decimal("0.005")
MIN_PER_ORDER: Final = Decimal("1.00")
MAX_PCT_OF_VALUE: Final = Decimal("0.01")


@dataclass(frozen=True)
class BarPrices:
    """One completed bar: prices as tick-rounded Decimals."""

    start: datetime
    end: datetime
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal


def to_price(value: float) -> Decimal:
    """Round a float price to the 0.01 tick (half-even), via its shortest repr."""
    return Decimal(repr(float(value))).quantize(TICK, rounding=ROUND_HALF_EVEN)


def ib_fixed_commission(quantity: Decimal, value: Decimal) -> Decimal:
    """Return IB's fixed-rate commission for a whole order of ``quantity`` shares worth ``value``."""
    if quantity <= 0:
        return Decimal(0)
    return min(max(quantity * PER_SHARE, MIN_PER_ORDER), (value * MAX_PCT_OF_VALUE).quantize(Decimal("0.0001")))


def participation_budget(volume: Decimal, participation: Decimal | None) -> Decimal | None:
    """Return the shares one bar can fill in total (``None`` = unlimited)."""
    if participation is None:
        return None
    return Decimal(int(participation * volume))


def _crossed_limit(side: OrderSide, price: Decimal, limit: Decimal) -> bool:
    return price <= limit if side is OrderSide.BUY else price >= limit


def immediate_price(
    order_type: OrderType,
    side: OrderSide,
    close: Decimal,
    *,
    limit: Decimal | None,
    stop: Decimal | None,
    triggered: bool,
) -> tuple[Decimal | None, bool]:
    """Return ``(fill price or None, triggered)`` for an order arriving after a bar closed at ``close``."""
    if order_type in (OrderType.STOP, OrderType.STOP_LIMIT) and not triggered:
        assert stop is not None
        if (side is OrderSide.BUY and close >= stop) or (side is OrderSide.SELL and close <= stop):
            triggered = True
        else:
            return None, False
    if order_type in (OrderType.MARKET, OrderType.STOP):
        return close, triggered
    assert limit is not None
    return (close if _crossed_limit(side, close, limit) else None), triggered


def bar_price(
    order_type: OrderType,
    side: OrderSide,
    bar: BarPrices,
    *,
    limit: Decimal | None,
    stop: Decimal | None,
    triggered: bool,
) -> tuple[Decimal | None, bool]:
    """Return ``(fill price or None, triggered)`` for a working order on a newly completed ``bar``."""
    buy = side is OrderSide.BUY
    if order_type is OrderType.MARKET:
        return bar.open, triggered
    if order_type in (OrderType.STOP, OrderType.STOP_LIMIT) and not triggered:
        assert stop is not None
        if buy and bar.high >= stop:
            touched = max(bar.open, stop)
        elif not buy and bar.low <= stop:
            touched = min(bar.open, stop)
        else:
            return None, False
        if order_type is OrderType.STOP:
            return touched, True
        assert limit is not None
        return (touched if _crossed_limit(side, touched, limit) else None), True
    if order_type is OrderType.STOP:
        return bar.open, triggered
    assert limit is not None
    if buy and bar.low <= limit:
        return min(bar.open, limit), triggered
    if not buy and bar.high >= limit:
        return max(bar.open, limit), triggered
    return None, triggered
