"""Bar sizes as durations, and inferring a bar size from a timestamp column."""

from __future__ import annotations

from typing import Final

import numpy as np
import pandas as pd

from models.bars import FIXED_BAR_SECONDS, SECONDS_PER_DAY
from models.enums import BarSize

NS_PER_SECOND: Final = 1_000_000_000

# Fixed-length bar sizes in seconds (the shared table). WEEK_1 and MONTH_1 are calendar periods, not durations.
BAR_SIZE_SECONDS: Final[dict[BarSize, int]] = FIXED_BAR_SECONDS
_BY_SECONDS: Final[dict[int, BarSize]] = {s: b for b, s in BAR_SIZE_SECONDS.items()}

# Rank for "coarser than" comparisons (a week and a month are longer than any fixed size).
BAR_SIZE_RANK: Final[dict[BarSize, int]] = {
    **BAR_SIZE_SECONDS,
    BarSize.WEEK_1: 7 * SECONDS_PER_DAY,
    BarSize.MONTH_1: 31 * SECONDS_PER_DAY,
}

INTRADAY_SIZES: Final[frozenset[BarSize]] = frozenset(b for b, s in BAR_SIZE_SECONDS.items() if s < SECONDS_PER_DAY)


def is_intraday(bar_size: BarSize) -> bool:
    """Return True for bar sizes shorter than one day."""
    return bar_size in INTRADAY_SIZES


def epoch_ns(timestamps: pd.Series) -> np.ndarray:
    """Return the timestamps as int64 nanoseconds since the epoch (UTC for tz-aware input)."""
    return np.asarray(pd.DatetimeIndex(timestamps).as_unit("ns").asi8)


def all_midnight_utc(timestamps: pd.Series) -> bool:
    """Return True if every timestamp is 00:00:00 UTC (a date-labelled daily/weekly/monthly series)."""
    values = epoch_ns(timestamps)
    return bool(len(values) > 0 and not np.any(values % (SECONDS_PER_DAY * NS_PER_SECOND)))


def modal_step_seconds(timestamps: pd.Series) -> int | None:
    """Return the most frequent positive step between consecutive timestamps in seconds, or None."""
    values = epoch_ns(timestamps)
    if len(values) < 2:
        return None
    steps = np.diff(values)
    steps = steps[steps > 0]
    if len(steps) == 0:
        return None
    uniques, counts = np.unique(steps, return_counts=True)
    return int(uniques[int(np.argmax(counts))] // NS_PER_SECOND)


def infer_bar_size(timestamps: pd.Series) -> BarSize | None:
    """Return the bar size implied by the modal timestamp step, or None if none matches.

    Date-labelled series (all timestamps at 00:00 UTC) map to ``1 day`` (modal step one day),
    ``1 week`` (7 days) or ``1 month`` (28 to 35 days: first session of each month).
    """
    step = modal_step_seconds(timestamps)
    if step is None:
        return None
    if all_midnight_utc(timestamps):
        days = step // SECONDS_PER_DAY
        if days == 1:
            return BarSize.DAY_1
        if days == 7:
            return BarSize.WEEK_1
        if 28 <= days <= 35:
            return BarSize.MONTH_1
        return None
    return _BY_SECONDS.get(step)
