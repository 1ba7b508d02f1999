"""Exchange session helpers over ``exchange_calendars`` (default exchange: XNYS, the NYSE).

Calendar objects are built once per (exchange, start year) and cached for the process.
``exchange_calendars`` is imported lazily: its import costs about 1.2 s (measured), which commands
that never touch a calendar should not pay.

Dates are session dates (``datetime.date``); instants are timezone-aware ``datetime`` in UTC.
Unknown exchanges, naive datetimes and dates outside the calendar's range raise ``InputError``.
"""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime
from typing import Any, Final

import pandas as pd

from services.errors import InputError

DEFAULT_EXCHANGE: Final = "XNYS"
CALENDAR_START: Final = date(1990, 1, 1)

_cache: dict[tuple[str, int], Any] = {}
_lock = threading.Lock()


def get_calendar(exchange: str = DEFAULT_EXCHANGE, *, start: date | None = None) -> Any:
    """Return the cached ``exchange_calendars`` calendar covering ``start`` (default 1990) to next year."""
    first_year = min((start or CALENDAR_START).year, CALENDAR_START.year)
    key = (exchange.upper(), first_year)
    with _lock:
        calendar = _cache.get(key)
        if calendar is None:
            calendar = _build(key[0], first_year)
            _cache[key] = calendar
    return calendar


def is_session(day: date, exchange: str = DEFAULT_EXCHANGE) -> bool:
    """Return True if ``day`` is a trading session of ``exchange``."""
    calendar = get_calendar(exchange, start=day)
    _check_bounds(calendar, day, exchange)
    return bool(calendar.is_session(pd.Timestamp(day)))


def is_open(ts_utc: datetime, exchange: str = DEFAULT_EXCHANGE) -> bool:
    """Return True if ``exchange`` is in its regular session at instant ``ts_utc`` (tz-aware)."""
    stamp = _utc(ts_utc)
    calendar = get_calendar(exchange, start=stamp.date())
    _check_bounds(calendar, stamp.date(), exchange)
    return bool(calendar.is_open_on_minute(stamp.floor("min")))


def next_open(ts_utc: datetime, exchange: str = DEFAULT_EXCHANGE) -> datetime:
    """Return the first regular-session open strictly after ``ts_utc``, in UTC."""
    stamp = _utc(ts_utc)
    calendar = get_calendar(exchange, start=stamp.date())
    _check_bounds(calendar, stamp.date(), exchange)
    result: datetime = calendar.next_open(stamp).tz_convert("UTC").to_pydatetime()
    return result


def session_bounds(day: date, exchange: str = DEFAULT_EXCHANGE) -> tuple[datetime, datetime]:
    """Return the (open, close) instants in UTC of session ``day`` (early closes included)."""
    calendar = get_calendar(exchange, start=day)
    _check_bounds(calendar, day, exchange)
    session = pd.Timestamp(day)
    if not calendar.is_session(session):
        raise InputError(exchange, f"{day.isoformat()} is not a session")
    opened: datetime = calendar.session_open(session).tz_convert("UTC").to_pydatetime()
    closed: datetime = calendar.session_close(session).tz_convert("UTC").to_pydatetime()
    return opened, closed


def sessions_between(start: date, end: date, exchange: str = DEFAULT_EXCHANGE) -> list[date]:
    """Return every session date from ``start`` to ``end`` inclusive."""
    return [ts.date() for ts in sessions_index(start, end, exchange)]


def sessions_index(start: date, end: date, exchange: str = DEFAULT_EXCHANGE) -> pd.DatetimeIndex:
    """Return the sessions from ``start`` to ``end`` inclusive as naive midnight timestamps (fast path)."""
    if end < start:
        return pd.DatetimeIndex([], dtype="datetime64[ns]")
    calendar = get_calendar(exchange, start=start)
    _check_bounds(calendar, start, exchange)
    _check_bounds(calendar, end, exchange)
    sessions: pd.DatetimeIndex = calendar.sessions_in_range(pd.Timestamp(start), pd.Timestamp(end))
    return sessions


def _build(exchange: str, first_year: int) -> Any:
    import exchange_calendars

    try:
        return exchange_calendars.get_calendar(exchange, start=f"{first_year}-01-01")
    except exchange_calendars.errors.InvalidCalendarName:
        raise InputError("calendar", f"unknown exchange calendar {exchange!r} (e.g. XNYS, XNAS)") from None


def _check_bounds(calendar: Any, day: date, exchange: str) -> None:
    first = calendar.first_session.date()
    last = calendar.last_session.date()
    if not first <= day <= last:
        raise InputError(exchange, f"{day.isoformat()} is outside the calendar ({first} to {last})")


def _utc(ts: datetime) -> pd.Timestamp:
    if ts.tzinfo is None:
        raise InputError("calendar", f"naive datetime {ts.isoformat()}: pass a timezone-aware UTC datetime")
    return pd.Timestamp(ts.astimezone(UTC))
