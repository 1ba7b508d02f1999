"""One position's book: quantity, average cost and realized P&L, the way IB reports stock positions.

Conventions (the simulator, the in-memory broker and the positions service all book this way):

* A fill that opens or adds to a position raises the average cost by its commission: ``avg_cost`` is
  ``(cost of the shares + their commissions) / shares`` (IB's ``avgCost`` for stocks).
* A fill that reduces the position realizes ``(price - avg_cost) * closed shares`` (sign-flipped for a short)
  minus the fill's whole commission; the average cost of what remains does not change.
* A fill that flips the position (closes it and opens the other side in one) charges its whole commission to
  the closing part; the new position opens at the fill price, without commission.
* Flat means ``avg_cost == 0``.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal


@dataclass(kw_only=True)
class Position:
    """Quantity (signed: short < 0), average cost per share (commissions included) and realized P&L."""

    quantity: Decimal = Decimal(0)
    avg_cost: Decimal = Decimal(0)
    realized_pnl: Decimal = Decimal(0)
    commissions: Decimal = Decimal(0)

    def fill(self, signed_qty: Decimal, price: Decimal, commission: Decimal) -> Decimal | None:
        """Book a fill of ``signed_qty`` (BUY > 0) at ``price``; return the P&L it realized, None if it closed none."""
        self.commissions += commission
        old = self.quantity
        if old == 0 or (old > 0) == (signed_qty > 0):
            total = self.avg_cost * abs(old) + abs(signed_qty) * price + commission
            self.quantity = old + signed_qty
            self.avg_cost = total / abs(self.quantity)
            return None
        closing = min(abs(signed_qty), abs(old))
        direction = Decimal(1) if old > 0 else Decimal(-1)
        realized = (price - self.avg_cost) * closing * direction - commission
        self.realized_pnl += realized
        self.quantity = old + signed_qty
        if self.quantity == 0:
            self.avg_cost = Decimal(0)
        elif (self.quantity > 0) != (old > 0):  # flipped: the rest opens a new position at the fill price
            self.avg_cost = price
        return realized

    def unrealized(self, mark: Decimal | None) -> Decimal:
        """Open P&L at ``mark`` against the average cost (0 when flat or unmarked)."""
        if mark is None or self.quantity == 0:
            return Decimal(0)
        return (mark - self.avg_cost) * self.quantity
