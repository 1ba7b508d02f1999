# Bar-frame helpers shared by the broker implementations: IB bar sizes and durations, windows, resampling.
from __future__ import annotations

import re
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Final

import numpy as np
import pandas as pd

from models.bars import ALL_COLUMNS, REQUIRED_COLUMNS, TIMESTAMP
from models.enums import BarSize
from services.errors import DataError, InputError

_UNIT_SECONDS: Final[dict[str, int]] = {
    "sec": 1,
    "secs": 1,
    "min": 60,
    "mins": 60,
    "hour": 3600,
    "hours": 3600,
    "day": 86400,
    "week": 7 * 86400,
}
_DURATION_RE: Final = re.compile(r"^\s*(\d+)\s+([SDWMY])\s*$")


def bar_timedelta(bar_size: BarSize) -> timedelta:
    """Return the nominal length of one bar (a month counts as 30 days)."""
    count, unit = str(bar_size.value).split()
    if unit == "month":
        return timedelta(days=30 * int(count))
    return timedelta(seconds=int(count) * _UNIT_SECONDS[unit])


def parse_duration(duration: str) -> pd.DateOffset:
    """Parse IB's ``durationStr`` ("60 S", "5 D", "2 W", "6 M", "1 Y") into a calendar offset."""
    m = _DURATION_RE.match(duration)
    if m is None:
        raise InputError("duration", f"not an IB duration: {duration!r} (expected e.g. '5 D', '1 Y')")
    n, unit = int(m.group(1)), m.group(2)
    match unit:
        case "S":
            return pd.DateOffset(seconds=n)
        case "D":
            return pd.DateOffset(days=n)
        case "W":
            return pd.DateOffset(weeks=n)
        case "M":
            return pd.DateOffset(months=n)
        case _:
            return pd.DateOffset(years=n)


def infer_bar_size(frame: pd.DataFrame) -> BarSize:
    """Return the bar size whose length is the most common step between timestamps."""
    if len(frame) < 2:
        return BarSize.DAY_1
    steps = frame[TIMESTAMP].diff().dropna()
    step = steps.mode().iloc[0] if not steps.empty else pd.Timedelta(days=1)
    best = BarSize.DAY_1
    best_err: float | None = None
    for size in BarSize:
        err = abs((bar_timedelta(size) - step.to_pytimedelta()).total_seconds())
        if best_err is None or err < best_err:
            best, best_err = size, err
    return best


def window(frame: pd.DataFrame, end: datetime, duration: str) -> pd.DataFrame:
    """Return bars with ``end - duration < timestamp <= end`` (bar start times, UTC)."""
    end_ts = pd.Timestamp(end).tz_convert("UTC")
    start_ts = end_ts - parse_duration(duration)
    ts = frame[TIMESTAMP]
    return frame.loc[(ts > start_ts) & (ts <= end_ts)].reset_index(drop=True)


def resample(frame: pd.DataFrame, bar_size: BarSize) -> pd.DataFrame:
    """Aggregate a finer canonical frame into ``bar_size`` bars (OHLC, summed volume, volume-weighted wap)."""
    rule = pd.Timedelta(bar_timedelta(bar_size))
    indexed = frame.set_index(TIMESTAMP)
    grouped = indexed.resample(rule, label="left", closed="left", origin="start_day")
    out = grouped.agg({"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"})
    if "wap" in indexed.columns:
        pv = (indexed["wap"] * indexed["volume"]).resample(rule, label="left", closed="left", origin="start_day")
        out["wap"] = pv.sum() / out["volume"].replace(0.0, np.nan)
    if "trade_count" in indexed.columns:
        out["trade_count"] = grouped["trade_count"].sum()
    out = out.dropna(subset=["open"]).reset_index()
    return out


def canonical(frame: pd.DataFrame) -> pd.DataFrame:
    """Return ``frame`` with canonical column order/dtypes, sorted by timestamp, fresh index."""
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"bar frame lacks columns {missing}")
    cols = [c for c in ALL_COLUMNS if c in frame.columns]
    out = frame[cols].copy()
    out[TIMESTAMP] = pd.to_datetime(out[TIMESTAMP], utc=True).astype("datetime64[ns, UTC]")
    for c in cols[1:]:
        out[c] = out[c].astype("float64")
    return out.sort_values(TIMESTAMP, kind="stable").reset_index(drop=True)


def to_decimal(value: float) -> Decimal:
    """Convert a float price to the Decimal it prints as (``135.12`` -> ``Decimal("135.12")``)."""
    return Decimal(repr(float(value)))
