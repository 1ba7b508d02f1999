"""Trading sessions of US stocks (NYSE) from :mod:`services.calendar`: regular hours and the DAY-order session.

* :func:`session_hours`: a date's regular session (open, close) in UTC, holidays and early closes included; None
  when the exchange is closed that day. Dates outside the calendar's range (it covers 1990 to next year) fall
  back to weekdays 09:30-16:00 New York, so synthetic data far in the past or future still trades.
* :func:`in_rth`: an instant is inside its New York date's regular session (open included, close excluded).
* :func:`date_bar_end`: when a date-labelled bar is complete (16:00 New York).
* :func:`order_session`: the session a DAY order placed at an instant works in: that date's session when placed
  before its close, else the next session.

Answers are cached per date; the calendar itself is built on first use (about 2 s, once per process).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Final
from zoneinfo import ZoneInfo

from services import calendar
from services.errors import InputError

EASTERN: Final = ZoneInfo("America/New_York")
EXCHANGE: Final = calendar.DEFAULT_EXCHANGE
RTH_OPEN: Final = time(9, 30)
RTH_CLOSE: Final = time(16, 0)
_DAY: Final = timedelta(days=1)


@lru_cache(maxsize=65_536)
def session_hours(day: date) -> tuple[datetime, datetime] | None:
    """Return the (open, close) of ``day``'s regular session in UTC, or None when there is no session."""
    try:
        if not calendar.is_session(day, EXCHANGE):
            return None
        return calendar.session_bounds(day, EXCHANGE)
    except InputError:  # outside the calendar's range: weekdays, 09:30-16:00 New York
        if day.weekday() >= 5:
            return None
        return (
            datetime.combine(day, RTH_OPEN, EASTERN).astimezone(UTC),
            datetime.combine(day, RTH_CLOSE, EASTERN).astimezone(UTC),
        )


def in_rth(ts: datetime) -> bool:
    """Return True when the aware instant ``ts`` is inside its New York date's regular session."""
    hours = session_hours(ts.astimezone(EASTERN).date())
    return hours is not None and hours[0] <= ts < hours[1]


def date_bar_end(day: date) -> datetime:
    """When a date-labelled (daily or longer) bar of ``day`` is complete: 16:00 New York that day, in UTC.

    The regular close without early closes: the data's daily bar stands for the whole day either way.
    """
    return datetime.combine(day, RTH_CLOSE, EASTERN).astimezone(UTC)


def bar_session(start: datetime, *, intraday: bool) -> date:
    """The session date of a bar starting at ``start`` (date-labelled bars: their UTC date)."""
    return start.astimezone(EASTERN).date() if intraday else start.date()


def order_session(placed_at: datetime) -> date:
    """The session a DAY order placed at ``placed_at`` works in: today's before its close, else the next one."""
    day = placed_at.astimezone(EASTERN).date()
    hours = session_hours(day)
    if hours is not None and placed_at < hours[1]:
        return day
    day += _DAY
    while session_hours(day) is None:
        day += _DAY
    return day
