"""Exchange hours as the strategy runs and the order gate see them (pure; no Prefect).

* :func:`market_gate`: why a strategy run at ``now`` must be skipped (IB reset window, market closed), or None.
* :func:`order_market_open`: whether an order may be sent at ``now`` (the instrument's own exchange calendar).
* :func:`in_reset_window`: IB's daily reset window, 23:45-00:45 America/New_York.

The rules are described in :mod:`tasks.market_gate`, which turns a skip into a Completed "Skipped" state.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Final
from zoneinfo import ZoneInfo

from models.enums import SecType
from models.strategy import BAR_SECONDS, StrategyDefinition
from services import calendar
from services.errors import InputError

NEW_YORK: Final = ZoneInfo("America/New_York")
RESET_START: Final = time(23, 45)  # America/New_York
RESET_END: Final = time(0, 45)  # America/New_York, next day
CLOSE_GRACE: Final = timedelta(minutes=15)
US_EXTENDED: Final = (time(4, 0), time(20, 0))  # pre-market open, after-hours close (exchange time)

SKIP_RESET: Final = "skipped: IB reset window"
SKIP_CLOSED: Final = "skipped: market closed"

# IB exchange codes -> exchange_calendars names.
_EXCHANGE_CALENDARS: Final[dict[str, str]] = {
    **dict.fromkeys(["NYSE", "ARCA", "NASDAQ", "ISLAND", "AMEX", "BATS", "IEX", "BEX", "PSX", "NYSENAT"], "XNYS"),
    **dict.fromkeys(["CME", "GLOBEX", "CBOT", "NYMEX", "COMEX", "ECBOT", "NYBOT"], "CMES"),
    "IDEALPRO": "24/5",
    "LSE": "XLON",
    "IBIS": "XETR",
    "FWB": "XETR",
    "SBF": "XPAR",
    "AEB": "XAMS",
    "EBS": "XSWX",
    "TSE": "XTSE",
    "TSEJ": "XTKS",
    "SEHK": "XHKG",
    "ASX": "XASX",
}
_CURRENCY_CALENDARS: Final[dict[str, str]] = {
    "USD": "XNYS",
    "GBP": "XLON",
    "EUR": "XETR",
    "CHF": "XSWX",
    "CAD": "XTSE",
    "JPY": "XTKS",
    "HKD": "XHKG",
    "AUD": "XASX",
}
_US_CALENDARS: Final = frozenset({"XNYS"})


def calendar_for(definition: StrategyDefinition) -> str:
    """The exchange_calendars name for the strategy's contract (XNYS when nothing more specific is known)."""
    if definition.sec_type is SecType.CASH:
        return "24/5"
    for code in (definition.primary_exchange, definition.exchange):
        if code and code.upper() in _EXCHANGE_CALENDARS:
            return _EXCHANGE_CALENDARS[code.upper()]
    return _CURRENCY_CALENDARS.get(definition.currency, calendar.DEFAULT_EXCHANGE)


def in_reset_window(now: datetime) -> bool:
    """True inside IB's daily reset window, 23:45-00:45 America/New_York."""
    local = now.astimezone(NEW_YORK).time()
    return local >= RESET_START or local < RESET_END


def market_gate(definition: StrategyDefinition, now: datetime) -> str | None:
    """Return why a run at ``now`` (timezone-aware) must be skipped, or ``None`` when it may run."""
    if now.tzinfo is None:
        raise InputError("market gate", f"naive datetime {now.isoformat()}: pass a timezone-aware datetime")
    if in_reset_window(now):
        return SKIP_RESET
    name = calendar_for(definition)
    cal = calendar.get_calendar(name)
    zone = ZoneInfo(str(cal.tz))
    local = now.astimezone(zone)
    if name == "24/5":
        return None if calendar.is_open(now.astimezone(UTC), name) else SKIP_CLOSED
    day: date = local.date()
    if not calendar.is_session(day, name):
        return SKIP_CLOSED
    extended = definition.schedule.extended_hours
    opened, closed = calendar.session_bounds(day, name)
    if extended:
        if name in _US_CALENDARS:
            start = datetime.combine(day, US_EXTENDED[0], zone)
            end = datetime.combine(day, US_EXTENDED[1], zone)
            return None if start <= local <= end else SKIP_CLOSED
        return None
    daily = BAR_SECONDS[definition.bar_size] >= 86_400
    if daily:
        return None if now >= opened else SKIP_CLOSED
    return None if opened <= now <= closed + CLOSE_GRACE else SKIP_CLOSED


def order_market_open(definition: StrategyDefinition, now: datetime) -> bool:
    """Whether an order of ``definition`` may be sent at ``now``: outside IB's reset window and inside the regular
    session of the instrument's own exchange calendar (the extended window with ``schedule.extended_hours``)."""
    if in_reset_window(now):
        return False
    name = calendar_for(definition)
    try:
        if definition.schedule.extended_hours and name in _US_CALENDARS:
            zone = ZoneInfo(str(calendar.get_calendar(name).tz))
            local = now.astimezone(zone)
            if not calendar.is_session(local.date(), name):
                return False
            start = datetime.combine(local.date(), US_EXTENDED[0], zone)
            end = datetime.combine(local.date(), US_EXTENDED[1], zone)
            return start <= local <= end
        return calendar.is_open(now.astimezone(UTC), name)
    except InputError:
        return False  # outside the calendar's range: fail closed
