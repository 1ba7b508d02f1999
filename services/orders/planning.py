"""THE order decision: what one BUY/SELL signal asks the broker for, given the strategy's position (pure).

Live, dry-run and replay all call :func:`plan_order`; they differ only in where the bars, the equity and the
fills come from. The rules (``README.md``, "Orders"):

* **One position per strategy, no pyramiding** (the position the caller passes is the strategy's own: live, the
  fills of its orders, :func:`services.positions.strategy_position`; replay, its book). A BUY when flat opens a
  long; a SELL when flat opens a short only with ``risk.allow_short`` (otherwise nothing is placed). A BUY while
  long (a SELL while short) places nothing: the position was sized when it was opened, adding to it would be a
  second, unsized bet.
* **A signal against the position closes it, whole, and does nothing more.** A SELL on a long sells the long's
  quantity (never the sizing rule's), a BUY on a short buys it back; the close carries no bracket (the position's
  protective orders are cancelled once it fills). The opposite side is opened only by a later signal, from flat.
* **Opening** is sized by :func:`services.orders.sizing.size_order` (capped by ``max_notional_per_order`` and
  ``max_position``) and judged by the risk checks that need nothing but the order and the strategy
  (:data:`ORDER_CHECKS`). The entry carries the signal's stop and target as a bracket. The send-time gate
  (:func:`services.orders.submit.send`) still runs every check before a live order reaches a broker.
* **Time exit** (:func:`plan_time_exit`, only with ``risk.max_holding_bars``): a position held that many bars
  (:func:`held_bars`, its entry's bar included) is closed, whole, by a market order, whatever the signal says;
  it is decided before the signal's own order (which is then not placed) and carries no bracket.
* **Trailing stop** (``risk.trailing_stop``): the bracket's stop is a TRAIL (``OrderPlan.trail``) starting at
  the signal's stop, else one trail from the entry.
* **Prices**: a LMT's limit is the signal's entry rounded to ``min_tick`` in the direction that never pays more
  (BUY down, SELL up); the bracket's stop and target are rounded the same way for the exit's side.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Final

import pandas as pd

from models.bars import FLAGGED
from models.enums import OrderSide, OrderType, SignalAction, TimeInForce
from models.strategy import Risk
from services.market import Trail
from services.orders.risk import CheckResult, ProposedOrder, RiskContext, evaluate
from services.orders.sizing import SizingError, average_true_range, round_price, size_order
from services.settings import TradingSettings
from services.signals import Signal

__all__ = ["ORDER_CHECKS", "OrderPlan", "held_bars", "plan_order", "plan_time_exit", "sizing_atr"]

# The checks of services.orders.risk.evaluate that need no account, clock or broker.
ORDER_CHECKS: Final = ("max_notional_per_order", "max_position", "short_selling")


@dataclass(frozen=True)
class OrderPlan:
    """What a signal asks for. ``quantity == 0``: nothing is placed, ``refusal`` (and ``note``) say why."""

    side: OrderSide
    closing: Decimal  # the part that closes the current position
    opening: Decimal  # the part that opens a new one
    order_type: OrderType
    tif: TimeInForce
    limit: Decimal | None  # LMT price (tick-rounded), None for MKT
    reference: Decimal  # the signal's entry: what a MKT order is judged at
    stop: Decimal | None  # the opening part's protective stop (tick-rounded for the exit side); a trail's start
    target: Decimal | None  # its take-profit
    note: str  # what was planned, or why nothing was
    refusal: CheckResult | None = None
    sizing: str = ""  # how the opening quantity was sized (the sizing rule's arithmetic), "" when none was
    trail: Trail | None = None  # the stop trails the price by this (risk.trailing_stop); None: a fixed STP

    @property
    def quantity(self) -> Decimal:
        return self.closing + self.opening

    @property
    def placed(self) -> bool:
        return self.quantity > 0


def sizing_atr(frame: pd.DataFrame, period: int) -> Decimal | None:
    """The ATR risk-based sizing falls back to: over the frame's usable (non-flagged) bars."""
    usable = frame.loc[~frame[FLAGGED].astype(bool)] if FLAGGED in frame.columns else frame
    return average_true_range(usable, period)


