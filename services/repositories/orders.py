"""Orders and their audit trail. Every status change goes through :func:`set_status` (legal transitions only)
and writes one ``order_events`` row."""

from __future__ import annotations

import datetime as dt
from collections import deque
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models.enums import OrderSide, OrderStatus, OrderType, RunMode, TimeInForce
from models.order_states import ACTIVE, ORDER_TRANSITIONS, TERMINAL, WORKING, transition
from models.tables import Order, OrderEvent, utc_now
from services.errors import Problem
from services.events import ORDER_STATUS_EVENTS, order_event, publish
from services.repositories._common import check_decimal, check_text, raise_problems

_SOURCE = "order"
_WITH_THE_ENTRY = frozenset({OrderStatus.RISK_REJECTED, OrderStatus.EXPIRED})  # a child's only by its entry's gate


def get(session: Session, order_id: int) -> Order | None:
    return session.get(Order, order_id, populate_existing=True)


def get_by_key(session: Session, key: str) -> Order | None:
    return session.scalars(select(Order).where(Order.idempotency_key == key)).one_or_none()


def get_by_perm_id(session: Session, perm_id: int, *, include_dry_run: bool = False) -> Order | None:
    """The order with IB permId ``perm_id``. Dry-run orders carry the in-memory broker's ids, which may repeat
    real ones, so they only match with ``include_dry_run``."""
    for row in session.scalars(select(Order).where(Order.ib_perm_id == perm_id).order_by(Order.id)):
        if include_dry_run or not is_dry_run(row):
            return row
    return None


def is_dry_run(order: Order) -> bool:
    """Whether the order went to the run's in-memory broker (its ``run_mode``)."""
    return order.run_mode is RunMode.DRY_RUN


def create(
    session: Session,
    *,
    key: str,
    symbol: str,
    side: OrderSide,
    quantity: Decimal,
    order_type: OrderType,
    tif: TimeInForce = TimeInForce.DAY,
    limit_price: Decimal | None = None,
    stop_price: Decimal | None = None,
    conid: int | None = None,
    strategy_name: str | None = None,
    strategy_id: int | None = None,
    signal_id: int | None = None,
    flow_run_id: str | None = None,
    risk_decision: dict[str, Any] | None = None,
    run_mode: RunMode | None = None,
    external: bool = False,
    status: OrderStatus = OrderStatus.CREATED,
    detail: str | None = None,
    allow_zero_quantity: bool = False,
    expires_at: dt.datetime | None = None,
    reference_price: Decimal | None = None,
    created_at: dt.datetime | None = None,
    parent_id: int | None = None,
    trail_amount: Decimal | None = None,
    trail_percent: Decimal | None = None,
) -> Order:
    """Insert an order row (status ``created`` unless adopting an external order) and its first event.

    ``allow_zero_quantity`` is only for rows that record a refusal (sizing gave nothing to send).
    ``created_at`` is the runtime clock's now (the gate counts today's orders on that clock); default wall time.
    """
    problems: list[Problem] = []
    check_text(problems, "idempotency_key", key, max_len=128)
    check_text(problems, "symbol", symbol, max_len=32)
    qty = check_decimal(problems, "quantity", quantity)
    if qty is not None and (qty < 0 or (qty == 0 and not allow_zero_quantity)):
        problems.append(Problem("quantity", f"must be positive, got {qty}"))
    for name, price in (("limit_price", limit_price), ("stop_price", stop_price)):
        value = check_decimal(problems, name, price)
        if value is not None and value <= 0:
            problems.append(Problem(name, f"must be positive, got {value}"))
    if order_type is OrderType.LIMIT and limit_price is None:
        problems.append(Problem("limit_price", "a limit order needs a limit price"))
    if order_type is OrderType.TRAIL and (stop_price is None or (trail_amount is None) == (trail_percent is None)):
        problems.append(Problem("trail", "a trailing stop needs its initial stop and an amount or a percent"))
    raise_problems(f"{_SOURCE} {key!r}", problems)
    row = Order(
        idempotency_key=key,
        symbol=symbol.upper(),
        conid=conid,
        side=side,
        quantity=quantity,
        order_type=order_type,
        tif=tif,
        limit_price=limit_price,
        stop_price=stop_price,
        strategy_name=strategy_name,
        strategy_id=strategy_id,
        signal_id=signal_id,
        flow_run_id=flow_run_id,
        risk_decision=risk_decision,
        run_mode=run_mode,
        external=external,
        status=status,
        filled_quantity=Decimal(0),
        submit_attempts=0,
        expires_at=expires_at,
        reference_price=reference_price,
        parent_id=parent_id,
        trail_amount=trail_amount,
        trail_percent=trail_percent,
    )
    if created_at is not None:
        row.created_at = created_at
    session.add(row)
    session.flush()
    session.add(OrderEvent(order_id=row.id, from_status=None, to_status=status, detail=detail))
    session.flush()
    return row


