"""IB's fixed commission for US stocks and ETFs.

USD 0.005 per share, at least USD 1.00 and at most 1% of the trade value per order (exchange, regulatory and
clearing fees are not modelled). An order filled in parts is charged per fill the increase of the order's
cumulative commission, so the parts add up to the whole order's commission.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Final

PER_SHARE: Final = Decimal("0.005")
MIN_PER_ORDER: Final = Decimal("1.00")
MAX_PCT_OF_VALUE: Final = Decimal("0.01")
_CAP_Q: Final = Decimal("0.0001")


def ib_fixed_commission(quantity: Decimal, value: Decimal) -> Decimal:
    """Return IB's fixed-rate commission for a whole order of ``quantity`` shares worth ``value``."""
    if quantity <= 0:
        return Decimal(0)
    return min(max(quantity * PER_SHARE, MIN_PER_ORDER), (value * MAX_PCT_OF_VALUE).quantize(_CAP_Q))


def fill_commission(filled: Decimal, filled_value: Decimal, quantity: Decimal, price: Decimal) -> Decimal:
    """Commission of a fill of ``quantity`` at ``price`` after ``filled`` shares worth ``filled_value``."""
    before = ib_fixed_commission(filled, filled_value)
    return ib_fixed_commission(filled + quantity, filled_value + quantity * price) - before
