"""Gather what the risk gate judges against (:class:`services.orders.risk.RiskContext`) from the DB and broker."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Final
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from models.strategy import StrategyDefinition
from models.tables import Order, utc_now
from services import calendar
from services.broker.types import AccountValues
from services.errors import InputError, TraderError
from services.events import EventKind, Resource, TraderEvent, json_value, publish
from services.market_hours import order_market_open
from services.orders.risk import RiskContext
from services.positions import pnl_since
from services.repositories import fills as fills_repo
from services.repositories import orders as orders_repo
from services.repositories import positions as positions_repo
from services.repositories import trading_state
from services.settings import TradingSettings

RECONCILIATION_KEY: Final = "reconciliation"
DAILY_LOSS: Final = Resource("trader.risk.daily-loss", "daily-loss breaker")
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
    order: Order,
    definition: StrategyDefinition | None,
    strategy_problem: str | None,
    now: dt.datetime,
    broker_is_simulated: bool,
    marks: Mapping[str, Decimal],
) -> RiskContext:
    """Build the risk context for sending ``order`` (a stored, still unsent row) at ``now``, fresh from the DB.

    Everything is read at this moment: the kill switch, the daily-loss breaker (realized since the session open
    plus the unrealized P&L of *every* open position at ``marks``), the reconciliation flag, whether the
    instrument's own exchange is open, the position and the other unsent or working orders of the symbol, the
    strategy's orders today (on the runtime clock: ``created_at`` is the runtime clock too), and the signal's expiry
    (a bracket child sent on its own, re-attached: whether its entry still holds or works, instead).
    """
    symbol = order.symbol
    kill = trading_state.get_kill_switch(session)
    day = now.astimezone(NEW_YORK).date()
    position = sum((p.quantity for p in positions_repo.by_symbol(session, symbol)), Decimal(0))
    pnl = pnl_since(session, session_open(now), marks).total
    loss = (-pnl).quantize(Decimal("0.00000001"))
    tripped = trading_state.daily_loss_trip(session, day) is not None
    if loss >= trading.max_daily_loss_usd:
        if not tripped:  # the first trip of the day is told about
            told = f"daily loss limit hit: loss {loss} >= {trading.max_daily_loss_usd} USD; no new orders today"
            payload = {
                "day": day.isoformat(),
                "loss": json_value(loss),
                "limit": json_value(trading.max_daily_loss_usd),
            }
            publish(TraderEvent(EventKind.DAILY_LOSS, DAILY_LOSS, told, payload), session=session)
        trading_state.trip_daily_loss(session, day, loss, trading.max_daily_loss_usd, now=now)
        tripped = True
    expiry_problem = None
    entry = orders_repo.get(session, order.parent_id) if order.parent_id is not None else None
    if entry is not None:  # a bracket child re-attached alone: valid while its entry holds or may still fill
        if not orders_repo.entry_holds(entry):
            expiry_problem = f"its entry {entry.idempotency_key} is {entry.status.value}: nothing to protect"
    elif order.expires_at is None:
        expiry_problem = "no expiry stored: an order without a signal validity is never sent"
    elif now >= order.expires_at:
        expiry_problem = f"signal expired at {order.expires_at.isoformat()} (now {now.isoformat()})"
    market_open = definition is not None and order_market_open(definition, now)
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
        pending_quantity=orders_repo.pending_quantity(session, symbol, exclude_id=order.id),
        open_orders=orders_repo.count_open(session, exclude_id=order.id),
        orders_today=orders_repo.count_since(
            session, order.strategy_name or "", trading_day_start(now), exclude_id=order.id
        ),
        daily_pnl=pnl,
        buying_power=account.buying_power if account is not None else None,
        strategy_problem=strategy_problem,
        expiry_problem=expiry_problem,
    )


def marks_for_positions(
    session: Session, given: Mapping[str, Decimal], quoted: Mapping[str, Decimal]
) -> tuple[dict[str, Decimal], list[str]]:
    """A mark for every open position: ``given`` (the caller's fresh price), else ``quoted`` (broker snapshot),
    else the price of the symbol's last fill (named in the returned notes, so the decision says so)."""
    marks = {k.upper(): v for k, v in quoted.items()} | {k.upper(): v for k, v in given.items()}
    notes: list[str] = []
    for state in positions_repo.all_positions(session):
        if state.quantity == 0 or state.symbol.upper() in marks:
            continue
        last = fills_repo.last_price(session, state.symbol)
        if last is not None:
            marks[state.symbol.upper()] = last
            notes.append(f"{state.symbol} marked at its last fill {last} (no quote)")
    return marks, notes


def fetch_account(broker: Any) -> AccountValues | None:
    """The broker's account values, or None when they cannot be read (the gate then fails closed)."""
    try:
        values: AccountValues = broker.account_values()
    except TraderError:
        return None
    return values
