"""Keeping the DB in step with the broker: status/fill sync, limit timeouts, retry, cleanup, reconciliation."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from models.enums import OrderStatus, OrderType, TimeInForce
from models.order_states import ACTIVE, WORKING
from models.tables import Order
from services import symbols
from services.broker.types import BrokerOrder, Connectivity, ContractInfo, Execution
from services.db import session_scope
from services.errors import BrokerConnectionError, InputError, OrderRejectedError, TraderError
from services.events import EventKind, Resource, TraderEvent, publish
from services.orders.context import set_reconciliation
from services.orders.send_lock import send_lock
from services.orders.submit import (
    OrderBroker,
    SendContext,
    SubmitResult,
    apply_broker_order,
    reconcile_submitting,
    send,
)
from services.positions import build_positions, compare, rebuild
from services.repositories import contracts as contracts_repo
from services.repositories import fills as fills_repo
from services.repositories import orders as orders_repo
from services.repositories import strategies as strategies_repo
from services.strategies import from_row
from services.symbols import ContractSource

RECONCILIATION = Resource("trader.reconciliation", "reconciliation")


@dataclass
class SyncReport:
    updated: int = 0
    new_fills: int = 0
    cancelled_for_timeout: list[str] = field(default_factory=list)
    cancels_resent: list[str] = field(default_factory=list)  # cancel_pending orders the broker still works
    lost_children: list[str] = field(default_factory=list)  # protective orders the broker lost: back to created
    skipped_dry_run: int = 0  # working dry-run orders: never at the real broker, so not looked up there


DRY_RUN_EXEC_PREFIX = "dry"


def dry_run_exec_id(order_id: int, exec_id: str) -> str:
    """The stored exec_id of a dry-run fill: each run's in-memory broker numbers its executions from the start,
    so the raw ids repeat across runs; the order id makes them unique (and never equal to a real IB execId)."""
    return f"{DRY_RUN_EXEC_PREFIX}.{order_id}.{exec_id}"


def record_dry_run_fills(db_url: str, order_id: int, order_ref: str, executions: Iterable[Execution]) -> int:
    """Record the fills of one dry-run order (from the run's in-memory broker) right away, so the next decision
    sees the position. Ids are made unique per order; the in-memory permId is dropped. Return the new ones."""
    ours = [
        dataclasses.replace(ex, exec_id=dry_run_exec_id(order_id, ex.exec_id), perm_id=None)
        for ex in executions
        if ex.order_ref == order_ref
    ]
    return record_executions(db_url, ours) if ours else 0


def record_executions(db_url: str, executions: list[Execution]) -> int:
    """Store executions once each (dedup by execId), linked to our order by orderRef / permId; return new ones."""
    new = 0
    with session_scope(db_url) as session:
        for ex in executions:
            order = orders_repo.get_by_key(session, ex.order_ref) if ex.order_ref else None
            if order is None and ex.perm_id:
                order = orders_repo.get_by_perm_id(session, ex.perm_id)
            _, created = fills_repo.record(
                session,
                exec_id=ex.exec_id,
                symbol=ex.symbol,
                side=ex.side,
                quantity=ex.quantity,
                price=ex.price,
                executed_at=ex.time,
                order_id=order.id if order is not None else None,
                perm_id=ex.perm_id,
                conid=ex.conid,
                commission=ex.commission.quantize(Decimal("0.00000001")) if ex.commission is not None else None,
                realized_pnl=ex.realized_pnl.quantize(Decimal("0.00000001")) if ex.realized_pnl is not None else None,
            )
            new += created
        if new:
            rebuild(session)
    return new


def sync_orders(
    db_url: str,
    broker: OrderBroker,
    now: dt.datetime,
    timeouts: Mapping[str, int] | None = None,
) -> SyncReport:
    """Sync status and fills of every active order; cancel DAY limit orders (the unfilled rest of a partially
    filled one too) past their strategy's timeout.

    ``timeouts`` maps strategy name -> ``limit_timeout_minutes``.
    """
    report = SyncReport()
    by_ref = {o.order_ref: o for o in [*broker.open_orders(), *broker.completed_orders()] if o.order_ref}
    by_perm = {o.perm_id: o for o in by_ref.values() if o.perm_id}
    submitting: list[int] = []
    to_cancel: list[tuple[int, str, str]] = []  # (order id, key, reason)
    recancel: list[tuple[int, str, str]] = []  # cancel_pending here, still working at the broker
    lost: list[int] = []
    # one unit of work for every order the broker reports on (1,000 active orders: one query, one commit)
    with session_scope(db_url) as session:
        for row in orders_repo.active(session):
            limit_min = (timeouts or {}).get(row.strategy_name or "")
            if orders_repo.is_dry_run(row):
                # the run's in-memory broker is gone: nothing to ask the real broker; only the timeout applies
                report.skipped_dry_run += 1
                if _dry_run_stale(row, now, limit_min):
                    to_cancel.append((row.id, row.idempotency_key, "dry run: unfilled past the limit timeout"))
                continue
            if row.status is OrderStatus.SUBMITTING:
                submitting.append(row.id)
                continue
            seen = by_ref.get(row.idempotency_key) or (by_perm.get(row.ib_perm_id) if row.ib_perm_id else None)
            if seen is not None and apply_broker_order(session, row, seen, "sync"):
                report.updated += 1
            if seen is None and row.parent_id is not None and row.status is OrderStatus.SUBMITTED:
                lost.append(row.id)  # a working protective order the broker does not report: asked below
            if row.status is OrderStatus.CANCEL_PENDING and seen is not None and seen.status in WORKING:
                # our cancel never reached the broker (it was down): the order still works there, so ask again
                recancel.append((row.id, row.idempotency_key, "cancel sent again: the first request never reached it"))
            stale = (
                limit_min is not None
                and row.parent_id is None  # protective exits wait for their price, not a timeout
                and row.status in WORKING
                and row.order_type is OrderType.LIMIT
                and row.tif is TimeInForce.DAY
                and row.submitted_at is not None
                and now - row.submitted_at >= dt.timedelta(minutes=limit_min)
            )
            if stale:
                rest, whole = (format(q.normalize(), "f") for q in (row.quantity - row.filled_quantity, row.quantity))
                what = "unfilled" if row.filled_quantity == 0 else f"{rest} of {whole} unfilled"
                to_cancel.append((row.id, row.idempotency_key, f"{what} after {limit_min} min"))
    for order_id in submitting:
        reconcile_submitting(db_url, broker, order_id, allow_reset=False)
    for order_id, key, reason in to_cancel:
        cancel(db_url, broker, order_id, reason)
        report.cancelled_for_timeout.append(key)
    for order_id, key, reason in recancel:
        _cancel_at_broker(db_url, broker, order_id, key, reason)
        report.cancels_resent.append(key)
    report.new_fills = record_executions(db_url, broker.executions())
    report.lost_children = [k for k in (mark_lost(db_url, broker, i) for i in lost) if k is not None]
    return report


def mark_lost(db_url: str, broker: OrderBroker, order_id: int) -> str | None:
    """A working bracket child the broker does not know (not found by orderRef or permId) while its entry holds
    or works goes back to ``created`` with the reason, so the retry flow re-attaches it through ``send`` (the gate
    runs then). Return its key when it was marked."""
    with session_scope(db_url) as session:
        row = orders_repo.get(session, order_id)
        assert row is not None
        key, perm_id = row.idempotency_key, row.ib_perm_id
    if broker.connectivity is not Connectivity.CONNECTED or broker.find_order(key, perm_id) is not None:
        return None
    with send_lock(db_url), session_scope(db_url) as session:
        row = orders_repo.get_for_update(session, order_id)
        assert row is not None
        entry = orders_repo.get(session, row.parent_id) if row.parent_id is not None else None
        holds = entry is not None and orders_repo.entry_holds(entry)
        if row.status is not OrderStatus.SUBMITTED or not holds:
            return None
        row.last_submit_error = "lost at the broker (not in its open or completed orders): to re-attach"
        row.submit_attempts = 0  # re-attaching is a new sending: its attempts count from here
        orders_repo.set_status(session, row, OrderStatus.CREATED, row.last_submit_error)
        return key


def _dry_run_stale(row: Order, now: dt.datetime, limit_min: int | None) -> bool:
    started = row.submitted_at or row.created_at
    return (
        limit_min is not None
        and row.parent_id is None
        and row.status in WORKING
        and now - started >= dt.timedelta(minutes=limit_min)
    )


CANCELLABLE: frozenset[OrderStatus] = WORKING


def cancel(db_url: str, broker: OrderBroker | None, order_id: int, reason: str) -> OrderStatus:
    """Request cancellation (cancel_pending first, then the broker's answer); return the resulting status.

    An order not in a cancellable state is left as is (its status is returned). A dry-run order was only ever at
    the run's in-memory broker, which is gone: it is cancelled in the DB without a broker call.
    """
    with session_scope(db_url) as session:
        row = orders_repo.get(session, order_id)
        assert row is not None
        status = row.status
    if status is OrderStatus.CREATED:
        return end_unsent(db_url, order_id, reason)
    with session_scope(db_url) as session:
        row = orders_repo.get(session, order_id)
        assert row is not None
        if row.status not in CANCELLABLE:
            return row.status
        orders_repo.set_status(session, row, OrderStatus.CANCEL_PENDING, reason)
        key = row.idempotency_key
        if orders_repo.is_dry_run(row):
            orders_repo.set_status(session, row, OrderStatus.CANCELLED, f"{reason} (dry run: no broker call)")
            if row.filled_quantity == 0:  # as at the broker: an unfilled entry takes its children with it
                for child in orders_repo.children(session, row.id):
                    if child.status in CANCELLABLE:
                        orders_repo.move_to(session, child, OrderStatus.CANCELLED, f"entry cancelled: {reason}")
            return row.status
        if broker is None:
            raise BrokerConnectionError(f"no broker session to cancel {key}")
    return _cancel_at_broker(db_url, broker, order_id, key, reason)


def sync_children(db_url: str, broker: OrderBroker, order_id: int, detail: str) -> None:
    """Adopt the broker's state of a bracket entry's children (after the entry's cancel, a close, a reconnect):
    the broker cancels them with an unfilled entry and resizes them with a partly filled one."""
    with session_scope(db_url) as session:
        keys = [(c.id, c.idempotency_key, c.ib_perm_id) for c in orders_repo.children(session, order_id)]
    for child_id, key, perm_id in keys:
        found = broker.find_order(key, perm_id)
        if found is None:
            continue
        with session_scope(db_url) as session:
            row = orders_repo.get(session, child_id)
            assert row is not None
            if row.status in ACTIVE and not orders_repo.is_dry_run(row):
                apply_broker_order(session, row, found, detail)


def cancel_protective(
    db_url: str, broker: OrderBroker | None, symbol: str, strategy_name: str | None, reason: str
) -> list[CancelOutcome]:
    """Cancel the working protective orders (bracket children) of ``symbol`` / ``strategy_name``: the position
    they protected was closed. One the broker already cancelled (OCA with the close) is just recorded."""
    with session_scope(db_url) as session:
        rows = [(o.id, o.idempotency_key, o.status) for o in orders_repo.protective(session, symbol, strategy_name)]
    outcomes = []
    for order_id, key, before in rows:
        after = cancel(db_url, broker, order_id, reason)
        outcomes.append(CancelOutcome(order_id, key, before, after))
    return outcomes


def end_unsent(db_url: str, order_id: int, reason: str) -> OrderStatus:
    """End an order that was never (certainly) sent: ``created`` -> ``cancelled``. Under the send lock, so a
    retry that is sending it finishes first (it is then no longer ``created`` and is left as it is)."""
    with send_lock(db_url), session_scope(db_url) as session:
        row = orders_repo.get_for_update(session, order_id)
        assert row is not None
        if row.status is OrderStatus.CREATED:
            orders_repo.set_status(session, row, OrderStatus.CANCELLED, f"{reason} (never sent)")
            for child in orders_repo.children(session, row.id):
                if child.status is OrderStatus.CREATED:
                    orders_repo.set_status(session, child, OrderStatus.CANCELLED, f"{reason} (entry never sent)")
        return row.status


def expire_unsent(db_url: str, now: dt.datetime, max_attempts: int) -> list[str]:
    """End unsent orders that can no longer be sent: past their signal's expiry (``expired``) or out of retry
    attempts (``cancelled``). Return their keys."""
    ended: list[str] = []
    with send_lock(db_url), session_scope(db_url) as session:
        for row in orders_repo.unsent(session):
            # a child to re-attach protects a position: its entry's signal expiry does not end it
            reattaching = row.parent_id is not None and orders_repo.reattaching(session, row)
            if not reattaching and (row.expires_at is None or now >= row.expires_at):
                at = row.expires_at.isoformat() if row.expires_at else "never valid (no expiry stored)"
                orders_repo.set_status(session, row, OrderStatus.EXPIRED, f"signal expired: {at}; never sent")
            elif row.last_submit_error is not None and row.submit_attempts >= max_attempts:
                detail = f"{row.submit_attempts} attempts, last: {row.last_submit_error}; never sent"
                orders_repo.set_status(session, row, OrderStatus.CANCELLED, detail)
            else:
                continue
            ended.append(row.idempotency_key)
    return ended


def retry_orders(
    db_url: str,
    broker: OrderBroker,
    contract_for: Callable[[OrderInstrument], ContractInfo],
    max_attempts: int,
    ctx: SendContext,
) -> list[SubmitResult]:
    """Send again the orders back in ``created`` after a submit error, while attempts remain and their signal is
    valid, and re-attach the protective orders the broker lost (:func:`mark_lost`); each through
    :func:`~services.orders.submit.send`, which re-runs the whole risk gate now.
    ``contract_for`` gives the order's own instrument (see :func:`retry_contract`)."""
    expire_unsent(db_url, ctx.now, max_attempts)
    with session_scope(db_url) as session:
        todo = [
            (o.id, OrderInstrument(o.strategy_name, o.symbol, o.conid))
            for o in orders_repo.retryable(session, max_attempts)
        ]
    return [send(db_url, broker, contract_for(what), order_id, ctx) for order_id, what in todo]


@dataclass(frozen=True)
class OrderInstrument:
    strategy_name: str | None
    symbol: str
    conid: int | None


def retry_contract(
    db_url: str, broker: ContractSource, what: OrderInstrument, *, ttl: dt.timedelta, now: dt.datetime
) -> ContractInfo:
    """The contract an order is for: its strategy's own spec (sec type, exchange, currency), through the contract
    cache; an order whose strategy is gone uses the cached contract of its conid (the gate refuses it anyway)."""
    with session_scope(db_url) as session:
        row = strategies_repo.get_by_name(session, what.strategy_name) if what.strategy_name else None
        definition = from_row(row) if row is not None else None
        cached = contracts_repo.get(session, what.conid, ttl, now=now) if definition is None and what.conid else None
        if cached is not None:
            return ContractInfo.from_json(cached.details)
    if definition is not None:
        spec = symbols.spec_of(definition)
        return symbols.resolve(lambda: session_scope(db_url), broker, spec, ttl=ttl, now=now).contract
    raise InputError(f"order for {what.symbol}", "neither its strategy nor a cached contract is known")


def cleanup(db_url: str, now: dt.datetime, archive_after_days: int) -> int:
    """Archive terminal orders older than ``archive_after_days`` (nothing is deleted); return how many."""
    before = now - dt.timedelta(days=archive_after_days)
    with session_scope(db_url) as session:
        rows = orders_repo.archivable(session, before)
        for row in rows:
            orders_repo.set_status(session, row, OrderStatus.ARCHIVED, f"older than {archive_after_days} days")
        return len(rows)


@dataclass
class ReconcileReport:
    adopted_external: list[str] = field(default_factory=list)
    reset_to_created: list[str] = field(default_factory=list)
    differences: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and not self.differences


def reconcile(db_url: str, broker: OrderBroker, now: dt.datetime) -> ReconcileReport:
    """Broker orders, executions and positions vs the DB. Unknown broker orders are adopted as external;
    differences are flagged and stored in ``trading_state`` (new orders are refused until a clean run)."""
    report = ReconcileReport()
    try:
        broker_orders = [*broker.open_orders(), *broker.completed_orders()]
        with session_scope(db_url) as session:
            submitting = [
                o.id
                for o in orders_repo.active(session)
                if o.status is OrderStatus.SUBMITTING and not orders_repo.is_dry_run(o)
            ]
        for order_id in submitting:
            if reconcile_submitting(db_url, broker, order_id, allow_reset=True) is OrderStatus.CREATED:
                report.reset_to_created.append(str(order_id))
        with session_scope(db_url) as session:
            for bo in broker_orders:
                row = orders_repo.get_by_key(session, bo.order_ref) if bo.order_ref else None
                if row is None and bo.perm_id:
                    row = orders_repo.get_by_perm_id(session, bo.perm_id)
                if row is None:
                    key = bo.order_ref or f"external:{bo.perm_id}"
                    row = orders_repo.create(
                        session, key=key, symbol=bo.symbol, side=bo.side, quantity=bo.quantity,
                        order_type=bo.order_type, limit_price=bo.limit_price, stop_price=bo.stop_price, tif=bo.tif,
                        conid=bo.conid, external=True, status=OrderStatus.SUBMITTED, detail="adopted from the broker",
                    )  # fmt: skip
                    report.adopted_external.append(key)
                if row.status in ACTIVE and not orders_repo.is_dry_run(row):
                    apply_broker_order(session, row, bo, "reconcile")
        record_executions(db_url, broker.executions())
        with session_scope(db_url) as session:
            rebuild(session)
            # dry-run fills never happened at the broker: compare only what was really sent
            dry = {o.id for o in orders_repo.list_orders(session, limit=None) if orders_repo.is_dry_run(o)}
            real = [f for f in fills_repo.effective(session) if f.order_id is None or f.order_id not in dry]
            ours = build_positions(real)
            report.differences = [f"{d.symbol}: {d.detail}" for d in compare(ours, broker.positions())]
    except TraderError as exc:
        report.error = f"{type(exc).__name__}: {exc}"
    with session_scope(db_url) as session:
        problem = report.error or ("; ".join(report.differences) if report.differences else None)
        set_reconciliation(session, problem, now=now)
        if problem is not None:
            told = f"reconciliation failed, new orders are refused until a clean run: {problem}"
            payload = {"error": report.error, "differences": report.differences}
            publish(TraderEvent(EventKind.RECONCILE_FAILED, RECONCILIATION, told, payload), session=session)
    return report


@dataclass(frozen=True)
class CancelOutcome:
    order_id: int
    key: str
    before: OrderStatus
    after: OrderStatus

    @property
    def done(self) -> bool:
        """The order is no longer working (cancelled, or it reached another terminal state first)."""
        return self.after not in ACTIVE


def cancel_by_id(db_url: str, broker_for: Callable[[], OrderBroker], order_id: int, reason: str) -> CancelOutcome:
    """Cancel one order through the broker (``broker_for`` is only called for an order that is at the broker).

    Every non-terminal state: an unsent order (``created``) is simply ended; ``submitting`` is first resolved with
    the broker (then cancelled there when found working); ``cancel_pending`` asks the broker again. Unknown id or
    a terminal order -> :class:`InputError` naming its state; nothing is sent.
    """
    with session_scope(db_url) as session:
        row = orders_repo.get(session, order_id)
        if row is None:
            raise InputError(f"order {order_id}", "no such order")
        before, key, dry = row.status, row.idempotency_key, orders_repo.is_dry_run(row)
    if before is OrderStatus.CREATED:
        return CancelOutcome(order_id, key, before, end_unsent(db_url, order_id, reason))
    if before not in ACTIVE:
        raise InputError(f"order {order_id}", f"{key} is {before.value}: already final, nothing to cancel")
    broker = None if dry else broker_for()
    if before is OrderStatus.SUBMITTING and broker is not None:
        reconcile_submitting(db_url, broker, order_id, allow_reset=False)
    after = cancel(db_url, broker, order_id, reason)
    if after in (OrderStatus.SUBMITTING, OrderStatus.CANCEL_PENDING) and broker is not None:
        after = _cancel_at_broker(db_url, broker, order_id, key, reason)
    return CancelOutcome(order_id, key, before, after)


def _cancel_at_broker(db_url: str, broker: OrderBroker, order_id: int, key: str, reason: str) -> OrderStatus:
    """Ask the broker to cancel ``key`` whatever our state says (still unconfirmed, or a cancel already pending)."""
    try:
        answer: BrokerOrder | None = broker.cancel_order(key)
    except OrderRejectedError:
        answer = broker.find_order(key)
    with session_scope(db_url) as session:
        row = orders_repo.get(session, order_id)
        assert row is not None
        if answer is not None:
            apply_broker_order(session, row, answer, f"cancel: {reason}")
        status = row.status
    sync_children(db_url, broker, order_id, f"entry cancel: {reason}")
    return status


@dataclass
class CancelAllReport:
    outcomes: list[CancelOutcome] = field(default_factory=list)
    broker_only: list[str] = field(default_factory=list)  # working at the broker, not cancelled via the DB: cancelled
    errors: list[str] = field(default_factory=list)

    @property
    def still_working(self) -> list[str]:
        return [o.key for o in self.outcomes if not o.done]


def cancel_all(db_url: str, broker_for: Callable[[], OrderBroker] | None, reason: str) -> CancelAllReport:
    """Cancel every active order: ours (``submitting`` ones are first resolved with the broker; dry-run ones in
    the DB only) and then any other order still working at the broker (whatever its orderRef: a halt stops
    everything). ``broker_for`` None: only dry-run orders can be cancelled."""
    report = CancelAllReport()
    with session_scope(db_url) as session:
        rows = [*orders_repo.unsent(session), *orders_repo.active(session)]
        active = [(o.id, o.idempotency_key, o.status, orders_repo.is_dry_run(o)) for o in rows]
    broker: OrderBroker | None = None
    if broker_for is not None:
        try:
            broker = broker_for()
        except TraderError as exc:
            report.errors.append(f"broker: {type(exc).__name__}: {exc}")
    handled: set[str] = set()  # keys cancelled through the broker above
    for order_id, key, status, dry in active:
        if not dry:
            handled.add(key)
        try:
            if dry or status is OrderStatus.CREATED:
                after = cancel(db_url, None, order_id, reason)
            elif broker is None:
                report.errors.append(f"{key}: no broker session")
                report.outcomes.append(CancelOutcome(order_id, key, status, status))
                continue
            else:
                if status is OrderStatus.SUBMITTING:
                    reconcile_submitting(db_url, broker, order_id, allow_reset=False)
                after = cancel(db_url, broker, order_id, reason)
        except TraderError as exc:
            report.errors.append(f"{key}: {type(exc).__name__}: {exc}")
            with session_scope(db_url) as session:
                row = orders_repo.get(session, order_id)
                after = row.status if row is not None else status
        report.outcomes.append(CancelOutcome(order_id, key, status, after))
    if broker is not None:
        try:
            for bo in broker.open_orders():
                if bo.order_ref and bo.order_ref not in handled and bo.status in ACTIVE:
                    broker.cancel_order(bo.order_ref)
                    report.broker_only.append(bo.order_ref)
        except TraderError as exc:
            report.errors.append(f"broker open orders: {type(exc).__name__}: {exc}")
    return report
