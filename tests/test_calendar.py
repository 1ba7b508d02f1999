"""services.calendar over exchange_calendars: sessions, open instants, bounds and bad inputs."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from services import calendar
from services.bars.loader import load_bars
from services.errors import InputError

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples"


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        (date(2024, 7, 4), False),  # Independence Day
        (date(2024, 7, 5), True),
        (date(2024, 7, 6), False),  # Saturday
        (date(2001, 9, 12), False),  # 9/11 closure
        (date(2004, 6, 11), False),  # Reagan funeral
        (date(2007, 1, 2), False),  # Ford funeral
        (date(2012, 10, 29), False),  # Hurricane Sandy
        (date(2012, 10, 31), True),
        (date(1985, 1, 2), True),  # before the default calendar start: built on demand
    ],
)
def test_is_session(day, expected):
    assert calendar.is_session(day) is expected


def test_is_open_and_next_open():
    assert calendar.is_open(datetime(2024, 7, 5, 13, 30, tzinfo=UTC))  # 09:30 EDT
    assert not calendar.is_open(datetime(2024, 7, 5, 13, 29, tzinfo=UTC))
    assert not calendar.is_open(datetime(2024, 7, 5, 20, 0, tzinfo=UTC))  # 16:00 EDT: closed
    assert calendar.is_open(datetime(2024, 1, 5, 20, 59, tzinfo=UTC))  # 15:59 EST
    # Thursday 4 July 2024 holiday: next open is Friday 09:30 EDT.
    assert calendar.next_open(datetime(2024, 7, 3, 21, 0, tzinfo=UTC)) == datetime(2024, 7, 5, 13, 30, tzinfo=UTC)
    # Friday after the close -> Monday.
    assert calendar.next_open(datetime(2024, 7, 5, 20, 30, tzinfo=UTC)) == datetime(2024, 7, 8, 13, 30, tzinfo=UTC)


def test_session_bounds_early_close():
    opened, closed = calendar.session_bounds(date(2024, 11, 29))  # day after Thanksgiving: 13:00 ET close
    assert (opened, closed) == (datetime(2024, 11, 29, 14, 30, tzinfo=UTC), datetime(2024, 11, 29, 18, 0, tzinfo=UTC))
    with pytest.raises(InputError, match="not a session"):
        calendar.session_bounds(date(2024, 11, 28))


def test_sessions_between_matches_a_published_daily_file():
    # Yahoo's SPY daily file (data/samples, real) has one row per NYSE session: the same dates, none missing or extra
    frame = load_bars(SAMPLES / "yahoofinance-SPY-20080101-20180101.csv").frame
    published = [ts.date() for ts in frame["timestamp"]]
    assert calendar.sessions_between(date(2007, 12, 29), date(2017, 12, 31)) == published
    sessions = calendar.sessions_between(date(1995, 1, 1), date(2014, 12, 31))
    assert sessions[0] == date(1995, 1, 3)  # 2 January 1995 was the New Year holiday (observed)
    assert date(2004, 6, 11) not in sessions and date(2012, 10, 29) not in sessions
    assert calendar.sessions_between(date(2024, 1, 2), date(2024, 1, 1)) == []


def test_calendar_is_cached():
    assert calendar.get_calendar("XNYS") is calendar.get_calendar("xnys")


def test_bad_inputs():
    with pytest.raises(InputError, match="naive datetime"):
        calendar.is_open(datetime(2024, 7, 5, 14, 0))  # naive on purpose
    with pytest.raises(InputError, match="unknown exchange"):
        calendar.is_session(date(2024, 7, 5), exchange="NOPE")
    with pytest.raises(InputError, match="outside the calendar"):
        calendar.is_session(date(2199, 1, 2))
