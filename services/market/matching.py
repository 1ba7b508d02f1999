"""Matching rules: when and at which price an order fills against bars.

A bar is seen once it is complete. Rules (``side`` BUY / SELL; a SELL mirrors a BUY):

* **At placement** (:func:`immediate_price`), against the last completed bar's close:
  MKT fills at the close; LMT fills at the close when marketable (BUY ``close <= limit``, SELL
  ``close >= limit``); STP / STP LMT trigger when the close is through the stop (BUY ``close >= stop``, SELL
  ``close <= stop``), then fill like MKT / LMT.
* **On each newly completed bar** (:func:`bar_price`): MKT fills at the open; LMT BUY fills when
  ``low <= limit`` at ``min(open, limit)`` (SELL: ``high >= limit`` at ``max(open, limit)``); STP BUY triggers
  when ``high >= stop`` and fills at ``max(open, stop)`` (SELL: ``low <= stop`` at ``min(open, stop)``); a
  triggered STP LMT fills there if that is within the limit, else rests as a LMT; a STP triggered earlier
  fills at the open.
* **Slippage** (:class:`Slippage`) worsens the fills that trade as market orders: MKT and triggered STP.
  LMT and STP LMT never fill worse than their limit, so they are not slipped.
* **Brackets** (:func:`bracket_exit`): a position's stop (STP) and target (LMT) on one bar; the stop wins when
  both are touched.
* **Trailing stops** (TRAIL, :class:`Trail`): a STP whose stop follows the price by an amount or a percent, never
  back. On each bar the stop as it stood before the bar is checked first (as a STP, so a gap fills at the open);
  a bar that does not reach it then moves it to ``high - trail`` (a SELL; a BUY ``low + trail``) if that is
  tighter (:func:`trail_stop`, rounded to the tick). Bars do not tell whether the high came before the low, so a
  stop moved by a bar's high works from the next bar on.
* **Partial fills** (:func:`participation_budget`): with a participation rate at most
  ``floor(rate * volume)`` shares trade per bar, shared by all orders on that bar.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Final

from models.enums import OrderSide, OrderType
from services.market.bars import Bar

_BPS: Final = Decimal(10_000)
_MARKET_LIKE: Final = frozenset({OrderType.MARKET, OrderType.STOP})
_STOPS: Final = frozenset({OrderType.STOP, OrderType.STOP_LIMIT})


@dataclass(frozen=True)
class Slippage:
    """How much worse than the touched price a market-like fill trades.

    ``per_share`` is an absolute amount (the simulator's ``slippage``), ``bps`` a share of the price (the
    replay's ``slippage_bps``); a BUY pays ``price * (1 + bps / 10_000) + per_share``, a SELL receives
    ``price * (1 - bps / 10_000) - per_share``. With ``quantum`` the result is rounded to it (half-even).
    """

    per_share: Decimal = Decimal(0)
    bps: Decimal = Decimal(0)
    quantum: Decimal | None = None

    def apply(self, side: OrderSide, price: Decimal) -> Decimal:
        sign = 1 if side is OrderSide.BUY else -1
        worse = price
        if self.bps:
            worse = worse * (1 + sign * self.bps / _BPS)
        if self.per_share:
            worse = worse + sign * self.per_share
        return worse if self.quantum is None else worse.quantize(self.quantum, rounding=ROUND_HALF_EVEN)


NO_SLIPPAGE: Final = Slippage()


@dataclass(frozen=True)
class Trail:
    """How far a trailing stop follows the price: ``amount`` (currency per share) or ``percent`` of the price."""

    amount: Decimal | None = None
    percent: Decimal | None = None

    def __post_init__(self) -> None:
        if (self.amount is None) == (self.percent is None):
            raise ValueError("a trailing stop has an amount or a percent (exactly one)")
        if (self.amount is not None and self.amount <= 0) or (self.percent is not None and not 0 < self.percent < 100):
            raise ValueError("a trailing amount must be > 0 and a trailing percent in (0, 100)")

    def distance(self, price: Decimal) -> Decimal:
        return self.amount if self.amount is not None else price * (self.percent or Decimal(0)) / 100


def trail_stop(side: OrderSide, stop: Decimal, trail: Trail, bar: Bar, quantum: Decimal) -> Decimal:
    """The stop of a trailing ``side`` order after ``bar`` (it did not reach ``stop``): moved to the bar's extreme
    less the trail when that is tighter, rounded half-even to ``quantum``; never loosened."""
    if side is OrderSide.SELL:
        moved = (bar.high - trail.distance(bar.high)).quantize(quantum, rounding=ROUND_HALF_EVEN)
        return max(stop, moved)
    moved = (bar.low + trail.distance(bar.low)).quantize(quantum, rounding=ROUND_HALF_EVEN)
    return min(stop, moved)


def trailing_price(
    side: OrderSide, bar: Bar, *, stop: Decimal, trail: Trail, quantum: Decimal, slippage: Slippage = NO_SLIPPAGE
) -> tuple[Decimal | None, Decimal]:
    """Return ``(fill price or None, stop)`` for a working trailing stop on a newly completed ``bar``: it fills as
    a STP at ``stop``; otherwise the stop follows the bar (:func:`trail_stop`)."""
    hit, _ = bar_price(OrderType.STOP, side, bar, limit=None, stop=stop, triggered=False, slippage=slippage)
    return (hit, stop) if hit is not None else (None, trail_stop(side, stop, trail, bar, quantum))


def participation_budget(volume: Decimal, participation: Decimal | None) -> Decimal | None:
    """Return the shares one bar can fill in total (``None`` = unlimited)."""
    if participation is None:
        return None
    return Decimal(int(participation * volume))


def marketable(side: OrderSide, price: Decimal, limit: Decimal) -> bool:
    """True when trading at ``price`` is within ``limit`` (BUY at or below, SELL at or above)."""
    return price <= limit if side is OrderSide.BUY else price >= limit


def immediate_price(
    order_type: OrderType,
    side: OrderSide,
    close: Decimal,
    *,
    limit: Decimal | None,
    stop: Decimal | None,
    triggered: bool,
    slippage: Slippage = NO_SLIPPAGE,
) -> tuple[Decimal | None, bool]:
    """Return ``(fill price or None, triggered)`` for an order arriving after a bar closed at ``close``."""
    if order_type in _STOPS and not triggered:
        assert stop is not None
        if not ((side is OrderSide.BUY and close >= stop) or (side is OrderSide.SELL and close <= stop)):
            return None, False
        triggered = True
    if order_type in _MARKET_LIKE:
        return slippage.apply(side, close), triggered
    assert limit is not None
    return (close if marketable(side, close, limit) else None), triggered


def bar_price(
    order_type: OrderType,
    side: OrderSide,
    bar: Bar,
    *,
    limit: Decimal | None,
    stop: Decimal | None,
    triggered: bool,
    slippage: Slippage = NO_SLIPPAGE,
) -> tuple[Decimal | None, bool]:
    """Return ``(fill price or None, triggered)`` for a working order on a newly completed ``bar``."""
    buy = side is OrderSide.BUY
    if order_type is OrderType.MARKET or (order_type is OrderType.STOP and triggered):
        return slippage.apply(side, bar.open), triggered
    if order_type in _STOPS and not triggered:
        assert stop is not None
        if buy and bar.high >= stop:
            touched = max(bar.open, stop)
        elif not buy and bar.low <= stop:
            touched = min(bar.open, stop)
        else:
            return None, False
        if order_type is OrderType.STOP:
            return slippage.apply(side, touched), True
        assert limit is not None
        return (touched if marketable(side, touched, limit) else None), True
    assert limit is not None
    if buy and bar.low <= limit:
        return min(bar.open, limit), triggered
    if not buy and bar.high >= limit:
        return max(bar.open, limit), triggered
    return None, triggered


def bracket_exit(
    side: OrderSide,
    bar: Bar,
    *,
    stop: Decimal | None,
    target: Decimal | None,
    slippage: Slippage = NO_SLIPPAGE,
) -> tuple[Decimal, str] | None:
    """Return ``(price, "stop" | "target")`` when ``bar`` reaches a position's stop or target, else None.

    ``side`` is the exit's side (SELL for a long). The stop is a STP and the target a LMT, one-cancels-all; when
    both are touched in one bar the stop wins (the conservative reading of a bar whose intrabar path is unknown).
    """
    if stop is not None:
        hit, _ = bar_price(OrderType.STOP, side, bar, limit=None, stop=stop, triggered=False, slippage=slippage)
        if hit is not None:
            return hit, "stop"
    if target is not None:
        hit, _ = bar_price(OrderType.LIMIT, side, bar, limit=target, stop=None, triggered=False)
        if hit is not None:
            return hit, "target"
    return None
