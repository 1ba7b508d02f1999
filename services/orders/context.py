"""Gather what the risk gate judges against (:class:`services.orders.risk.RiskContext`) from the DB and broker."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any, Final
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from models.tables import utc_now
from services import calendar
from services.broker.types import AccountValues
from services.errors import InputError, TraderError
from services.orders.risk import RiskContext
from services.positions import pnl_since
from services.repositories import orders as orders_repo
from services.repositories import positions as positions_repo
from services.repositories import trading_state
from services.settings import TradingSettings

RECONCILIATION_KEY: Final = "reconciliation"
NEW_YORK: Final = ZoneInfo("America/New_York")


def trading_day_start(now: dt.datetime) -> dt.datetime:
    """Midnight New York of ``now``'s trading day, in UTC (orders-per-day window)."""
    local = now.astimezone(NEW_YORK)
    return dt.datetime.combine(local.date(), dt.time(0), NEW_YORK).astimezone(dt.UTC)


def session_open(now: dt.datetime) -> dt.datetime:
    """The open of ``now``'s session (daily-loss window); midnight New York on a non-session day."""
    day = now.astimezone(NEW_YORK).date()
    try:
        opened, _ = calendar.session_bounds(day)
    except InputError:
        return trading_day_start(now)
    return min(opened, now)


def set_reconciliation(session: Session, problem: str | None, *, now: dt.datetime | None = None) -> None:
    """Record the outcome of the last reconciliation (``problem`` None = clean); a failure blocks new orders."""
    at = (now or utc_now()).astimezone(dt.UTC).isoformat()
    trading_state.set_value(session, RECONCILIATION_KEY, {"ok": problem is None, "problem": problem, "at": at})


def reconciliation_problem(session: Session) -> str | None:
    value = trading_state.get_value(session, RECONCILIATION_KEY)
    if value is None or value.get("ok"):
        return None
    return str(value.get("problem") or "reconciliation failed")


def gather_context(
    session: Session,
    *,
    trading: TradingSettings,
    account: AccountValues | None,
    symbol: str,
    strategy_name: str,
    now: dt.datetime,
    market_open: bool,
    broker_is_simulated: bool,
    mark: Decimal | None,
) -> RiskContext:
    """Build the risk context for one order of ``strategy_name`` in ``symbol`` at ``now``."""
    kill = trading_state.get_kill_switch(session)
    day = now.astimezone(NEW_YORK).date()
    tripped = trading_state.daily_loss_trip(session, day) is not None
    position = sum((p.quantity for p in positions_repo.by_symbol(session, symbol)), Decimal(0))
    marks = {symbol.upper(): mark} if mark is not None else {}
    pnl = pnl_since(session, session_open(now), marks).total
    loss = (-pnl).quantize(Decimal("0.00000001"))
    if loss >= trading.max_daily_loss_usd and trading.max_daily_loss_usd > 0:
        trading_state.trip_daily_loss(session, day, loss, trading.max_daily_loss_usd, now=now)
    return RiskContext(
        trading=trading,
        broker_is_simulated=broker_is_simulated,
        account_code=account.account if account is not None else None,
        kill_switch_engaged=kill.engaged,
        kill_switch_reason=kill.reason,
        daily_loss_tripped=tripped,
        reconciliation_problem=reconciliation_problem(session),
        market_open=market_open,
        position=position,
        pending_quantity=orders_repo.pending_quantity(session, symbol),
        open_orders=orders_repo.count_open(session),
        orders_today=orders_repo.count_since(session, strategy_name, trading_day_start(now)),
        daily_pnl=pnl,
        buying_power=account.buying_power if account is not None else None,
    )


def fetch_account(broker: Any) -> AccountValues | None:
    """The broker's account values, or None when they cannot be read (the gate then fails closed)."""
    try:
        values: AccountValues = broker.account_values()
    except TraderError:
        return None
    return values
