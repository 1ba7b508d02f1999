"""One market model: bars, sessions, matching rules, IB's commission schedule and a position book.

Pure (no Prefect, no SQLAlchemy, no ib_async, no pandas): callers convert their bars to :class:`Bar` first. Used by
the TWS simulator (:mod:`simulator.matching`, :mod:`simulator.state`), the in-memory broker
(:mod:`services.broker.memory`), the replay (:mod:`services.replay.engine`) and the positions service
(:mod:`services.positions`).

* :mod:`services.market.bars`: :class:`Bar` (Decimal prices) and :func:`to_price` (tick rounding).
* :mod:`services.market.sessions`: regular trading hours and DAY-order sessions from :mod:`services.calendar`.
* :mod:`services.market.matching`: when and at which price MKT / LMT / STP / STP LMT / TRAIL orders fill on
  bars (and how a trailing stop follows the price).
* :mod:`services.market.commission`: IB's fixed US-stock commission.
* :mod:`services.market.book`: one position's quantity, average cost and realized P&L.
"""

from __future__ import annotations

from services.market.bars import TICK, Bar, price_ticks, to_price
from services.market.book import Position
from services.market.commission import fill_commission, ib_fixed_commission
from services.market.matching import (
    NO_SLIPPAGE,
    Slippage,
    Trail,
    bar_price,
    bracket_exit,
    immediate_price,
    participation_budget,
    trail_stop,
    trailing_price,
)

__all__ = [
    "NO_SLIPPAGE",
    "TICK",
    "Bar",
    "Position",
    "Slippage",
    "Trail",
    "bar_price",
    "bracket_exit",
    "fill_commission",
    "ib_fixed_commission",
    "immediate_price",
    "participation_budget",
    "price_ticks",
    "to_price",
    "trail_stop",
    "trailing_price",
]