def set_status(session: Session, order: Order, target: OrderStatus, detail: str | None = None) -> bool:
    """Move ``order`` to ``target`` (legal transitions only, else ``IllegalTransitionError``); write the event.

    Returns False (and writes nothing) when the order already is in ``target`` (except a further partial fill).
    """
    current = order.status
    if current is target and target is not OrderStatus.PARTIALLY_FILLED:
        return False
    transition(current, target)
    now = utc_now()
    order.status = target
    order.updated_at = now
    if target is OrderStatus.SUBMITTED and order.submitted_at is None:
        order.submitted_at = now
    if target in TERMINAL and order.terminal_at is None:
        order.terminal_at = now
    if target is OrderStatus.ARCHIVED:
        order.archived_at = now
    session.add(OrderEvent(order_id=order.id, at=now, from_status=current, to_status=target, detail=detail))
    session.flush()
    kind = ORDER_STATUS_EVENTS.get(target)
    # told once committed (services.events); a bracket child refused or expired with its entry is told by the entry
    if kind is not None and not (order.parent_id is not None and target in _WITH_THE_ENTRY):
        publish(order_event(kind, order, f"{target.value}" + (f": {detail}" if detail else "")), session=session)
    return True


def note(session: Session, order: Order, detail: str) -> None:
    """Write an event that changes no status (e.g. an approval decision): part of the order's audit trail."""
    session.add(
        OrderEvent(order_id=order.id, at=utc_now(), from_status=order.status, to_status=order.status, detail=detail)
    )
    session.flush()


def awaiting_approval(order: Order) -> bool:
    """The order waits for a person's decision (``services.orders.approval``): no send path may send it."""
    return order.status is OrderStatus.CREATED and (order.approval or {}).get("state") == "pending"


def pending_approvals(session: Session) -> list[Order]:
    """Unsent orders waiting for a decision, oldest first."""
    query = select(Order).where(Order.status == OrderStatus.CREATED, Order.parent_id.is_(None)).order_by(Order.id)
    rows = session.scalars(query)
    return [o for o in rows if awaiting_approval(o)]


def path_to(current: OrderStatus, target: OrderStatus) -> list[OrderStatus] | None:
    """Shortest legal path from ``current`` to ``target`` (excluding ``current``); None when unreachable.

    Used when adopting the broker's view, which may skip our intermediate states (e.g. submitting -> inactive
    goes through submitted). Never passes through ``created`` or ``archived``.
    """
    if current is target:
        return []
    seen = {current}
    queue: deque[tuple[OrderStatus, list[OrderStatus]]] = deque([(current, [])])
    while queue:
        state, path = queue.popleft()
        for nxt in sorted(ORDER_TRANSITIONS[state]):
            if nxt in seen or (nxt in (OrderStatus.CREATED, OrderStatus.ARCHIVED) and nxt is not target):
                continue
            if nxt is target:
                return [*path, nxt]
            seen.add(nxt)
            queue.append((nxt, [*path, nxt]))
    return None


def move_to(session: Session, order: Order, target: OrderStatus, detail: str | None = None) -> bool:
    """Follow the shortest legal path to ``target``, one event per step; False when already there or unreachable."""
    path = path_to(order.status, target)
    if not path:
        return False
    for step in path:
        set_status(session, order, step, detail)
    return True


def events(session: Session, order_id: int) -> list[OrderEvent]:
    return list(session.scalars(select(OrderEvent).where(OrderEvent.order_id == order_id).order_by(OrderEvent.id)))


def list_orders(
    session: Session,
    *,
    statuses: Sequence[OrderStatus] | None = None,
    strategy_name: str | None = None,
    limit: int | None = 100,
) -> list[Order]:
    query = select(Order).order_by(Order.id.desc())
    if statuses is not None:
        query = query.where(Order.status.in_(list(statuses)))
    if strategy_name is not None:
        query = query.where(Order.strategy_name == strategy_name)
    if limit is not None:
        query = query.limit(limit)
    return list(session.scalars(query))


def active(session: Session) -> list[Order]:
    """Orders that may be working at the broker (submitting, submitted, partially filled, cancel pending)."""
    return list(session.scalars(select(Order).where(Order.status.in_(sorted(ACTIVE))).order_by(Order.id)))


# Orders that count against the limits: working at the broker, or unsent but still sendable (``created``: a
# retry may send it), so two unsent orders can never both pass a position limit that only one fits in.
OUTSTANDING: frozenset[OrderStatus] = ACTIVE | {OrderStatus.CREATED}


