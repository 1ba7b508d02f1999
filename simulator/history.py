"""Historical bars (reqHistoricalData, message 20 -> 17): validation, windowing, aggregation, wire rows.

Rules (IB's where IB has one; documented in docs/simulator.md):

* ``barSizeSetting`` must be one of IB's spellings (:class:`models.enums.BarSize`) -> else error 321.
* ``durationStr`` is ``"<n> S|D|W|M|Y"`` -> else error 162. The bar size must be at least IB's minimum for the
  duration (1800 S: 1 secs, 3600 S: 5 secs, 14400 S: 10 secs, 28800 S: 30 secs, 1 D: 1 min, 2 D: 2 mins,
  1 W: 3 mins, 1 M: 30 mins, longer: 1 day) -> else 162 "Time length exceed max.".
* ``whatToShow`` TRADES, MIDPOINT (same prices, volume/WAP/count -1 as IB sends for MIDPOINT) or ADJUSTED_LAST
  (prices scaled by ``adj_close / close`` when the file has ``adj_close``; IB requires an empty endDateTime) ->
  anything else 321.
* ``endDateTime`` ``""`` is the market clock's now; later ends are clipped to now. Formats: ``YYYYmmdd HH:MM:SS
  <zone>``, ``YYYYmmdd-HH:MM:SS`` (UTC), ``YYYYmmdd HH:MM:SS`` (New York, the simulated TWS's zone), ``YYYYmmdd``.
* Window: ``S`` seconds back from the end; ``D`` on intraday bars = the last n weekdays up to the end's New York
  date (IB counts sessions; holidays are not skipped here), on daily and longer bars = n calendar days;
  ``W`` 7n days; ``M`` n months; ``Y`` n years.
* ``useRTH=1`` keeps intraday source bars starting in regular trading hours (:func:`services.market.sessions.in_rth`:
  NYSE sessions 09:30-16:00 New York, holidays and early closes included).
* Dates: daily and longer bars as ``YYYYmmdd`` (ib_async -> ``datetime.date``); intraday bars with formatDate 1
  as ``YYYYmmdd HH:MM:SS US/Eastern`` and with formatDate 2 as epoch seconds (both -> aware datetimes).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd

from models.enums import BarSize
from services.market import sessions
from simulator.catalog import EASTERN, EXCHANGE_TZ, BarSeries, Instrument, bar_seconds, is_intraday
from simulator.wire import fmt

HMDS: Final = "Historical Market Data Service error message:"
SUPPORTED_WHAT: Final = frozenset({"TRADES", "MIDPOINT", "ADJUSTED_LAST"})
_DURATION: Final = re.compile(r"^\s*(\d+)\s+([SDWMY])\s*$")
_DAY: Final = 86_400
# (max duration in seconds, smallest bar size allowed), from IB's "valid duration and bar size" table.
_MIN_BAR_FOR_DURATION: Final[tuple[tuple[int, int], ...]] = (
    (60, 1),
    (1800, 1),
    (3600, 5),
    (14_400, 10),
    (28_800, 30),
    (_DAY, 60),
    (2 * _DAY, 120),
    (7 * _DAY, 180),
    (31 * _DAY, 1800),
)
_UNIT_SECONDS: Final[dict[str, int]] = {"S": 1, "D": _DAY, "W": 7 * _DAY, "M": 31 * _DAY, "Y": 365 * _DAY}


class HistoryError(Exception):
    """A request IB would refuse: ``code`` is 162 or 321, ``message`` IB-like text."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class HistoryRequest:
    req_id: int
    end: str
    bar_size: str
    duration: str
    use_rth: bool
    what_to_show: str
    format_date: int
    keep_up_to_date: bool = False

    def identity(self, con_id: int) -> tuple[object, ...]:
        return (con_id, self.end, self.bar_size, self.duration, self.use_rth, self.what_to_show, self.format_date)


@dataclass(frozen=True)
class HistoryResult:
    start: datetime
    end: datetime
    rows: list[list[str]]  # date, open, high, low, close, volume, wap, count


