"""Aggregate finer bars into coarser ones (canonical frame in, canonical frame out).

Per output bar: first open, max high, min low, last close, summed volume, volume-weighted ``wap``
(plain mean of the bars' WAPs when the bar has no volume), summed ``trade_count``, last
``adj_close``. Only bars present in the input are aggregated: no empty bars are invented.

Labels are bar starts:

- sub-daily sizes up to one hour: the UTC timestamp floored to the size (New York offsets are whole
  hours, so this equals the exchange-local floor);
- 2, 3, 4 and 8 hours: floored on the exchange's local wall clock (``tz``, America/New_York), so a
  4-hour bar starts at 00:00, 04:00, 08:00, ... New York time;
- 1 day: the exchange session date (the date in ``tz``) at 00:00 UTC, the same label the loader gives
  daily files. Pre-market and after-hours bars belong to their New York calendar date;
- 1 week / 1 month: the first session date present in the ISO week (Monday to Sunday) / month.

Input that is itself date-labelled (every timestamp 00:00 UTC, e.g. daily bars) is grouped by its
UTC date, since that date already is the session date.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import pandas as pd

from models.bars import OPTIONAL_COLUMNS, REQUIRED_COLUMNS, SECONDS_PER_DAY, TIMESTAMP
from models.enums import BarSize
from services.bars.sizes import (
    BAR_SIZE_RANK,
    BAR_SIZE_SECONDS,
    NS_PER_SECOND,
    all_midnight_utc,
    epoch_ns,
    infer_bar_size,
    modal_step_seconds,
)
from services.errors import InputError

EXCHANGE_TZ: Final = "America/New_York"
_NS_PER_DAY: Final = SECONDS_PER_DAY * NS_PER_SECOND


def resample_bars(frame: pd.DataFrame, bar_size: BarSize, *, tz: str = EXCHANGE_TZ) -> pd.DataFrame:
    """Return ``frame`` aggregated into ``bar_size`` bars (see the module docstring for labels).

    Raises ``InputError`` if a column is missing, or if ``bar_size`` is finer than the input or not a
    whole multiple of the input's step.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise InputError("resample", f"frame lacks column(s) {', '.join(missing)}")
    if frame.empty:
        return frame.copy()
    frame = _sorted(frame)
    stamps = frame[TIMESTAMP]
    _check_target(stamps, bar_size)
    keys, labels_of = _group_keys(stamps, bar_size, tz)
    order = None
    if len(keys) > 1 and np.any(np.diff(keys) < 0):  # only possible around DST changes
        order = np.argsort(keys, kind="stable")
        keys = keys[order]
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    ends = np.r_[starts[1:], len(keys)] - 1

    def col(name: str) -> np.ndarray:
        values: np.ndarray = frame[name].to_numpy(dtype=np.float64)
        return values if order is None else values[order]

    volume = col("volume")
    total_volume = np.add.reduceat(volume, starts)
    out: dict[str, object] = {
        TIMESTAMP: labels_of(keys[starts], starts if order is None else order[starts]),
        "open": col("open")[starts],
        "high": np.maximum.reduceat(col("high"), starts),
        "low": np.minimum.reduceat(col("low"), starts),
        "close": col("close")[ends],
        "volume": total_volume,
    }
    for name in OPTIONAL_COLUMNS:
        if name not in frame.columns:
            continue
        values = col(name)
        if name == "adj_close":
            out[name] = values[ends]
        elif name == "trade_count":
            out[name] = np.add.reduceat(values, starts)
        else:  # wap
            counts = np.diff(np.r_[starts, len(values)])
            weighted = np.add.reduceat(values * volume, starts)
            plain = np.add.reduceat(values, starts) / counts
            with np.errstate(divide="ignore", invalid="ignore"):
                out[name] = np.where(total_volume > 0, weighted / total_volume, plain)
    result = pd.DataFrame(out)
    result[TIMESTAMP] = result[TIMESTAMP].astype("datetime64[ns, UTC]")
    return result


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    ns = epoch_ns(frame[TIMESTAMP])
    if len(ns) > 1 and np.any(np.diff(ns) < 0):
        return frame.sort_values(TIMESTAMP, kind="stable").reset_index(drop=True)
    return frame


def _check_target(stamps: pd.Series, bar_size: BarSize) -> None:
    source = infer_bar_size(stamps)
    step = modal_step_seconds(stamps)
    if source is not None and BAR_SIZE_RANK[source] > BAR_SIZE_RANK[bar_size]:
        raise InputError("resample", f"cannot resample {source} bars into finer {bar_size} bars")
    target = BAR_SIZE_SECONDS.get(bar_size)
    if target is not None and target < SECONDS_PER_DAY and step is not None and target % step:
        raise InputError("resample", f"{bar_size} is not a whole multiple of the input step ({step} s)")


class _Labeller:
    # Maps group keys back to UTC bar-start labels.
    def __init__(self, kind: str, tz: str, day_ns: np.ndarray | None = None):
        self.kind = kind
        self.tz = tz
        self.day_ns = day_ns

    def __call__(self, keys: np.ndarray, first_rows: np.ndarray) -> pd.DatetimeIndex:
        if self.kind == "utc":
            return pd.to_datetime(keys, unit="ns", utc=True)
        if self.kind == "local":
            wall = pd.to_datetime(keys, unit="ns")
            return wall.tz_localize(self.tz, ambiguous=True, nonexistent="shift_forward").tz_convert("UTC")
        assert self.day_ns is not None  # "first_session": label = session date of the group's first bar
        return pd.to_datetime(self.day_ns[first_rows], unit="ns", utc=True)


def _group_keys(stamps: pd.Series, bar_size: BarSize, tz: str) -> tuple[np.ndarray, _Labeller]:
    ns = epoch_ns(stamps)
    seconds = BAR_SIZE_SECONDS.get(bar_size)
    if seconds is not None and seconds <= 3600:
        step = seconds * NS_PER_SECOND
        return ns - ns % step, _Labeller("utc", tz)
    if all_midnight_utc(stamps):
        wall = ns
    else:
        local = pd.DatetimeIndex(stamps).tz_convert(tz).tz_localize(None).as_unit("ns")
        wall = np.asarray(local.asi8)
    if seconds is not None and seconds < SECONDS_PER_DAY:
        step = seconds * NS_PER_SECOND
        return wall - wall % step, _Labeller("local", tz)
    day_ns = wall - wall % _NS_PER_DAY
    if bar_size is BarSize.DAY_1:
        return day_ns, _Labeller("utc", tz)
    days = day_ns // _NS_PER_DAY
    if bar_size is BarSize.WEEK_1:
        keys = (days + 3) // 7  # 1970-01-01 was a Thursday: weeks start on Monday
    else:
        keys = days.astype("datetime64[D]").astype("datetime64[M]").astype(np.int64)
    return keys, _Labeller("first_session", tz, day_ns)