def children(session: Session, parent_id: int) -> list[Order]:
    """A bracket entry's protective orders (take-profit, stop-loss), in id order."""
    return list(session.scalars(select(Order).where(Order.parent_id == parent_id).order_by(Order.id)))


def protective(session: Session, symbol: str, strategy_name: str | None) -> list[Order]:
    """Working or still sendable bracket children of ``symbol`` (and of ``strategy_name`` when given): what
    protects an open position at the broker."""
    query = select(Order).where(
        Order.symbol == symbol.upper(), Order.parent_id.is_not(None), Order.status.in_(sorted(OUTSTANDING))
    )
    if strategy_name is not None:
        query = query.where(Order.strategy_name == strategy_name)
    return list(session.scalars(query.order_by(Order.id)))


# The limits count entries: a bracket's children only ever reduce the position their entry opened.
def count_open(session: Session, *, exclude_id: int | None = None) -> int:
    """Orders working at the broker or still sendable (``created``), except ``exclude_id``; bracket children
    are not counted (one bracket is one order)."""
    query = select(func.count(Order.id)).where(Order.status.in_(sorted(OUTSTANDING)), Order.parent_id.is_(None))
    if exclude_id is not None:
        query = query.where(Order.id != exclude_id)
    return int(session.scalar(query) or 0)


def count_since(session: Session, strategy_name: str, since: dt.datetime, *, exclude_id: int | None = None) -> int:
    """Orders of ``strategy_name`` created since ``since`` (runtime clock) that our own gate did not refuse."""
    query = select(func.count(Order.id)).where(
        Order.strategy_name == strategy_name,
        Order.created_at >= since,
        Order.status != OrderStatus.RISK_REJECTED,
        Order.parent_id.is_(None),
    )
    if exclude_id is not None:
        query = query.where(Order.id != exclude_id)
    return int(session.scalar(query) or 0)


def pending_quantity(session: Session, symbol: str, *, exclude_id: int | None = None) -> Decimal:
    """Signed remaining quantity of the symbol's working and still-sendable orders (BUY positive); bracket
    children are left out (they only close what their entry filled)."""
    total = Decimal(0)
    query = select(Order.side, Order.quantity, Order.filled_quantity).where(
        Order.symbol == symbol.upper(), Order.status.in_(sorted(OUTSTANDING)), Order.parent_id.is_(None)
    )  # three columns, not whole rows: no risk-decision JSON to decode per active order
    if exclude_id is not None:
        query = query.where(Order.id != exclude_id)
    for side, quantity, filled in session.execute(query):
        remaining = quantity - filled
        total += remaining if side is OrderSide.BUY else -remaining
    return total


def unsent(session: Session) -> list[Order]:
    """Orders in ``created``: never (certainly) at the broker, still sendable by a retry."""
    return list(session.scalars(select(Order).where(Order.status == OrderStatus.CREATED).order_by(Order.id)))


def get_for_update(session: Session, order_id: int) -> Order | None:
    """The order row, locked for this transaction (PostgreSQL ``FOR UPDATE``; SQLite serializes writers)."""
    query = select(Order).where(Order.id == order_id).with_for_update()
    return session.scalars(query.execution_options(populate_existing=True)).one_or_none()


def retryable(session: Session, max_attempts: int) -> list[Order]:
    """Orders back in ``created`` after a submit error, with attempts left: entries and plain orders, and bracket
    children to re-attach (:func:`reattaching`; the others are sent with their entry)."""
    query = select(Order).where(
        Order.status == OrderStatus.CREATED,
        Order.last_submit_error.is_not(None),
        Order.submit_attempts < max_attempts,
    )
    rows = session.scalars(query.order_by(Order.id))
    return [o for o in rows if not is_dry_run(o) and (o.parent_id is None or reattaching(session, o))]


def entry_holds(entry: Order) -> bool:
    """Whether a bracket's entry is at the broker working or holds fills: what its children protect."""
    return entry.status in WORKING or entry.filled_quantity > 0


def reattaching(session: Session, order: Order) -> bool:
    """Whether ``order`` is a bracket child whose entry is at the broker, working or holding fills: unsent itself
    (the broker lost it, or only the entry got through), it is sent on its own to protect what the entry holds.
    An entry still unsent or unresolved (``submitting``) takes its children with it instead."""
    entry = get(session, order.parent_id) if order.parent_id is not None else None
    return entry is not None and entry_holds(entry)


def archivable(session: Session, before: dt.datetime) -> list[Order]:
    """Terminal orders that reached their terminal state before ``before``."""
    query = select(Order).where(Order.status.in_(sorted(TERMINAL)), Order.terminal_at < before)
    return list(session.scalars(query.order_by(Order.id)))
