"""Position sizing: how many shares to order, and at which (tick-rounded) limit price.

Methods (``models.strategy.Sizing``): fixed quantity, fixed notional, percent of equity, and risk-based (risk
``risk_fraction`` of equity between entry and stop; the stop is ``atr_multiple`` x ATR away when the signal has
none). Quantities are rounded DOWN to the contract's ``size_increment``; prices to its ``min_tick`` in the
direction that never pays more than asked (BUY limit down, SELL limit up). Every refusal is a :class:`SizingError`
with a reason; a zero quantity is a refusal, never an order.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Final

import numpy as np
import pandas as pd

from models.enums import OrderSide, SizingMethod
from models.strategy import Sizing
from services.errors import SkipError

_HUNDRED: Final = Decimal(100)


class SizingError(SkipError):
    """The order cannot be sized (missing equity, no stop and no ATR, rounds to zero, ...)."""


@dataclass(frozen=True)
class SizeResult:
    """The sized quantity and how it was obtained (for the order artifact)."""

    quantity: Decimal
    method: SizingMethod
    raw_quantity: Decimal
    stop: Decimal | None = None
    risk_per_share: Decimal | None = None
    detail: str = ""


def round_quantity(quantity: Decimal, increment: Decimal) -> Decimal:
    """Round ``quantity`` DOWN to a multiple of ``increment`` (never up: never more than sized)."""
    if increment <= 0:
        raise SizingError(f"size increment must be positive, got {increment}")
    steps = (quantity / increment).to_integral_value(rounding=ROUND_FLOOR)
    return (steps * increment).normalize() if steps else Decimal(0)


def round_price(price: Decimal, min_tick: Decimal, side: OrderSide) -> Decimal:
    """Round a limit price to ``min_tick``: BUY down, SELL up (never a worse price than asked)."""
    if min_tick <= 0:
        raise SizingError(f"min tick must be positive, got {min_tick}")
    rounding = ROUND_FLOOR if side is OrderSide.BUY else ROUND_CEILING
    steps = (price / min_tick).to_integral_value(rounding=rounding)
    return steps * min_tick


def average_true_range(frame: pd.DataFrame, period: int) -> Decimal | None:
    """Wilder's ATR over the frame's ``high``/``low``/``close``; ``None`` with fewer than ``period + 1`` bars."""
    if len(frame) < period + 1:
        return None
    high = frame["high"].to_numpy(dtype=float)
    low = frame["low"].to_numpy(dtype=float)
    close = frame["close"].to_numpy(dtype=float)
    prev = close[:-1]
    tr = np.maximum(high[1:] - low[1:], np.maximum(np.abs(high[1:] - prev), np.abs(low[1:] - prev)))
    atr = float(tr[:period].mean())
    for value in tr[period:]:
        atr = (atr * (period - 1) + float(value)) / period
    if not np.isfinite(atr) or atr <= 0:
        return None
    return Decimal(repr(atr)).quantize(Decimal("0.0001"))


def size_order(
    sizing: Sizing,
    *,
    side: OrderSide,
    entry: Decimal,
    size_increment: Decimal,
    equity: Decimal | None = None,
    stop: Decimal | None = None,
    atr: Decimal | None = None,
    max_notional: Decimal | None = None,
    max_quantity: Decimal | None = None,
) -> SizeResult:
    """Return the quantity to order; raise :class:`SizingError` with the reason when it cannot be sized.

    ``max_notional`` / ``max_quantity`` (the strategy's per-order notional and position limits) cap the
    method's raw size, so sizing proposes what the risk gate can accept; the gate still checks everything.
    """
    if entry <= 0:
        raise SizingError(f"entry price must be positive, got {entry}")
    method = sizing.method
    used_stop: Decimal | None = None
    per_share: Decimal | None = None
    if method is SizingMethod.FIXED_QUANTITY:
        assert sizing.quantity is not None  # the Sizing model requires it
        raw = sizing.quantity
        detail = f"fixed {sizing.quantity}"
    elif method is SizingMethod.FIXED_NOTIONAL:
        assert sizing.notional is not None
        raw = sizing.notional / entry
        detail = f"{sizing.notional} / {entry}"
    elif method is SizingMethod.PERCENT_EQUITY:
        assert sizing.percent is not None
        base = _require_equity(equity)
        raw = base * sizing.percent / _HUNDRED / entry
        detail = f"{sizing.percent}% of {base} / {entry}"
    else:
        assert sizing.risk_fraction is not None
        base = _require_equity(equity)
        used_stop = stop if stop is not None else _atr_stop(side, entry, atr, sizing)
        per_share = entry - used_stop if side is OrderSide.BUY else used_stop - entry
        if per_share <= 0:
            raise SizingError(f"stop {used_stop} is on the wrong side of entry {entry} for a {side.value}")
        budget = base * sizing.risk_fraction
        raw = budget / per_share
        detail = f"risk {budget} ({sizing.risk_fraction} of {base}) / {per_share} per share to stop {used_stop}"
    if max_notional is not None and raw * entry > max_notional:
        raw = max_notional / entry
        detail += f"; capped to max notional {max_notional}"
    if max_quantity is not None and raw > max_quantity:
        raw = max_quantity
        detail += f"; capped to max position {max_quantity}"
    quantity = round_quantity(raw, size_increment)
    if quantity <= 0:
        raise SizingError(f"sized quantity {raw:.6f} rounds down to 0 (increment {size_increment}): {detail}")
    return SizeResult(quantity, method, raw, used_stop, per_share, detail)


def _require_equity(equity: Decimal | None) -> Decimal:
    if equity is None or equity <= 0:
        raise SizingError(f"sizing needs a positive account equity (net liquidation), got {equity}")
    return equity


def _atr_stop(side: OrderSide, entry: Decimal, atr: Decimal | None, sizing: Sizing) -> Decimal:
    if atr is None or atr <= 0:
        raise SizingError(f"risk-based sizing needs a stop: the signal has none and no ATR({sizing.atr_period})")
    distance = sizing.atr_multiple * atr
    return entry - distance if side is OrderSide.BUY else entry + distance