def parse_request(fields: list[str]) -> HistoryRequest:
    """Parse message 20 (no version field; the contract is 12 fields at 2..13)."""
    flag = fields[18] if len(fields) > 18 else "0"
    return HistoryRequest(
        req_id=int(fields[1]),
        end=fields[15],
        bar_size=fields[16],
        duration=fields[17],
        use_rth=flag not in ("", "0"),
        what_to_show=fields[19].upper(),
        format_date=int(fields[20] or 1),
        keep_up_to_date=fields[4] != "BAG" and len(fields) > 21 and fields[21] == "1",
    )


def parse_end(text: str, now: datetime) -> datetime:
    """Return the request's end in UTC (``""`` = now)."""
    text = text.strip()
    if not text:
        return now
    try:
        if re.fullmatch(r"\d{8}-\d{2}:\d{2}:\d{2}", text):
            return datetime.strptime(text, "%Y%m%d-%H:%M:%S").replace(tzinfo=UTC)
        if re.fullmatch(r"\d{8}", text):
            return datetime.strptime(text + " 23:59:59", "%Y%m%d %H:%M:%S").replace(tzinfo=EASTERN).astimezone(UTC)
        parts = text.split()
        if len(parts) == 3:
            zone = ZoneInfo(parts[2])
            return datetime.strptime(parts[0] + " " + parts[1], "%Y%m%d %H:%M:%S").replace(tzinfo=zone).astimezone(UTC)
        if len(parts) == 2:
            return datetime.strptime(text, "%Y%m%d %H:%M:%S").replace(tzinfo=EASTERN).astimezone(UTC)
    except (ValueError, ZoneInfoNotFoundError):
        pass
    raise HistoryError(321, f"Error validating request.-'bP' : cause - End date/time format is invalid: {text!r}")


def parse_bar_size(text: str) -> BarSize:
    try:
        return BarSize(text.strip())
    except ValueError:
        legal = ", ".join(b.value for b in BarSize)
        raise HistoryError(
            321,
            f"Error validating request.-'bK' : cause - Historical data bar size setting is invalid. "
            f"Legal ones are: {legal}",
        ) from None


def parse_duration(text: str) -> tuple[int, str]:
    match = _DURATION.match(text)
    if not match or int(match.group(1)) <= 0:
        raise HistoryError(162, f"{HMDS}Invalid duration format {text!r}; use '<integer> <S|D|W|M|Y>'")
    return int(match.group(1)), match.group(2)


def check_limits(count: int, unit: str, bar_size: BarSize) -> None:
    """Refuse bar sizes that are too small for the duration (IB's step-size table)."""
    seconds = count * _UNIT_SECONDS[unit]
    smallest = 86_400
    for max_duration, min_bar in _MIN_BAR_FOR_DURATION:
        if seconds <= max_duration:
            smallest = min_bar
            break
    if bar_seconds(bar_size) < smallest:
        raise HistoryError(162, f"{HMDS}Time length exceed max.")


def _rth_mask(frame: pd.DataFrame) -> np.ndarray:
    starts = pd.DatetimeIndex(frame["timestamp"]).to_pydatetime()
    return np.fromiter((sessions.in_rth(t) for t in starts), dtype=bool, count=len(starts))


def _session_dates(frame: pd.DataFrame) -> np.ndarray:
    return np.asarray(pd.DatetimeIndex(frame["timestamp"]).tz_convert(EXCHANGE_TZ).normalize().tz_localize(None))


def _last_weekdays(end: datetime, count: int) -> np.ndarray:
    """The last ``count`` weekdays up to ``end``'s New York date (holidays are not skipped)."""
    day = end.astimezone(EASTERN).date()
    days: list[date] = []
    while len(days) < count:
        if day.weekday() < 5:
            days.append(day)
        day -= timedelta(days=1)
    return np.array([np.datetime64(d, "ns") for d in days])


def _window_start(end: datetime, count: int, unit: str) -> datetime:
    if unit == "S":
        return end - timedelta(seconds=count)
    if unit == "D":
        return end - timedelta(days=count)
    if unit == "W":
        return end - timedelta(days=7 * count)
    offset = pd.DateOffset(months=count) if unit == "M" else pd.DateOffset(years=count)
    start: datetime = (pd.Timestamp(end) - offset).to_pydatetime()
    return start


