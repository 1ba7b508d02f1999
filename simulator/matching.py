"""Order matching against the data's bars, by the market model's rules (:mod:`services.market`).

Fill rules (:mod:`services.market.matching`; bars are the instrument's finest series at the clock; a bar is seen
once it is complete):

* **At placement** the "current bar" is the last completed bar.
  - MKT fills at its close (plus ``slippage`` against the trader) unless ``mkt_fill="next_open"``.
  - With ``placement_fill=False`` nothing fills or triggers at placement: every order waits for the next bar.
  - LMT fills at that close if marketable (buy: close <= limit; sell: close >= limit).
  - STP / STP LMT trigger if the close is already through the stop (buy: close >= stop; sell: close <= stop); a
    triggered STP fills like MKT, a triggered STP LMT like LMT.
* **On advance**, for every newly completed bar in order (within a bar: what fills at the open first, then
  stops, then limits; bracket children released by a fill on the bar then work for the rest of it):
  - MKT (still open) fills at the bar's open (+ slippage).
  - LMT buy fills if low <= limit at min(open, limit); sell if high >= limit at max(open, limit).
  - STP buy triggers if high >= stop and fills at max(open, stop) (+ slippage); sell mirrors it.
  - STP LMT triggers like STP; then fills at max(open, stop) if that is within the limit, else rests as LMT.
  - TRAIL (trailing amount in auxPrice, or trailingPercent; the stop starts at trailStopPrice, required here):
    fills like a STP at its current stop; a bar that does not reach it moves the stop to high - trail (sell;
    buy: low + trail) when tighter, never back (:func:`services.market.matching.trail_stop`).
  - Intraday bars outside regular trading hours (:mod:`services.market.sessions`: NYSE sessions, holidays and
    early closes included) are skipped unless the order has ``outsideRth``.
  - DAY orders expire (Cancelled) at the close of the session they were placed for (after its last bar), and at
    the latest at the first bar of a later session.
* **Partial fills**: with ``participation`` set, at most ``floor(participation * bar volume)`` shares trade per bar
  (shared by all orders on that bar); the rest waits for later bars. ``None`` = no volume limit.
* Prices are rounded to the 0.01 tick.

Commission (:mod:`services.market.commission`, IB fixed, US stocks): USD 0.005 per share, at least USD 1.00 and
at most 1% of trade value per order; charged per fill as the increase of the order's cumulative commission.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

import pandas as pd

from models.enums import OrderSide, OrderType
from services import market
from services.market import Slippage, fill_commission
from simulator.catalog import BarSeries, is_intraday
from simulator.state import SimExecution, SimOrder, SimOrderStatus, SimState


@dataclass(frozen=True)
class Bar(market.Bar):
    """One completed bar with its volume budget bucket ``key``: (conId, series bar size, index)."""

    key: tuple[int, str, int] = field(kw_only=True)


def bar_at(series: BarSeries, index: int, con_id: int) -> Bar:
    row = series.frame.iloc[index]
    start = pd.Timestamp(row["timestamp"]).to_pydatetime()
    ohlcv = (row["open"], row["high"], row["low"], row["close"], row["volume"])
    intraday = is_intraday(series.bar_size)
    return Bar.from_floats(
        start, series.bar_end(index), ohlcv, intraday=intraday, key=(con_id, series.bar_size.value, index)
    )


class Matcher:
    """Decides fills; the server books them and sends the messages."""

    def __init__(
        self, participation: float | None, slippage: Decimal, mkt_fill: str, *, placement_fill: bool = True
    ) -> None:
        if participation is not None and not 0 < participation <= 1:
            raise ValueError("partial_fill_participation must be in (0, 1] or None")
        if mkt_fill not in ("close", "next_open"):
            raise ValueError("mkt_fill must be 'close' or 'next_open'")
        self.participation = None if participation is None else Decimal(repr(float(participation)))
        self.slippage = Slippage(per_share=slippage)
        self.mkt_fill = mkt_fill
        self.placement_fill = placement_fill
        self._used: dict[tuple[int, str, int], Decimal] = {}

    def available(self, bar: Bar) -> Decimal | None:
        budget = market.participation_budget(bar.volume, self.participation)
        if budget is None:
            return None
        return max(budget - self._used.get(bar.key, Decimal(0)), Decimal(0))

    def take(self, order: SimOrder, bar: Bar) -> Decimal:
        """Quantity this order may fill on ``bar`` (and reserve it)."""
        avail = self.available(bar)
        qty = order.remaining if avail is None else min(order.remaining, avail)
        if qty > 0 and avail is not None:
            self._used[bar.key] = self._used.get(bar.key, Decimal(0)) + qty
        return qty

    def immediate_price(self, order: SimOrder, bar: Bar) -> Decimal | None:
        """Fill price at placement against the current bar, or None if the order rests."""
        if not self.placement_fill:
            return None
        kind = OrderType(order.order_type)
        if kind is OrderType.TRAIL:  # at placement a trailing stop is a STP at its trailStopPrice
            price, order.triggered = market.immediate_price(
                OrderType.STOP, OrderSide(order.action), bar.close, limit=None, stop=order.trail_stop_price,
                triggered=False, slippage=self.slippage,
            )  # fmt: skip
            return price
        price, order.triggered = market.immediate_price(
            kind,
            OrderSide(order.action),
            bar.close,
            limit=order.lmt_price,
            stop=order.aux_price,
            triggered=order.triggered,
            slippage=self.slippage,
        )
        if kind is OrderType.MARKET and self.mkt_fill == "next_open":
            return None
        return price

    def bar_price(self, order: SimOrder, bar: Bar) -> Decimal | None:
        """Fill price on a newly completed bar, or None. A trailing stop's stop follows the bar it survived."""
        if order.order_type == OrderType.TRAIL.value:
            assert order.trail_stop_price is not None  # placement requires it
            trail = market.Trail(amount=order.aux_price, percent=order.trailing_percent)
            price, order.trail_stop_price = market.trailing_price(
                OrderSide(order.action), bar, stop=order.trail_stop_price, trail=trail, quantum=market.TICK,
                slippage=self.slippage,
            )  # fmt: skip
            order.triggered = price is not None
            return price
        price, order.triggered = market.bar_price(
            OrderType(order.order_type),
            OrderSide(order.action),
            bar,
            limit=order.lmt_price,
            stop=order.aux_price,
            triggered=order.triggered,
            slippage=self.slippage,
        )
        return price


