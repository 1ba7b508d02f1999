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

from models.enums import BarSize

TIMESTAMP: Final = "timestamp"
FLAGGED: Final = "flagged"  # the column validation adds: True on a bar it flagged (kept, not used)
REQUIRED_COLUMNS: Final[tuple[str, ...]] = (TIMESTAMP, "open", "high", "low", "close", "volume")
OPTIONAL_COLUMNS: Final[tuple[str, ...]] = ("adj_close", "wap", "trade_count")
PRICE_COLUMNS: Final[tuple[str, ...]] = ("open", "high", "low", "close")
ALL_COLUMNS: Final[tuple[str, ...]] = REQUIRED_COLUMNS + OPTIONAL_COLUMNS

SECONDS_PER_DAY: Final = 86_400

# Fixed-length IB bar sizes in seconds. WEEK_1 and MONTH_1 are calendar periods, not durations: each user
# adds the approximation it needs (see ``models.strategy.BAR_SECONDS``).
FIXED_BAR_SECONDS: Final[dict[BarSize, int]] = {
    BarSize.SEC_1: 1,
    BarSize.SEC_5: 5,
    BarSize.SEC_10: 10,
    BarSize.SEC_15: 15,
    BarSize.SEC_30: 30,
    BarSize.MIN_1: 60,
    BarSize.MIN_2: 120,
    BarSize.MIN_3: 180,
    BarSize.MIN_5: 300,
    BarSize.MIN_10: 600,
    BarSize.MIN_15: 900,
    BarSize.MIN_20: 1_200,
    BarSize.MIN_30: 1_800,
    BarSize.HOUR_1: 3_600,
    BarSize.HOUR_2: 7_200,
    BarSize.HOUR_3: 10_800,
    BarSize.HOUR_4: 14_400,
    BarSize.HOUR_8: 28_800,
    BarSize.DAY_1: SECONDS_PER_DAY,
}
