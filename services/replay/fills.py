"""The replay's fill model: when and at which price an order or a stop/target fills on historical bars.

Conventions (documented here, used by the engine and re-implemented independently in the tests):

* A decision is made on the CLOSE of bar ``i``; its order can fill from bar ``i + 1`` on.
* **Market** orders fill at the next bar's open, worsened by ``slippage_bps`` (a BUY pays
  ``open * (1 + bps / 10_000)``, a SELL receives ``open * (1 - bps / 10_000)``).
* **Limit** orders fill when a bar crosses the limit: a BUY when ``low <= limit`` at ``min(open, limit)``, a SELL
  when ``high >= limit`` at ``max(open, limit)`` (the same rule as the in-memory broker,
  :func:`services.broker.fills.bar_price`), without slippage (a limit never fills worse than its price). A DAY
  limit lives for the next bar only; a GTC limit until it fills or the next decision replaces it.
* **Stops and targets** of an open position are checked on every bar after the entry fill, the entry bar
  included (a market entry fills at the open, the rest of the bar comes after it). A long exits at
  ``min(open, stop)`` when ``low <= stop`` (slipped like a market order: a stop becomes one), else at
  ``max(open, target)`` when ``high >= target``; a short mirrors. When both are touched in one bar the stop wins
  (the conservative reading of a bar whose intrabar path is unknown).
* Pending orders are processed before stops/targets on each bar.
* **Commissions** follow IB's fixed schedule (:func:`services.broker.fills.ib_fixed_commission`), per order.
* Prices are ``Decimal`` with 4 places (adjusted historical prices are not on the exchange's tick grid).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Final

from models.enums import OrderSide, OrderType, TimeInForce
from services.broker.fills import ib_fixed_commission

__all__ = ["PRICE_Q", "FillModel", "PendingOrder", "price"]

PRICE_Q: Final = Decimal("0.0001")
_BPS: Final = Decimal(10_000)


def price(value: float) -> Decimal:
    """A float bar price as a 4-place ``Decimal`` (via its shortest repr, half-even)."""
    return Decimal(repr(float(value))).quantize(PRICE_Q, rounding=ROUND_HALF_EVEN)


@dataclass(frozen=True)
class PendingOrder:
    """An order decided on bar ``decided_at`` (index), waiting for a later bar."""

    side: OrderSide
    quantity: Decimal
    order_type: OrderType
    tif: TimeInForce
    limit: Decimal | None
    decided_at: int
    closing: Decimal  # the part of ``quantity`` that closes the current position
    stop: Decimal | None  # stop / target for the position the opening part creates
    target: Decimal | None
    reason: str


@dataclass(frozen=True)
class FillModel:
    """Prices and commissions for replay fills; ``slippage_bps`` applies to market orders and triggered stops."""

    slippage_bps: Decimal = Decimal(0)

    def slipped(self, side: OrderSide, base: Decimal) -> Decimal:
        factor = self.slippage_bps / _BPS
        worse = base * (1 + factor) if side is OrderSide.BUY else base * (1 - factor)
        return worse.quantize(PRICE_Q, rounding=ROUND_HALF_EVEN)

    def order_fill(self, order: PendingOrder, open_: Decimal, high: Decimal, low: Decimal) -> Decimal | None:
        """Return the fill price of ``order`` on a bar, or ``None`` when it does not fill there."""
        if order.order_type is OrderType.MARKET:
            return self.slipped(order.side, open_)
        assert order.limit is not None
        if order.side is OrderSide.BUY:
            return min(open_, order.limit) if low <= order.limit else None
        return max(open_, order.limit) if high >= order.limit else None

    def exit_fill(
        self,
        long: bool,
        stop: Decimal | None,
        target: Decimal | None,
        open_: Decimal,
        high: Decimal,
        low: Decimal,
    ) -> tuple[Decimal, str] | None:
        """Return ``(price, "stop" | "target")`` when the bar touches the position's stop or target."""
        if long:
            if stop is not None and low <= stop:
                return self.slipped(OrderSide.SELL, min(open_, stop)), "stop"
            if target is not None and high >= target:
                return max(open_, target), "target"
            return None
        if stop is not None and high >= stop:
            return self.slipped(OrderSide.BUY, max(open_, stop)), "stop"
        if target is not None and low <= target:
            return min(open_, target), "target"
        return None

    @staticmethod
    def commission(quantity: Decimal, fill_price: Decimal) -> Decimal:
        return ib_fixed_commission(quantity, quantity * fill_price)