def plan_order(
    signal: Signal,
    risk: Risk,
    *,
    symbol: str,
    position: Decimal,
    equity: Decimal | None,
    atr: Callable[[], Decimal | None],
    size_increment: Decimal,
    min_tick: Decimal,
) -> OrderPlan:
    """Plan the order of a BUY/SELL ``signal`` for a strategy holding ``position`` (signed shares).

    ``equity`` is what percent / risk-based sizing sizes against (the account's net liquidation, or the replay's
    cash plus marked position); ``atr`` is called only when risk-based sizing needs the ATR stop (the signal has
    no stop). Never raises for a refusal: the plan then has quantity 0 and a ``refusal``.
    """
    if signal.action not in (SignalAction.BUY, SignalAction.SELL):
        raise ValueError(f"no order for a {signal.action.value} signal")
    if signal.entry is None:
        raise ValueError("a BUY/SELL signal carries an entry")
    buy = signal.action is SignalAction.BUY
    side = OrderSide.BUY if buy else OrderSide.SELL
    exit_side = OrderSide.SELL if buy else OrderSide.BUY
    entry = signal.entry
    limit = round_price(entry, min_tick, side) if risk.order_type is OrderType.LIMIT else None

    trail = _trail(risk)

    def plan(closing: Decimal, opening: Decimal, note: str, refusal: CheckResult | None = None) -> OrderPlan:
        def exit_price(value: Decimal | None) -> Decimal | None:
            return None if opening == 0 or value is None else round_price(value, min_tick, exit_side)

        stop = signal.stop
        if trail is not None and stop is None:  # a trailing stop starts one trail away from the entry
            stop = entry - trail.distance(entry) if buy else entry + trail.distance(entry)
        return OrderPlan(
            side,
            closing,
            opening,
            risk.order_type,
            risk.tif,
            limit,
            entry,
            exit_price(stop),
            exit_price(signal.target),
            note,
            refusal,
            trail=trail if opening > 0 else None,
        )

    def nothing(check: str, why: str) -> OrderPlan:
        return plan(Decimal(0), Decimal(0), why, CheckResult(check, False, why))

    if not order_possible(buy, position, allow_short=risk.allow_short):
        if position != 0:
            return nothing("pyramiding", f"already {'long' if buy else 'short'} {_qty(abs(position))}: no pyramiding")
        return nothing("short_selling", "SELL while flat and shorting not allowed: nothing to do")
    what = f"{side.value} {{qty}} {risk.order_type.value}" + (f" @ {limit}" if limit is not None else "")
    if position != 0:
        closing = abs(position)
        return plan(closing, Decimal(0), what.format(qty=_qty(closing)) + f" (close {_qty(closing)})")
    try:
        sized = size_order(
            risk.sizing,
            side=side,
            entry=entry,
            size_increment=size_increment,
            equity=equity,
            stop=signal.stop,
            atr=atr() if signal.stop is None else None,
            max_notional=risk.max_notional_per_order,
            max_quantity=risk.max_position,
        )
    except SizingError as exc:
        return nothing("sizing", f"not opened: {exc}")
    proposed = ProposedOrder(symbol, side, sized.quantity, limit if limit is not None else entry)
    decision = evaluate(risk, proposed, _ORDER_ONLY)
    failed = [c for c in decision.checks if c.name in ORDER_CHECKS and not c.passed]
    if failed:
        detail = "; ".join(f"{c.name}: {c.detail}" for c in failed)
        return nothing(failed[0].name, f"not opened: risk {detail}")
    opening = _qty(sized.quantity)
    planned = plan(Decimal(0), sized.quantity, what.format(qty=opening) + f" (open {opening})")
    return replace(planned, sizing=f"{sized.method.value}: {sized.detail}")


def order_possible(buy: bool, position: Decimal, *, allow_short: bool) -> bool:
    """False when :func:`plan_order` places nothing for a BUY (``buy``) or SELL signal whatever its levels: a BUY
    while long or a SELL while short (no pyramiding), a SELL while flat without ``risk.allow_short``."""
    if position * (1 if buy else -1) > 0:
        return False
    return position != 0 or buy or allow_short


def held_bars(bar_ends: Sequence[datetime], opened_at: datetime) -> int:
    """How many bars a position opened (first filled) at ``opened_at`` has been held: the completed bars (their
    ends, ascending) that end after its opening fill, the bar it filled in included. A fill at a bar's end is in
    the next bar (a market order decided on a bar's close fills at the next bar's open, as in the replay)."""
    return len(bar_ends) - bisect_right(bar_ends, opened_at)


def plan_time_exit(risk: Risk, *, position: Decimal, held: int, reference: Decimal) -> OrderPlan | None:
    """The time exit of a strategy holding ``position`` for ``held`` bars, or None (no rule, flat, not yet due).

    With ``risk.max_holding_bars`` = N, a position held N bars is closed whole by a DAY market order (judged at
    ``reference``, the last close), without a bracket; the protective orders go once it has filled.
    """
    limit = risk.max_holding_bars
    if limit is None or position == 0 or held < limit:
        return None
    side = OrderSide.SELL if position > 0 else OrderSide.BUY
    closing = abs(position)
    note = f"{side.value} {_qty(closing)} MKT (close {_qty(closing)}): time exit, held {held} bars (max {limit})"
    return OrderPlan(side, closing, Decimal(0), OrderType.MARKET, TimeInForce.DAY, None, reference, None, None, note)


def _trail(risk: Risk) -> Trail | None:
    spec = risk.trailing_stop
    return None if spec is None else Trail(amount=spec.amount, percent=spec.percent)


def _qty(value: Decimal) -> Decimal:
    """``10.000000`` (a numeric column) as ``10``; fractional quantities keep their digits."""
    return value.quantize(Decimal(1)) if value == value.to_integral_value() else value.normalize()


def _order_only_context() -> RiskContext:
    # Only the checks in ORDER_CHECKS are read; the others need a live account, clock or broker (the send-time
    # gate runs them). The opening part is judged as a fresh position: a plan opens only from flat.
    return RiskContext(
        trading=TradingSettings(),
        broker_is_simulated=True,
        account_code=None,
        kill_switch_engaged=False,
        kill_switch_reason=None,
        daily_loss_tripped=False,
        reconciliation_problem=None,
        market_open=True,
        position=Decimal(0),
        pending_quantity=Decimal(0),
        open_orders=0,
        orders_today=0,
        daily_pnl=Decimal(0),
        buying_power=None,
    )


_ORDER_ONLY: Final = _order_only_context()
