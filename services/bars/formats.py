"""The bar file formats the loader knows, and how a format is recognised from the first lines.

Every format is read by column NAME (never by position), except the headerless NinjaTrader export
whose layout is fixed. Timestamp conventions per format:

====================  =========  ===========================  ==========================  ===========
format                delimiter  header / layout              naive timestamps are in     label
====================  =========  ===========================  ==========================  ===========
yahoo                 ``,``      Date,Open,High,Low,Close,    dates only (session date)   bar start
                                 Adj Close,Volume
zipline               ``,``      day,open,high,low,close,     dates only (session date)   bar start
                                 volume
ib                    ``,``      Date,Open,High,Low,Close,    ``Europe/Berlin`` (*)       bar start
                                 Volume,TradeCount,WAP,
                                 HasGaps; date
                                 ``YYYYMMDD  HH:MM:SS``
ninjatrader           ``;``      no header:                   ``UTC``                     bar END
                                 ``yyyyMMdd HHmmss;o;h;l;c;v``                            (shifted)
mplfinance_intraday   ``,``      Date,Open,Close,High,Low,    ``America/New_York``        bar start
                                 Volume; date ``m/d/Y H:M``
csv                   ``,``      any header with a date /     required (``source_tz``)    bar start
                                 timestamp column and OHLCV   unless ISO with an offset
====================  =========  ===========================  ==========================  ===========

(*) IB's ``formatDate=1`` strings are in the TWS login's local time zone. The sample file
(``ib-spy-5min-20120627.csv``) was recorded on a CEST login, so the default is ``Europe/Berlin``
(CET/CEST); pass ``source_tz`` for files from a TWS running in another zone. A trailing zone name
after the time (``20120627 10:10:00 US/Eastern``, newer TWS) is honoured.

Daily files carry dates, not times: a daily bar is labelled with its session date at 00:00 UTC
(bar start = the session date; the exchange's own open time is not implied).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from models.bars import TIMESTAMP

NINJATRADER_COLUMNS: Final[tuple[str, ...]] = (TIMESTAMP, "open", "high", "low", "close", "volume")


@dataclass(frozen=True)
class FormatSpec:
    """How one file format is laid out and how its timestamps are to be read."""

    name: str
    delimiter: str
    has_header: bool
    date_formats: tuple[str, ...]  # strptime formats tried in order; "" means ISO 8601 (pandas)
    default_tz: str | None  # zone of naive timestamps; None: date-only files or source_tz required
    bar_end_labelled: bool = False
    description: str = ""


FORMATS: Final[dict[str, FormatSpec]] = {
    spec.name: spec
    for spec in (
        FormatSpec("yahoo", ",", True, ("%Y-%m-%d",), None, description="Yahoo Finance daily export"),
        FormatSpec("zipline", ",", True, ("%Y-%m-%d",), None, description="zipline test CSV (day,open,...)"),
        FormatSpec(
            "ib",
            ",",
            True,
            ("%Y%m%d  %H:%M:%S", "%Y%m%d %H:%M:%S", "%Y%m%d"),
            "Europe/Berlin",
            description="IB TWS historical bars, formatDate=1 (TWS login local time)",
        ),
        FormatSpec(
            "ninjatrader",
            ";",
            False,
            ("%Y%m%d %H%M%S", "%Y%m%d"),
            "UTC",
            bar_end_labelled=True,
            description="NinjaTrader export, no header, UTC, bar-end labels",
        ),
        FormatSpec(
            "mplfinance_intraday",
            ",",
            True,
            ("%m/%d/%Y %H:%M",),
            "America/New_York",
            description="mplfinance intraday CSV (Date,Open,Close,High,Low,Volume), New York time",
        ),
        FormatSpec("csv", ",", True, ("",), None, description="generic CSV with named OHLCV columns, ISO dates"),
    )
}

# Header names (lower-cased, spaces/underscores/dashes removed) -> canonical column.
COLUMN_ALIASES: Final[dict[str, str]] = {
    "timestamp": TIMESTAMP,
    "date": TIMESTAMP,
    "day": TIMESTAMP,
    "datetime": TIMESTAMP,
    "time": TIMESTAMP,
    "open": "open",
    "high": "high",
    "low": "low",
    "close": "close",
    "volume": "volume",
    "adjclose": "adj_close",
    "adjustedclose": "adj_close",
    "wap": "wap",
    "vwap": "wap",
    "tradecount": "trade_count",
    "barcount": "trade_count",
    "trades": "trade_count",
}

_NT_FIRST_LINE = re.compile(r"^\d{8}( \d{6})?;[^;]*;[^;]*;[^;]*;[^;]*;[^;]*$")
_US_DATETIME = re.compile(r"^\d{1,2}/\d{1,2}/\d{4} \d{1,2}:\d{2}$")
_IB_DATE = re.compile(r"^\d{8}(\s+\d{2}:\d{2}:\d{2}(\s+\S+)?)?$")
_CANDIDATE_DELIMITERS: Final[tuple[str, ...]] = (",", ";", "\t", "|")


def normalise_header(name: str) -> str:
    """Return the alias key of a header cell: lower case without spaces, underscores or dashes."""
    return re.sub(r"[\s_\-]", "", name.strip().strip('"').lower())


def detect_format(first_line: str, second_line: str | None) -> str | None:
    """Return the format name recognised from the first two lines, or None."""
    line = first_line.strip()
    if _NT_FIRST_LINE.match(line):
        return "ninjatrader"
    if "," not in line:
        return None
    headers = [normalise_header(h) for h in line.split(",")]
    if TIMESTAMP not in {COLUMN_ALIASES.get(h) for h in headers}:
        return None
    first_value = second_line.split(",")[0].strip() if second_line else ""
    if {"hasgaps", "wap", "barcount", "tradecount"} & set(headers) or _IB_DATE.match(first_value):
        return "ib"
    if headers[0] == "day":
        return "zipline"
    if _US_DATETIME.match(first_value):
        return "mplfinance_intraday"
    if "adjclose" in headers and re.match(r"^\d{4}-\d{2}-\d{2}$", first_value):
        return "yahoo"
    return "csv"


def guess_delimiter(line: str) -> str | None:
    """Return the most frequent candidate delimiter in ``line``, or None."""
    counts = {d: line.count(d) for d in _CANDIDATE_DELIMITERS}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] > 0 else None
