"""Bars as the market model sees them: Decimal prices on a price grid.

A bar is seen once it is complete (``end``): intraday bars at start + bar length, date-labelled (daily and longer)
bars at 16:00 New York of their date. Callers compute ``end``; the model only compares prices and times.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Final, Self

import numpy as np

from services.market import sessions

TICK: Final = Decimal("0.01")  # US stocks' tick; the replay's adjusted prices use Decimal("0.0001")


def to_price(value: float, quantum: Decimal = TICK) -> Decimal:
    """Round a float price to ``quantum`` (half-even), via its shortest repr (so 100.1 is 100.10, not 100.0999...)."""
    return Decimal(repr(float(value))).quantize(quantum, rounding=ROUND_HALF_EVEN)


def price_ticks(
    values: np.ndarray[Any, Any], quantum: Decimal = TICK
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """:func:`to_price` of every value, as a whole number of ``quantum`` (int64), and where it is finite.

    ``rint(value / quantum)`` is :func:`to_price`'s result except within rounding error of a half tick; those values
    (and the non-finite ones, 0 here) are rounded by :func:`to_price` itself, so the result is the same exactly.
    """
    scale = float(1 / quantum)
    if scale != int(scale):
        raise ValueError(f"quantum {quantum} is not 1 / an integer")
    finite = np.isfinite(values)
    with np.errstate(all="ignore"):
        scaled = np.where(finite, values, 0.0) * scale
        ticks = np.rint(scaled)
        near_half = np.abs(np.abs(scaled - np.floor(scaled)) - 0.5) <= np.maximum(1e-9, np.abs(scaled) * 1e-13)
    out = ticks.astype(np.int64)
    for i in np.flatnonzero(near_half & finite):
        out[i] = int(to_price(float(values[i]), quantum) / quantum)
    return out, finite


@dataclass(frozen=True)
class Bar:
    """One completed bar. ``intraday`` is False for date-labelled bars (their ``start`` is 00:00 UTC that date)."""

    start: datetime
    end: datetime
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    intraday: bool = True

    @classmethod
    def from_floats(
        cls,
        start: datetime,
        end: datetime,
        ohlcv: tuple[float, float, float, float, float],
        *,
        intraday: bool = True,
        quantum: Decimal = TICK,
        **extra: Any,
    ) -> Self:
        """A bar from float open/high/low/close/volume: prices rounded to ``quantum``, volume via its repr."""
        open_, high, low, close, volume = ohlcv
        o, h, lo, c = (to_price(p, quantum) for p in (open_, high, low, close))
        return cls(start, end, o, h, lo, c, Decimal(repr(float(volume))), intraday, **extra)

    @property
    def session(self) -> date:
        """The trading session the bar belongs to (its New York date; a date-labelled bar's own date)."""
        return sessions.bar_session(self.start, intraday=self.intraday)

    @property
    def in_rth(self) -> bool:
        """True when the bar starts in regular trading hours (date-labelled bars always are)."""
        return not self.intraday or sessions.in_rth(self.start)