def build_bars(series: BarSeries, target: BarSize, end: datetime, count: int, unit: str, use_rth: bool) -> pd.DataFrame:
    """Return the canonical bars of ``target`` size from ``series`` that fall in the request window."""
    frame = series.completed(end)
    if use_rth and is_intraday(series.bar_size):
        frame = frame[_rth_mask(frame)]
    if frame.empty:
        return frame
    if unit == "D" and is_intraday(target):
        dates = _session_dates(frame)
        frame = frame[np.isin(dates, _last_weekdays(end, count))]
    if series.bar_size != target:
        from services.bars.resample import resample_bars

        frame = resample_bars(frame.reset_index(drop=True), target)
    if not (unit == "D" and is_intraday(target)):
        start = pd.Timestamp(_window_start(end, count, unit))
        frame = frame[frame["timestamp"] >= start]
    return frame.reset_index(drop=True)


def _adjusted(frame: pd.DataFrame) -> pd.DataFrame:
    if "adj_close" not in frame.columns:
        return frame
    frame = frame.copy()
    factor = frame["adj_close"] / frame["close"]
    for col in ("open", "high", "low", "close"):
        frame[col] = frame[col] * factor
    return frame


def _numbers(values: np.ndarray) -> list[str]:
    return [fmt(float(v)) for v in values]


def _optional(frame: pd.DataFrame, column: str, as_int: bool) -> list[str]:
    if column not in frame.columns:
        return ["-1"] * len(frame)
    values = frame[column].to_numpy(dtype=float)
    return ["-1" if v != v else (str(int(v)) if as_int else fmt(float(v))) for v in values]


def format_rows(frame: pd.DataFrame, target: BarSize, what: str, format_date: int, zone: str) -> list[list[str]]:
    """Turn canonical bars into message-17 rows (date, open, high, low, close, volume, wap, barCount)."""
    stamps = pd.DatetimeIndex(frame["timestamp"])
    if not is_intraday(target):
        dates = list(stamps.tz_convert("UTC").strftime("%Y%m%d"))
    elif format_date == 2:
        dates = [str(v // 1_000_000_000) for v in stamps.as_unit("ns").asi8]
    else:
        dates = [f"{d} {zone}" for d in stamps.tz_convert(ZoneInfo(zone)).strftime("%Y%m%d %H:%M:%S")]
    prices = [_numbers(frame[c].to_numpy(dtype=float)) for c in ("open", "high", "low", "close")]
    if what == "MIDPOINT":  # IB sends -1 for volume, WAP and count of MIDPOINT bars
        volume = wap = count = ["-1"] * len(frame)
    else:
        volume = _numbers(frame["volume"].to_numpy(dtype=float))
        wap = _optional(frame, "wap", as_int=False)
        count = _optional(frame, "trade_count", as_int=True)
    return [list(row) for row in zip(dates, *prices, volume, wap, count, strict=True)]


def serve(inst: Instrument, req: HistoryRequest, now: datetime) -> HistoryResult:
    """Validate ``req`` and return its bars at market time ``now``; raise :class:`HistoryError` when IB would."""
    target = parse_bar_size(req.bar_size)
    count, unit = parse_duration(req.duration)
    check_limits(count, unit, target)
    if req.what_to_show not in SUPPORTED_WHAT:
        raise HistoryError(
            321, f"Error validating request.-'bQ' : cause - whatToShow {req.what_to_show!r} is not supported here"
        )
    if req.what_to_show == "ADJUSTED_LAST" and req.end.strip():
        raise HistoryError(321, "Error validating request.-'bQ' : cause - End date not supported with adjusted last")
    end = min(parse_end(req.end, now), now)
    for series in inst.sources_for(target):
        frame = build_bars(series, target, end, count, unit, req.use_rth)
        if frame.empty:
            continue
        if req.what_to_show == "ADJUSTED_LAST":
            frame = _adjusted(frame)
        rows = format_rows(frame, target, req.what_to_show, req.format_date, inst.time_zone_id)
        start = pd.Timestamp(frame["timestamp"].iloc[0]).to_pydatetime()
        return HistoryResult(start, end, rows)
    what = {"TRADES": "Trades", "MIDPOINT": "Midpoint", "ADJUSTED_LAST": "Adjusted_last"}[req.what_to_show]
    raise HistoryError(162, f"{HMDS}HMDS query returned no data: {inst.symbol}@{inst.exchange} {what}")
