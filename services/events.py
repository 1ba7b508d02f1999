"""The event port: what the trading code tells a trader about (order filled, kill switch engaged, ...).

Services build a :class:`TraderEvent` and :func:`publish` it; they know nothing of Prefect. The process's sink
turns events into something a person sees: the default one only logs; where flows and workers start,
``tasks.events.install`` puts in the one that emits Prefect events, on which ``trader bootstrap``'s automations
send notifications (``deployments.notifications``).

An event about a database change is published with ``session=``: it goes out after that session commits and is
dropped when it rolls back, so nobody is told about a fill or a halt that was never stored. A sink that fails
is logged and never breaks the trading path.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any, Final, Protocol

from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session

from models.enums import OrderStatus
from models.tables import Order

log = logging.getLogger(__name__)


class EventKind(StrEnum):
    """What a trader is told about; each kind has a switch in ``TRADER_NOTIFICATIONS__*``."""

    ORDER_FILLED = "order_filled"
    ORDER_REJECTED = "order_rejected"  # by the broker, or refused by the risk gate at send time
    ORDER_EXPIRED = "order_expired"
    APPROVAL_PENDING = "approval_pending"
    ABSTAIN_STREAK = "abstain_streak"
    IB_RECONNECTED = "ib_reconnected"  # after an outage of at least notifications.ib_outage_minutes
    LLM_BUDGET = "llm_budget"
    KILL_SWITCH_ENGAGED = "kill_switch_engaged"
    KILL_SWITCH_RELEASED = "kill_switch_released"
    DAILY_LOSS = "daily_loss"
    RECONCILE_FAILED = "reconcile_failed"


EVENT_NAMES: Final[Mapping[EventKind, str]] = {
    EventKind.ORDER_FILLED: "trader.order.filled",
    EventKind.ORDER_REJECTED: "trader.order.rejected",
    EventKind.ORDER_EXPIRED: "trader.order.expired",
    EventKind.APPROVAL_PENDING: "trader.order.approval-pending",
    EventKind.ABSTAIN_STREAK: "trader.strategy.abstain-streak",
    EventKind.IB_RECONNECTED: "trader.broker.reconnected",
    EventKind.LLM_BUDGET: "trader.llm.budget-reached",
    EventKind.KILL_SWITCH_ENGAGED: "trader.kill-switch.engaged",
    EventKind.KILL_SWITCH_RELEASED: "trader.kill-switch.released",
    EventKind.DAILY_LOSS: "trader.risk.daily-loss-hit",
    EventKind.RECONCILE_FAILED: "trader.reconcile.failed",
}

# The order statuses that are told about, and as what.
ORDER_STATUS_EVENTS: Final[Mapping[OrderStatus, EventKind]] = {
    OrderStatus.FILLED: EventKind.ORDER_FILLED,
    OrderStatus.REJECTED: EventKind.ORDER_REJECTED,
    OrderStatus.RISK_REJECTED: EventKind.ORDER_REJECTED,
    OrderStatus.EXPIRED: EventKind.ORDER_EXPIRED,
}


@dataclass(frozen=True)
class Resource:
    """What an event is about: ``trader.order.<id>``, ``trader.strategy.<name>``, ``trader.broker.<host:port>``..."""

    id: str
    name: str | None = None
    role: str | None = None  # for a related resource: "strategy", "order"


@dataclass(frozen=True)
class TraderEvent:
    kind: EventKind
    resource: Resource
    message: str  # one line for a person
    payload: Mapping[str, Any] = field(default_factory=dict)  # JSON values only
    related: tuple[Resource, ...] = ()
    flow_run_id: str | None = None  # the run it is about (the sink links it), when not the run emitting it
    occurred: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))  # wall clock, not the market's

    @property
    def name(self) -> str:
        return EVENT_NAMES[self.kind]


def order_resource(order_id: int, key: str) -> Resource:
    return Resource(f"trader.order.{order_id}", key, role="order")


def strategy_resource(name: str) -> Resource:
    return Resource(f"trader.strategy.{name}", name, role="strategy")


def order_event(kind: EventKind, order: Order, message: str) -> TraderEvent:
    """An event about ``order``, related to its strategy and linked to the run that made it."""
    what = f"{order.side.value} {json_value(order.quantity)} {order.symbol}"
    if order.run_mode is not None:
        what += f", {order.run_mode.value}"  # a dry-run fill is not money
    payload = {
        "order_id": order.id,
        "key": order.idempotency_key,
        "strategy": order.strategy_name,
        "symbol": order.symbol,
        "side": order.side.value,
        "quantity": json_value(order.quantity),
        "filled": json_value(order.filled_quantity),
        "avg_fill_price": json_value(order.avg_fill_price),
        "status": order.status.value,
        "run_mode": order.run_mode.value if order.run_mode is not None else None,
        "parent_id": order.parent_id,
    }
    return TraderEvent(
        kind,
        order_resource(order.id, order.idempotency_key),
        f"order {order.idempotency_key} ({what}): {message}",
        payload,
        (strategy_resource(order.strategy_name),) if order.strategy_name else (),
        flow_run_id=order.flow_run_id,
    )


def json_value(value: Any) -> Any:
    """Money and times as strings (what an event payload can carry)."""
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return value


class EventSink(Protocol):
    def publish(self, event: TraderEvent) -> None: ...


class LoggingSink:
    """The default: events only go to the log."""

    def publish(self, event: TraderEvent) -> None:
        log.info("event %s on %s: %s", event.name, event.resource.id, event.message)


_sink: EventSink = LoggingSink()
_PENDING: Final = "trader_pending_events"


def set_sink(sink: EventSink) -> EventSink:
    """Install ``sink`` for the process; return the previous one."""
    global _sink
    previous, _sink = _sink, sink
    return previous


def current_sink() -> EventSink:
    return _sink


@contextmanager
def use_sink(sink: EventSink) -> Iterator[EventSink]:
    """Install ``sink`` for the block (tests)."""
    previous = set_sink(sink)
    try:
        yield sink
    finally:
        set_sink(previous)


def publish(event: TraderEvent, *, session: Session | None = None) -> None:
    """Hand ``event`` to the sink now, or, with ``session``, once that session has committed."""
    if session is not None:
        session.info.setdefault(_PENDING, []).append(event)
        return
    _deliver(event)


def _deliver(event: TraderEvent) -> None:
    try:
        _sink.publish(event)
    except Exception:  # a notification must never break an order path
        log.exception("event %s on %s could not be published", event.name, event.resource.id)


@sa_event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    for event in session.info.pop(_PENDING, []):
        _deliver(event)


@sa_event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(_PENDING, None)