def book_fill(state: SimState, order: SimOrder, qty: Decimal, price: Decimal, when: datetime) -> SimExecution:
    """Apply one fill to the order, the position and the cash; return the execution (commission included)."""
    value_before = order.avg_fill_price * order.filled
    commission = fill_commission(order.filled, value_before, qty, price)
    new_filled = order.filled + qty
    order.avg_fill_price = (value_before + qty * price) / new_filled
    order.filled = new_filled
    order.last_fill_price = price
    order.commission_paid += commission
    if order.remaining == 0:
        order.status = SimOrderStatus.FILLED
        order.completed_at = when
        order.completed_status = "Filled"
    else:
        order.status = SimOrderStatus.SUBMITTED
    realized = state.apply_fill(order.account, order.con_id, qty * order.sign, price, commission)
    execution = SimExecution(
        exec_id=state.new_exec_id(order.perm_id),
        perm_id=order.perm_id,
        order_id=order.order_id,
        client_id=order.client_id,
        con_id=order.con_id,
        account=order.account,
        side="BOT" if order.sign > 0 else "SLD",
        shares=qty,
        price=price,
        time=when,
        cum_qty=order.filled,
        avg_price=order.avg_fill_price,
        order_ref=order.order_ref,
        commission=commission,
        realized_pnl=realized,
    )
    state.executions.append(execution)
    return execution
