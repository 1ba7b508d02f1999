"""Fill rules against bars and IB's fixed commission: shared by the in-memory broker (and usable by simulators).

Rules (one bar = one fill opportunity, processed at the bar's close time):

- MKT: fills at the bar's close.
- LMT: BUY fills when ``low <= limit`` (SELL: ``high >= limit``) at the limit, or at the open when the bar opens
  through the limit (gap); at placement a marketable limit (BUY ``limit >= close``) fills at the close.
- STP: triggers when ``high >= stop`` (BUY) / ``low <= stop`` (SELL), then fills like MKT at
  ``max(stop, open)`` / ``min(stop, open)``; STP LMT triggers the same way, then behaves as a limit.
- Quantity per bar is capped by volume participation: ``floor(volume * participation)`` shares (at least one
  share when the bar traded any volume), so large orders fill partially over several bars.
- Commission (IB fixed, US stocks): 0.005 USD/share, at least 1.00 and at most 1% of the trade value per order;
  each execution is charged the increase of the order's cumulative commission.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal
from typing import Final

from models.enums import OrderSide, OrderType

PER_SHARE: Final = Decimal("0.005")
MIN_PER_ORDER: Final = Decimal("1.00")
MAX_PCT_OF_VALUE: Final = Decimal("0.01")
_CENT_FRACTION: Final = Decimal("0.0001")


@dataclass(frozen=True)
class BarPrices:
    """One bar as Decimals."""

    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal


def ib_fixed_commission(quantity: Decimal, value: Decimal) -> Decimal:
    """Return IB's fixed-rate commission for an order of ``quantity`` shares worth ``value``."""
    if quantity <= 0:
        return Decimal(0)
    fee = max(MIN_PER_ORDER, quantity * PER_SHARE)
    cap = value * MAX_PCT_OF_VALUE
    if cap > 0:
        fee = min(fee, cap)
    return fee.quantize(_CENT_FRACTION, rounding=ROUND_HALF_UP)


def max_fill_quantity(bar: BarPrices, participation: Decimal, size_increment: Decimal = Decimal(1)) -> Decimal:
    """Return the most the bar's volume allows us to trade, in whole ``size_increment`` units."""
    if bar.volume <= 0:
        return Decimal(0)
    raw = bar.volume * participation
    units = (raw / size_increment).to_integral_value(rounding=ROUND_FLOOR)
    return max(units, Decimal(1)) * size_increment


def stop_triggered(side: OrderSide, stop: Decimal, bar: BarPrices) -> bool:
    """Return True when the bar trades through ``stop``."""
    return bar.high >= stop if side is OrderSide.BUY else bar.low <= stop


def fill_price(
    order_type: OrderType,
    side: OrderSide,
    bar: BarPrices,
    *,
    limit: Decimal | None = None,
    stop: Decimal | None = None,
    at_placement: bool = False,
    triggered: bool = False,
) -> Decimal | None:
    """Return the price an order fills at on ``bar``, or ``None`` when it does not fill on it.

    ``at_placement``: the order arrives at the bar's close (only the close is available to it).
    ``triggered``: a stop order whose stop was already hit on an earlier bar.
    """
    buy = side is OrderSide.BUY
    if order_type is OrderType.MARKET:
        return bar.close
    if order_type in (OrderType.STOP, OrderType.STOP_LIMIT) and not triggered:
        assert stop is not None
        if at_placement:
            hit = bar.close >= stop if buy else bar.close <= stop
            if not hit:
                return None
            if order_type is OrderType.STOP:
                return bar.close
        else:
            if not stop_triggered(side, stop, bar):
                return None
            if order_type is OrderType.STOP:
                return max(stop, bar.open) if buy else min(stop, bar.open)
    elif order_type is OrderType.STOP:
        return bar.open if not at_placement else bar.close
    assert limit is not None
    if at_placement:
        crossed = bar.close <= limit if buy else bar.close >= limit
        return bar.close if crossed else None
    if buy:
        if bar.open <= limit:
            return bar.open
        return limit if bar.low <= limit else None
    if bar.open >= limit:
        return bar.open
    return limit if bar.high >= limit else None
