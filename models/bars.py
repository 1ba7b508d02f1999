"""The canonical bar frame: the one shape every loader, validator, broker and indicator uses.

A pandas DataFrame with one row per bar, sorted by ``timestamp`` (bar start, timezone-aware UTC):

==============  ===================  ==========================================
column          dtype                meaning
==============  ===================  ==========================================
timestamp       datetime64[ns, UTC]  bar start
open/high/low/  float64              prices in the instrument's currency
close
volume          float64              shares (or the source's unit), >= 0
adj_close       float64              optional: dividend/split adjusted close
wap             float64              optional: volume-weighted average price
trade_count     float64              optional: number of trades in the bar
==============  ===================  ==========================================

Prices are floats here because indicators and charts are numeric work; money that is booked
(orders, fills, P&L) is ``Decimal`` and converted at that boundary.
"""

from __future__ import annotations

from typing import Final

TIMESTAMP: Final = "timestamp"
REQUIRED_COLUMNS: Final[tuple[str, ...]] = (TIMESTAMP, "open", "high", "low", "close", "volume")
OPTIONAL_COLUMNS: Final[tuple[str, ...]] = ("adj_close", "wap", "trade_count")
PRICE_COLUMNS: Final[tuple[str, ...]] = ("open", "high", "low", "close")
ALL_COLUMNS: Final[tuple[str, ...]] = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
