"""Order matching against the data's bars, and IB's fixed US-stock commissions.

Fill rules (bars are the instrument's finest series at the clock; a bar is seen once it is complete):

* **At placement** the "current bar" is the last completed bar.
  - MKT fills at its close (plus ``slippage`` against the trader) unless ``mkt_fill="next_open"``.
  - LMT fills at that close if marketable (buy: close <= limit; sell: close >= limit).
  - STP / STP LMT trigger if the close is already through the stop (buy: close >= stop; sell: close <= stop); a
    triggered STP fills like MKT, a triggered STP LMT like LMT.
* **On advance**, for every newly completed bar in order:
  - MKT (still open) fills at the bar's open (+ slippage).
  - LMT buy fills if low <= limit at min(open, limit); sell if high >= limit at max(open, limit).
  - STP buy triggers if high >= stop and fills at max(open, stop) (+ slippage); sell mirrors it.
  - STP LMT triggers like STP; then fills at max(open, stop) if that is within the limit, else rests as LMT.
  - Intraday bars outside 09:30-16:00 New York are skipped unless the order has ``outsideRth``.
  - DAY orders expire (Cancelled) at the first bar of a later session than the one they were placed for.
* **Partial fills**: with ``participation`` set, at most ``floor(participation * bar volume)`` shares trade per bar
  (shared by all orders on that bar); the rest waits for later bars. ``None`` = no volume limit.
* Prices are rounded to the 0.01 tick.

Commission (IB fixed, US stocks): USD 0.005 per share, at least USD 1.00 and at most 1% of trade value per order;
charged per fill as the increase of the order's cumulative commission.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Final

import pandas as pd

from simulator.catalog import EASTERN, BarSeries, is_intraday
from simulator.state import SimExecution, SimOrder, SimOrderStatus, SimState

TICK: Final = Decimal("0.01")
PER_SHARE: Final = Decimal("0.005")
MIN_PER_ORDER: Final = Decimal("1.00")
MAX_RATE: Final = Decimal("0.01")


@dataclass(frozen=True)
class Bar:
    """One completed bar, prices as tick-rounded Decimals."""

    start: datetime
    end: datetime
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: float
    key: tuple[int, str, int]  # (conId, series bar size, index): volume budget bucket
    intraday: bool

    @property
    def session(self) -> date:
        if not self.intraday:
            return self.start.date()  # date-labelled at 00:00 UTC
        return self.start.astimezone(EASTERN).date()

    @property
    def in_rth(self) -> bool:
        if not self.intraday:
            return True
        local = self.start.astimezone(EASTERN)
        minutes = local.hour * 60 + local.minute
        return local.weekday() < 5 and 570 <= minutes < 960


def to_price(value: float) -> Decimal:
    return Decimal(repr(float(value))).quantize(TICK, rounding=ROUND_HALF_EVEN)


def bar_at(series: BarSeries, index: int, con_id: int) -> Bar:
    row = series.frame.iloc[index]
    start = pd.Timestamp(row["timestamp"]).to_pydatetime()
    return Bar(
        start=start,
        end=series.bar_end(index),
        open=to_price(row["open"]),
        high=to_price(row["high"]),
        low=to_price(row["low"]),
        close=to_price(row["close"]),
        volume=float(row["volume"]),
        key=(con_id, series.bar_size.value, index),
        intraday=is_intraday(series.bar_size),
    )


def order_session(placed_at: datetime) -> date:
    """The session a DAY order belongs to: today's if placed before 16:00 New York, else the next weekday."""
    local = placed_at.astimezone(EASTERN)
    day = local.date()
    if local.hour >= 16:
        day += timedelta(days=1)
    while day.weekday() >= 5:
        day += timedelta(days=1)
    return day


def total_commission(quantity: Decimal, value: Decimal) -> Decimal:
    if quantity <= 0:
        return Decimal(0)
    return min(max(quantity * PER_SHARE, MIN_PER_ORDER), (value * MAX_RATE).quantize(Decimal("0.0001")))


class Matcher:
    """Decides fills; the server books them and sends the messages."""

    def __init__(self, participation: float | None, slippage: Decimal, mkt_fill: str) -> None:
        if participation is not None and not 0 < participation <= 1:
            raise ValueError("partial_fill_participation must be in (0, 1] or None")
        if mkt_fill not in ("close", "next_open"):
            raise ValueError("mkt_fill must be 'close' or 'next_open'")
        self.participation = participation
        self.slippage = slippage
        self.mkt_fill = mkt_fill
        self._used: dict[tuple[int, str, int], Decimal] = {}

    def available(self, bar: Bar) -> Decimal | None:
        if self.participation is None:
            return None
        budget = Decimal(int(self.participation * bar.volume))
        return max(budget - self._used.get(bar.key, Decimal(0)), Decimal(0))

    def take(self, order: SimOrder, bar: Bar) -> Decimal:
        """Quantity this order may fill on ``bar`` (and reserve it)."""
        avail = self.available(bar)
        qty = order.remaining if avail is None else min(order.remaining, avail)
        if qty > 0 and avail is not None:
            self._used[bar.key] = self._used.get(bar.key, Decimal(0)) + qty
        return qty

    def _slip(self, order: SimOrder, price: Decimal) -> Decimal:
        return price + self.slippage * order.sign

    def immediate_price(self, order: SimOrder, bar: Bar) -> Decimal | None:
        """Fill price at placement against the current bar, or None if the order rests."""
        close = bar.close
        if order.order_type in ("STP", "STP LMT") and not order.triggered:
            stop = order.aux_price or Decimal(0)
            if (order.sign > 0 and close >= stop) or (order.sign < 0 and close <= stop):
                order.triggered = True
            else:
                return None
        if order.order_type in ("MKT", "STP"):
            if order.order_type == "MKT" and self.mkt_fill == "next_open":
                return None
            return self._slip(order, close)
        lmt = order.lmt_price or Decimal(0)
        if (order.sign > 0 and close <= lmt) or (order.sign < 0 and close >= lmt):
            return close
        return None

    def bar_price(self, order: SimOrder, bar: Bar) -> Decimal | None:
        """Fill price on a newly completed bar, or None."""
        if order.order_type == "MKT":
            return self._slip(order, bar.open)
        if order.order_type in ("STP", "STP LMT") and not order.triggered:
            stop = order.aux_price or Decimal(0)
            if order.sign > 0 and bar.high >= stop:
                touched = max(bar.open, stop)
            elif order.sign < 0 and bar.low <= stop:
                touched = min(bar.open, stop)
            else:
                return None
            order.triggered = True
            if order.order_type == "STP":
                return self._slip(order, touched)
            lmt = order.lmt_price or Decimal(0)
            if (order.sign > 0 and touched <= lmt) or (order.sign < 0 and touched >= lmt):
                return touched
            return None
        if order.order_type == "STP":  # triggered earlier, not yet (fully) filled: market
            return self._slip(order, bar.open)
        lmt = order.lmt_price or Decimal(0)
        if order.sign > 0 and bar.low <= lmt:
            return min(bar.open, lmt)
        if order.sign < 0 and bar.high >= lmt:
            return max(bar.open, lmt)
        return None


def book_fill(state: SimState, order: SimOrder, qty: Decimal, price: Decimal, when: datetime) -> SimExecution:
    """Apply one fill to the order, the position and the cash; return the execution (commission included)."""
    value_before = order.avg_fill_price * order.filled
    commission = total_commission(order.filled + qty, value_before + qty * price) - total_commission(
        order.filled, value_before
    )
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
