"""Operational trading state: the kill switch and the daily-loss trip (key/value rows in ``trading_state``)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.tables import KillSwitchEvent, TradingState, utc_now
from services.errors import Problem, StopError
from services.repositories._common import check_aware, check_decimal, raise_problems

KILL_SWITCH_KEY: Final = "kill_switch"
DAILY_LOSS_KEY: Final = "daily_loss_trip"
_SOURCE = "trading state"


@dataclass(frozen=True)
class KillSwitch:
    """Whether trading is halted by hand, why, by whom and since when. Off when never set."""

    engaged: bool
    reason: str | None = None
    changed_at: dt.datetime | None = None
    changed_by: str | None = None


@dataclass(frozen=True)
class DailyLossTrip:
    """The max-daily-loss breaker tripped on ``day`` (the trading day) with ``loss`` over ``limit``."""

    day: dt.date
    loss: Decimal
    limit: Decimal
    tripped_at: dt.datetime


def get_value(session: Session, key: str) -> dict[str, Any] | None:
    """Return the JSON value stored under ``key``, or ``None``."""
    row = session.get(TradingState, key, populate_existing=True)
    return None if row is None else dict(row.value)


def set_value(session: Session, key: str, value: dict[str, Any]) -> None:
    """Store ``value`` under ``key`` (insert or replace)."""
    row = session.get(TradingState, key)
    if row is None:
        session.add(TradingState(key=key, value=value))
    else:
        row.value = value
        row.updated_at = utc_now()
    session.flush()


def clear_value(session: Session, key: str) -> bool:
    """Delete ``key``; return whether it existed."""
    row = session.get(TradingState, key)
    if row is None:
        return False
    session.delete(row)
    session.flush()
    return True


def _parse_time(raw: object) -> dt.datetime | None:
    return dt.datetime.fromisoformat(raw) if isinstance(raw, str) else None


def get_kill_switch(session: Session) -> KillSwitch:
    """Return the kill switch (off when never set)."""
    value = get_value(session, KILL_SWITCH_KEY)
    if value is None:
        return KillSwitch(engaged=False)
    return KillSwitch(
        engaged=bool(value.get("engaged")),
        reason=value.get("reason"),
        changed_at=_parse_time(value.get("changed_at")),
        changed_by=value.get("changed_by"),
    )


def set_kill_switch(
    session: Session,
    engaged: bool,
    reason: str | None = None,
    *,
    changed_by: str | None = None,
    now: dt.datetime | None = None,
    ended_orders: int = 0,
) -> KillSwitch:
    """Engage (a reason is required) or release the kill switch, and append the change to its history
    (``kill_switch_events``); return the new state. Callers hold the send lock exclusively
    (``services.orders.kill_switch``) so no send is between its gate decision and the broker meanwhile."""
    problems: list[Problem] = []
    if engaged and (reason is None or not reason.strip()):
        problems.append(Problem("reason", "engaging the kill switch needs a reason"))
    check_aware(problems, "now", now)
    raise_problems(_SOURCE, problems)
    at = utc_now() if now is None else now.astimezone(dt.UTC)
    state = KillSwitch(engaged=engaged, reason=reason, changed_at=at, changed_by=changed_by)
    set_value(
        session,
        KILL_SWITCH_KEY,
        {"engaged": engaged, "reason": reason, "changed_at": at.isoformat(), "changed_by": changed_by},
    )
    session.add(
        KillSwitchEvent(at=at, engaged=engaged, reason=reason, changed_by=changed_by, ended_orders=ended_orders)
    )
    session.flush()
    return state


def kill_switch_history(session: Session, *, limit: int = 50) -> list[KillSwitchEvent]:
    """The kill switch's changes, newest first."""
    query = select(KillSwitchEvent).order_by(KillSwitchEvent.id.desc()).limit(limit)
    return list(session.scalars(query))


def trip_daily_loss(
    session: Session, day: dt.date, loss: Decimal, limit: Decimal, *, now: dt.datetime | None = None
) -> DailyLossTrip:
    """Record that the daily loss ``loss`` reached ``limit`` on ``day``; a trip already recorded that day stays."""
    problems: list[Problem] = []
    loss_value = check_decimal(problems, "loss", loss)
    limit_value = check_decimal(problems, "limit", limit)
    check_aware(problems, "now", now)
    raise_problems(_SOURCE, problems)
    assert loss_value is not None and limit_value is not None
    existing = daily_loss_trip(session, day)
    if existing is not None:
        return existing
    at = utc_now() if now is None else now.astimezone(dt.UTC)
    trip = DailyLossTrip(day=day, loss=loss_value, limit=limit_value, tripped_at=at)
    set_value(
        session,
        DAILY_LOSS_KEY,
        {"day": day.isoformat(), "loss": str(loss_value), "limit": str(limit_value), "tripped_at": at.isoformat()},
    )
    return trip


def daily_loss_trip(session: Session, day: dt.date) -> DailyLossTrip | None:
    """Return the trip recorded for ``day``, or ``None`` (a trip from another day does not count)."""
    value = get_value(session, DAILY_LOSS_KEY)
    if value is None or value.get("day") != day.isoformat():
        return None
    tripped_at = _parse_time(value.get("tripped_at"))
    if tripped_at is None:
        # fail closed: a breaker we cannot read must stop trading, not let it through
        raise StopError(f"{DAILY_LOSS_KEY} in trading_state is malformed: {value!r}")
    return DailyLossTrip(day=day, loss=Decimal(value["loss"]), limit=Decimal(value["limit"]), tripped_at=tripped_at)


def reset_daily_loss(session: Session) -> bool:
    """Forget the daily-loss trip (by hand, after review); return whether one was stored."""
    return clear_value(session, DAILY_LOSS_KEY)
