# Bar-frame helpers shared by the broker implementations: IB bar sizes and durations, windows, resampling.
from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from typing import Final
from zoneinfo import ZoneInfo

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


# Longest duration IB serves in one request per bar size (IB's "valid duration and bar size" table; the simulator
# enforces the same). Bars of a day or longer have no limit here.
_MAX_CHUNK: Final[tuple[tuple[int, tuple[int, str]], ...]] = (
    (5, (1800, "S")),
    (10, (3600, "S")),
    (30, (14400, "S")),
    (60, (28800, "S")),
    (120, (1, "D")),
    (180, (2, "D")),
    (1800, (7, "D")),
    (86400, (30, "D")),
)
_DURATION_UNIT_S: Final[dict[str, int]] = {"S": 1, "D": 86400, "W": 7 * 86400, "M": 31 * 86400, "Y": 365 * 86400}


def duration_parts(duration: str) -> tuple[int, str]:
    """Split an IB duration into ``(count, unit)``; raise ``InputError`` when malformed."""
    parse_duration(duration)
    count, unit = duration.split()
    return int(count), unit


def duration_seconds(duration: str) -> int:
    """Return IB's nominal length of ``duration`` in seconds (a month is 31 days, a year 365)."""
    count, unit = duration_parts(duration)
    return count * _DURATION_UNIT_S[unit]


def max_chunk(bar_size: BarSize) -> tuple[int, str] | None:
    """Return the longest ``(count, unit)`` one request may span for ``bar_size``; None = no limit."""
    seconds = bar_timedelta(bar_size).total_seconds()
    for below, chunk in _MAX_CHUNK:
        if seconds < below:
            return chunk
    return None


_NEW_YORK: Final = ZoneInfo("America/New_York")


def last_weekdays(end: datetime, count: int) -> list[date]:
    """Return the ``count`` weekdays up to ``end``'s New York date, newest first (holidays are not skipped)."""
    day = end.astimezone(_NEW_YORK).date()
    days: list[date] = []
    while len(days) < count:
        if day.weekday() < 5:
            days.append(day)
        day -= timedelta(days=1)
    return days


def end_of_weekday_before(end: datetime, count: int) -> datetime:
    """Return 23:59:59 New York (as UTC) of the weekday before the ``count`` weekdays ending at ``end``."""
    earliest = last_weekdays(end, count)[-1]
    day = earliest - timedelta(days=1)
    while day.weekday() >= 5:
        day -= timedelta(days=1)
    return datetime.combine(day, time(23, 59, 59), _NEW_YORK).astimezone(UTC)
