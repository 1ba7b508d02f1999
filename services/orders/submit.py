"""Idempotent order submission: the DB row is written (and committed) before any broker call.

Idempotency key = ``f"{strategy}:{symbol}:{bar_time:%Y%m%dT%H%M}:{action}"``, also sent as IB's ``orderRef``.

* A key already in the DB is never sent again by :func:`submit_order`: the row is returned as is; an order left
  in ``submitting`` (crash, timeout) is first reconciled with the broker (``find_order`` by orderRef, then
  permId) and adopts the broker's state when found.
* Not connected before sending -> back to ``created`` with ``last_submit_error`` (it certainly never reached IB);
  only the retry flow (:func:`send`, via ``flows.orders.order_retry``) sends it again.
* ``OrderRejectedError`` -> ``rejected`` with IB's code. Anything else leaves ``submitting`` for reconciliation.
* Every status change writes an ``order_events`` row (``repositories.orders.set_status``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final, Protocol

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from models.enums import OrderSide, OrderStatus, OrderType, SignalAction, TimeInForce
from models.tables import Order
from services.broker.types import (
    AccountValues,
    BrokerOrder,
    BrokerPosition,
    Connectivity,
    ContractInfo,
    Execution,
    OrderRequest,
)
from services.db import session_scope
from services.errors import BrokerConnectionError, OrderRejectedError, TraderError
from services.orders.risk import RiskDecision
from services.repositories import orders as orders_repo

PRICE_Q: Final = Decimal("0.00000001")


class OrderBroker(Protocol):
    """The synchronous broker calls the order services use (``SyncBroker`` provides them)."""

    @property
    def connectivity(self) -> Connectivity: ...
    def place_order(self, contract: ContractInfo, request: OrderRequest) -> BrokerOrder: ...
    def cancel_order(self, order_ref: str) -> BrokerOrder: ...
    def find_order(self, order_ref: str, perm_id: int | None = None) -> BrokerOrder | None: ...
    def open_orders(self) -> list[BrokerOrder]: ...
    def completed_orders(self) -> list[BrokerOrder]: ...
    def executions(self) -> list[Execution]: ...
    def positions(self) -> list[BrokerPosition]: ...
    def account_values(self) -> AccountValues: ...


def idempotency_key(strategy: str, symbol: str, bar_time: dt.datetime, action: SignalAction | OrderSide | str) -> str:
    """Return the key of one strategy's order for one bar and action (fits IB's orderRef)."""
    if bar_time.tzinfo is None:
        raise ValueError("bar_time must be timezone-aware")
    value = action.value if isinstance(action, SignalAction | OrderSide) else str(action)
    return f"{strategy}:{symbol.upper()}:{bar_time.astimezone(dt.UTC):%Y%m%dT%H%M}:{value}"


@dataclass(frozen=True)
class OrderIntent:
    """A sized order the strategy wants, before the risk gate."""

    strategy_name: str
    symbol: str
    side: OrderSide
    quantity: Decimal
    bar_time: dt.datetime
    order_type: OrderType = OrderType.LIMIT
    limit_price: Decimal | None = None
    tif: TimeInForce = TimeInForce.DAY
    conid: int | None = None
    strategy_id: int | None = None
    signal_id: int | None = None
    flow_run_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def key(self) -> str:
        return idempotency_key(self.strategy_name, self.symbol, self.bar_time, self.side)


@dataclass(frozen=True)
class SubmitResult:
    order_id: int
    key: str
    status: OrderStatus
    sent: bool  # this call sent the order to the broker
    reused: bool  # the key already existed: nothing new was created
    reasons: tuple[str, ...] = ()
    error: str | None = None
    error_code: int | None = None
    risk_decision: dict[str, Any] | None = None


def _result(order: Order, *, sent: bool, reused: bool) -> SubmitResult:
    decision = order.risk_decision or {}
    return SubmitResult(
        order_id=order.id,
        key=order.idempotency_key,
        status=order.status,
        sent=sent,
        reused=reused,
        reasons=tuple(decision.get("reasons", ())) if order.status is OrderStatus.RISK_REJECTED else (),
        error=order.error or order.last_submit_error,
        error_code=order.error_code,
        risk_decision=order.risk_decision,
    )


def submit_order(
    db_url: str,
    broker: OrderBroker,
    contract: ContractInfo,
    intent: OrderIntent,
    gate: Callable[[Session], RiskDecision],
    *,
    decision_extra: dict[str, Any] | None = None,
) -> SubmitResult:
    """Create the order for ``intent`` (once per key), run the risk gate, and send it when approved."""
    key = intent.key
    with session_scope(db_url) as session:
        existing = orders_repo.get_by_key(session, key)
        if existing is not None:
            order_id, status = existing.id, existing.status
    if existing is not None:
        if status is OrderStatus.SUBMITTING:
            reconcile_submitting(db_url, broker, order_id, allow_reset=False)
        with session_scope(db_url) as session:
            row = orders_repo.get(session, order_id)
            assert row is not None
            return _result(row, sent=False, reused=True)
    try:
        with session_scope(db_url) as session:
            decision = gate(session)
            doc = decision.to_json() | (decision_extra or {})
            row = orders_repo.create(
                session,
                key=key,
                symbol=intent.symbol,
                side=intent.side,
                quantity=intent.quantity,
                order_type=intent.order_type,
                tif=intent.tif,
                limit_price=intent.limit_price,
                conid=intent.conid,
                strategy_name=intent.strategy_name,
                strategy_id=intent.strategy_id,
                signal_id=intent.signal_id,
                flow_run_id=intent.flow_run_id,
                risk_decision=doc,
                allow_zero_quantity=not decision.approved,
            )
            if not decision.approved:
                row.error = "; ".join(decision.reasons)
                orders_repo.set_status(session, row, OrderStatus.RISK_REJECTED, row.error)
                return _result(row, sent=False, reused=False)
            order_id = row.id
    except IntegrityError:
        # another run inserted the same key between our read and our insert: that order wins
        with session_scope(db_url) as session:
            row_or_none = orders_repo.get_by_key(session, key)
            if row_or_none is None:
                raise  # not a duplicate key: another constraint (e.g. an unknown signal id)
            return _result(row_or_none, sent=False, reused=True)
    return send(db_url, broker, contract, order_id)


def send(db_url: str, broker: OrderBroker, contract: ContractInfo, order_id: int) -> SubmitResult:
    """Send an order that is in ``created``: commit ``submitting`` first, then call the broker, then record."""
    with session_scope(db_url) as session:
        row = orders_repo.get(session, order_id)
        assert row is not None
        if row.status is not OrderStatus.CREATED:
            return _result(row, sent=False, reused=True)
        row.submit_attempts += 1
        attempt = row.submit_attempts
        orders_repo.set_status(session, row, OrderStatus.SUBMITTING, f"attempt {attempt}")
        request = OrderRequest(
            order_ref=row.idempotency_key,
            side=row.side,
            quantity=row.quantity,
            order_type=row.order_type,
            limit_price=row.limit_price,
            stop_price=row.stop_price,
            tif=row.tif,
        )
    # committed: from here on a crash leaves "submitting", which reconciliation resolves
    try:
        if broker.connectivity is not Connectivity.CONNECTED:
            raise _NotSent(f"broker {broker.connectivity.value}: not sent")
        broker_order = broker.place_order(contract, request)
    except _NotSent as exc:
        return _back_to_created(db_url, order_id, str(exc))
    except OrderRejectedError as exc:
        with session_scope(db_url) as session:
            row = orders_repo.get(session, order_id)
            assert row is not None
            row.error_code, row.error = exc.code, str(exc)
            orders_repo.set_status(session, row, OrderStatus.REJECTED, f"IB {exc.code}: {exc}")
            return _result(row, sent=True, reused=False)
    except BrokerConnectionError as exc:
        # may or may not have reached IB: ask the broker; unknown stays "submitting" for reconciliation
        found: BrokerOrder | None = None
        try:
            found = broker.find_order(request.order_ref)
        except TraderError:
            with session_scope(db_url) as session:
                row = orders_repo.get(session, order_id)
                assert row is not None
                row.last_submit_error = f"{type(exc).__name__}: {exc}"
                return _result(row, sent=True, reused=False)
        if found is None:
            return _back_to_created(db_url, order_id, f"{type(exc).__name__}: {exc} (not found at the broker)")
        broker_order = found
    with session_scope(db_url) as session:
        row = orders_repo.get(session, order_id)
        assert row is not None
        apply_broker_order(session, row, broker_order, "placed")
        return _result(row, sent=True, reused=False)


class _NotSent(Exception):
    pass


def _back_to_created(db_url: str, order_id: int, error: str) -> SubmitResult:
    with session_scope(db_url) as session:
        row = orders_repo.get(session, order_id)
        assert row is not None
        row.last_submit_error = error
        orders_repo.set_status(session, row, OrderStatus.CREATED, f"never reached IB: {error}")
        return _result(row, sent=False, reused=False)


def apply_broker_order(session: Session, order: Order, broker_order: BrokerOrder, detail: str) -> bool:
    """Adopt the broker's view of ``order`` (ids, fills, status along legal steps); return whether it changed."""
    changed = False
    for attr, value in (
        ("ib_order_id", broker_order.order_id),
        ("ib_perm_id", broker_order.perm_id),
        ("ib_client_id", broker_order.client_id),
    ):
        if value is not None and getattr(order, attr) != value:
            setattr(order, attr, value)
            changed = True
    if broker_order.filled != order.filled_quantity and broker_order.filled >= order.filled_quantity:
        order.filled_quantity = broker_order.filled
        changed = True
    if broker_order.avg_fill_price is not None:
        avg = broker_order.avg_fill_price.quantize(PRICE_Q)
        if order.avg_fill_price != avg:
            order.avg_fill_price = avg
            changed = True
    if broker_order.last_error_code is not None and order.error_code != broker_order.last_error_code:
        order.error_code = broker_order.last_error_code
        order.error = broker_order.last_error_text
    target = broker_order.status
    if target in (OrderStatus.SUBMITTED, OrderStatus.PARTIALLY_FILLED) and order.filled_quantity >= order.quantity > 0:
        # IB reports execDetails before orderStatus "Filled": a still-"Submitted" order whose every share is
        # filled is done (seen in the crash test: the process ended between the two messages)
        target = OrderStatus.FILLED
    if target is OrderStatus.SUBMITTING or target is order.status:
        if target is OrderStatus.PARTIALLY_FILLED and changed:
            orders_repo.set_status(session, order, target, f"{detail}: filled {broker_order.filled}")
        session.flush()
        return changed
    moved = orders_repo.move_to(session, order, target, f"{detail}: IB {broker_order.ib_status}")
    session.flush()
    return changed or moved


def reconcile_submitting(db_url: str, broker: OrderBroker, order_id: int, *, allow_reset: bool) -> OrderStatus:
    """Resolve an order left in ``submitting``: adopt the broker's state when found by orderRef / permId.

    Not found: with ``allow_reset`` (reconciliation after a successful connect and startup sync) the order goes
    back to ``created`` with ``last_submit_error`` so the retry flow may send it; otherwise it stays.
    """
    with session_scope(db_url) as session:
        row = orders_repo.get(session, order_id)
        assert row is not None
        if row.status is not OrderStatus.SUBMITTING:
            return row.status
        key, perm_id = row.idempotency_key, row.ib_perm_id
    found = broker.find_order(key, perm_id)
    with session_scope(db_url) as session:
        row = orders_repo.get(session, order_id)
        assert row is not None
        if row.status is not OrderStatus.SUBMITTING:
            return row.status
        if found is not None:
            apply_broker_order(session, row, found, "reconciled")
        elif allow_reset and broker.connectivity is Connectivity.CONNECTED:
            row.last_submit_error = "not found at the broker after reconnect and startup sync"
            orders_repo.set_status(session, row, OrderStatus.CREATED, row.last_submit_error)
        return row.status
