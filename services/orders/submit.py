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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any, Final, Protocol

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from models.enums import OrderSide, OrderStatus, OrderType, RunMode, SignalAction, TimeInForce
from models.order_states import WORKING
from models.strategy import BAR_SECONDS, StrategyDefinition
from models.tables import Order
from services import calendar
from services.broker.types import (
    AccountValues,
    Bracket,
    BracketRole,
    BrokerOrder,
    BrokerPosition,
    Connectivity,
    ContractInfo,
    Execution,
    OrderRequest,
    bracket_role,
    child_ref,
)
from services.db import session_scope
from services.errors import BrokerConnectionError, OrderRejectedError, TraderError
from services.events import EventKind, order_event, publish
from services.market import Trail
from services.market_hours import calendar_for
from services.orders.context import fetch_account, gather_context, marks_for_positions
from services.orders.pnl import broker_marks, open_positions
from services.orders.risk import CheckResult, ProposedOrder, RiskDecision, evaluate
from services.orders.send_lock import send_lock
from services.positions import strategy_position
from services.repositories import orders as orders_repo
from services.repositories import strategies as strategies_repo
from services.settings import TradingSettings
from services.strategies import from_row

PRICE_Q: Final = Decimal("0.00000001")


class OrderBroker(Protocol):
    """The synchronous broker calls the order services use (``SyncBroker`` provides them)."""

    @property
    def connectivity(self) -> Connectivity: ...
    def place_order(self, contract: ContractInfo, request: OrderRequest) -> BrokerOrder: ...
    def place_bracket(self, contract: ContractInfo, bracket: Bracket) -> list[BrokerOrder]: ...
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
    expires_at: dt.datetime | None = None  # the signal's validity (no send at or after it); None: never sent
    reference_price: Decimal | None = None  # what the gate judges a market order at
    take_profit: Decimal | None = None  # a bracket child LMT at this price (sent with the entry)
    stop_loss: Decimal | None = None  # a bracket child STP at this price (a TRAIL's start with ``trail``)
    trail: Trail | None = None  # the stop-loss child trails the price by this
    time_exit: bool = False  # the strategy's time exit (risk.max_holding_bars): its key ends with TIME_EXIT
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def key(self) -> str:
        key = idempotency_key(self.strategy_name, self.symbol, self.bar_time, self.side)
        return key + TIME_EXIT if self.time_exit else key


# The key (and orderRef) suffix of a time exit: never the same key as the bar's signal order.
TIME_EXIT: Final = ":time"


def signal_expiry(definition: StrategyDefinition, bar_time: dt.datetime) -> dt.datetime:
    """When the order of a signal on the bar that opened at ``bar_time`` stops being sendable: the bar's close
    plus ``risk.order_expiry_bars`` bars.

    Daily bars count sessions of the instrument's exchange calendar: Friday's bar with one bar of validity may be
    sent until Monday's close (a weekend or holiday is no bar). Intraday and longer bars count their duration.
    """
    seconds = BAR_SECONDS[definition.bar_size]
    start = bar_time.astimezone(dt.UTC)
    n = definition.risk.order_expiry_bars
    if seconds == 86_400:
        name = calendar_for(definition)
        if name != "24/5":
            day = start.date()
            horizon = calendar.sessions_between(day + dt.timedelta(days=1), day + dt.timedelta(days=7 * n + 14), name)
            if len(horizon) >= n:
                return calendar.session_bounds(horizon[n - 1], name)[1]
    return start + dt.timedelta(seconds=seconds) * (1 + n)


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
    approval: dict[str, Any] | None = None  # the order's approval document (services.orders.approval)


def _result(order: Order, *, sent: bool, reused: bool) -> SubmitResult:
    decision = order.risk_decision or {}
    return SubmitResult(
        order_id=order.id,
        key=order.idempotency_key,
        status=order.status,
        sent=sent,
        reused=reused,
        reasons=tuple(decision.get("reasons", ()))
        if order.status in (OrderStatus.RISK_REJECTED, OrderStatus.EXPIRED)
        else (),
        error=order.error or order.last_submit_error,
        error_code=order.error_code,
        risk_decision=order.risk_decision,
        approval=order.approval,
    )


@dataclass(frozen=True)
class SendContext:
    """What the send-time gate takes from the caller; everything else it reads fresh at the moment of sending.

    ``marks``: prices the caller has just seen (the run's last close), by symbol; other open positions are
    marked from broker snapshots, else at their last fill.
    """

    trading: TradingSettings
    now: dt.datetime
    dry_run: bool  # the broker is the run's in-memory broker (never a socket)
    marks: Mapping[str, Decimal] = field(default_factory=dict)

    @property
    def run_mode(self) -> RunMode:
        return self.trading.run_mode(in_memory=self.dry_run)


def submit_order(
    db_url: str,
    broker: OrderBroker,
    contract: ContractInfo,
    intent: OrderIntent,
    ctx: SendContext,
    *,
    refusal: CheckResult | None = None,
    hold: dict[str, Any] | None = None,
) -> SubmitResult:
    """Create the order for ``intent`` (once per key) and send it through :func:`send` (which runs the gate).

    ``refusal``: a check that already failed before any order could be formed (sizing): the row records it as
    ``risk_rejected`` and nothing is sent.
    ``hold``: the order waits for a person (its ``approval`` document, ``services.orders.approval``): created
    with it, judged once by the gate, and not sent.
    """
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
            doc: dict[str, Any] = {}
            if refusal is not None:
                doc |= RiskDecision((refusal,)).to_json() | {"at": ctx.now.isoformat()}
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
                run_mode=ctx.run_mode,
                allow_zero_quantity=refusal is not None,
                expires_at=intent.expires_at,
                reference_price=intent.reference_price,
                created_at=ctx.now,
            )
            if refusal is not None:
                row.error = f"{refusal.name}: {refusal.detail}"
                orders_repo.set_status(session, row, OrderStatus.RISK_REJECTED, row.error)
                return _result(row, sent=False, reused=False)
            _create_children(session, row, intent, ctx)
            if hold is not None:
                row.approval = hold
                orders_repo.note(session, row, f"awaiting approval: {hold.get('why', '')}".rstrip(": "))
            order_id = row.id
    except IntegrityError:
        # another run inserted the same key between our read and our insert: that order wins
        with session_scope(db_url) as session:
            row_or_none = orders_repo.get_by_key(session, key)
            if row_or_none is None:
                raise  # not a duplicate key: another constraint (e.g. an unknown signal id)
            return _result(row_or_none, sent=False, reused=True)
    return send(db_url, broker, contract, order_id, ctx, hold_for_approval=hold is not None)


# Protective exits outlive the entry's day: they stay until one fills or the position is closed.
CHILD_TIF: Final = TimeInForce.GTC


def _create_children(session: Session, parent: Order, intent: OrderIntent, ctx: SendContext) -> None:
    """The bracket children of ``parent`` (same transaction): ``<key>:TP`` LMT and/or ``<key>:SL`` STP on the
    other side, for the entry's quantity, GTC."""
    exit_side = OrderSide.SELL if intent.side is OrderSide.BUY else OrderSide.BUY
    trail = intent.trail
    stop_type = OrderType.STOP if trail is None else OrderType.TRAIL
    for role, order_type, price in (
        (BracketRole.TAKE_PROFIT, OrderType.LIMIT, intent.take_profit),
        (BracketRole.STOP_LOSS, stop_type, intent.stop_loss),
    ):
        if price is None:
            continue
        orders_repo.create(
            session,
            key=child_ref(parent.idempotency_key, role),
            symbol=intent.symbol,
            side=exit_side,
            quantity=intent.quantity,
            order_type=order_type,
            tif=CHILD_TIF,
            limit_price=price if order_type is OrderType.LIMIT else None,
            stop_price=price if role is BracketRole.STOP_LOSS else None,
            trail_amount=trail.amount if trail is not None and role is BracketRole.STOP_LOSS else None,
            trail_percent=trail.percent if trail is not None and role is BracketRole.STOP_LOSS else None,
            conid=intent.conid,
            strategy_name=intent.strategy_name,
            strategy_id=intent.strategy_id,
            signal_id=intent.signal_id,
            flow_run_id=intent.flow_run_id,
            risk_decision={"bracket": role.value, "entry": parent.idempotency_key},
            run_mode=ctx.run_mode,
            expires_at=intent.expires_at,
            reference_price=price,
            created_at=ctx.now,
            parent_id=parent.id,
            detail=f"{role.value} of {parent.idempotency_key}",
        )


def _strategy_for(session: Session, order: Order) -> tuple[StrategyDefinition | None, str | None]:
    """The order's strategy as stored now, and why it may not order (None when it may)."""
    if not order.strategy_name:
        return None, "no strategy: an order without a strategy is never sent"
    row = strategies_repo.get_by_name(session, order.strategy_name)
    if row is None:
        return None, f"strategy {order.strategy_name!r} deleted"
    definition = from_row(row)
    if not row.active:
        return definition, f"strategy {order.strategy_name!r} inactive"
    return definition, None


def _gate(
    session: Session,
    order: Order,
    broker_facts: tuple[AccountValues | None, Mapping[str, Decimal]],
    ctx: SendContext,
) -> tuple[RiskDecision, list[str]]:
    account, quoted = broker_facts
    definition, strategy_problem = _strategy_for(session, order)
    marks, notes = marks_for_positions(session, ctx.marks, quoted)
    risk_ctx = gather_context(
        session,
        trading=ctx.trading,
        account=account,
        order=order,
        definition=definition,
        strategy_problem=strategy_problem,
        now=ctx.now,
        broker_is_simulated=ctx.dry_run,
        marks=marks,
    )
    price = order.limit_price if order.limit_price is not None else order.reference_price
    if definition is None:  # deleted (or no strategy): nothing to judge the order against
        return RiskDecision((CheckResult("strategy_active", False, str(strategy_problem)),)), notes
    if price is None:
        return RiskDecision((CheckResult("price", False, "no limit price and no reference price"),)), notes
    remaining = order.quantity - order.filled_quantity
    proposed = ProposedOrder(order.symbol, order.side, remaining, price, protective=order.parent_id is not None)
    return evaluate(definition.risk, proposed, risk_ctx), notes


def _broker_facts(
    db_url: str, broker: OrderBroker, ctx: SendContext
) -> tuple[AccountValues | None, dict[str, Decimal]]:
    """Account values and quotes for open positions the caller gave no mark for (asked outside any transaction)."""
    account = fetch_account(broker)
    with session_scope(db_url) as session:
        held = open_positions(session)
    wanted = {s: c for s, c in held.items() if s.upper() not in {k.upper() for k in ctx.marks}}
    return account, broker_marks(broker, wanted) if wanted else {}


def send(
    db_url: str,
    broker: OrderBroker,
    contract: ContractInfo,
    order_id: int,
    ctx: SendContext,
    *,
    hold_for_approval: bool = False,
) -> SubmitResult:
    """THE send path: every order reaches a broker only through here (first submission, retry, anything later).

    Under the shared send lock (so a halt or deactivation waits until this send has reached the broker, and no
    send starts its decision while one commits): the order row is re-read (only ``created`` is sent), the full
    risk gate runs with fresh context at this moment (:func:`_gate`), and the decision is stored on the order.
    A refusal ends the order (``expired`` when the signal is no longer valid, else ``risk_rejected``). Approved:
    ``submitting`` is committed, then the broker is called, then its answer is recorded.

    A bracket child goes out with its entry, except one to re-attach (the entry is at the broker, the child is
    not: the broker lost it, :func:`services.orders.monitor.mark_lost`): it is gated on its own (the order-count
    limits and the entry's signal expiry do not apply; a refusal leaves it ``created`` for the next retry) and
    sent by :func:`_reattach`.

    An order awaiting approval (``approval.state`` pending) is never sent: with ``hold_for_approval`` the gate
    judges it (a refusal ends it as above) and a pass leaves it ``created``, waiting; without, it is left as is.
    """
    with send_lock(db_url):
        with session_scope(db_url) as session:
            row = orders_repo.get(session, order_id)
            assert row is not None
            if row.status is not OrderStatus.CREATED or (
                row.parent_id is not None and not orders_repo.reattaching(session, row)
            ):
                # a bracket child is sent with its entry (one gate decision for the bracket), unless the entry is
                # already at the broker and the child is not (lost there): then it is re-attached on its own
                return _result(row, sent=False, reused=True)
            if orders_repo.awaiting_approval(row) and not hold_for_approval:
                return _result(row, sent=False, reused=True)  # a person decides first (services.orders.approval)
            if broker.connectivity is not Connectivity.CONNECTED:
                # certainly not sent, and nothing to judge the account by: it stays for the retry flow (a
                # protective order to re-attach waits out the outage without using its attempts)
                if row.parent_id is None:
                    row.submit_attempts += 1
                row.last_submit_error = f"broker {broker.connectivity.value}: not sent"
                return _result(row, sent=False, reused=False)
        facts = _broker_facts(db_url, broker, ctx)
        with session_scope(db_url) as session:
            row = orders_repo.get_for_update(session, order_id)
            assert row is not None
            if row.status is not OrderStatus.CREATED or (orders_repo.awaiting_approval(row) and not hold_for_approval):
                return _result(row, sent=False, reused=True)
            entry = orders_repo.get(session, row.parent_id) if row.parent_id is not None else None
            if entry is not None and not _size_reattached(session, row, entry):
                return _result(row, sent=False, reused=False)  # nothing left to protect: ended
            decision, notes = _gate(session, row, facts, ctx)
            attempt = row.submit_attempts + 1
            previous = dict(row.risk_decision or {})
            history = [*previous.pop("history", []), previous] if previous.get("checks") else []
            row.risk_decision = decision.to_json() | {
                "at": ctx.now.isoformat(),
                "attempt": attempt,
                "notes": notes,
                "history": history,
            }
            children = [c for c in orders_repo.children(session, row.id) if c.status is OrderStatus.CREATED]
            if entry is not None and not decision.approved:
                # a protective order is not ended by a refusal (halted, market closed, ...): it stays unsent and
                # the retry flow asks the gate again; a refusal sends nothing, so it uses no attempt (a long halt
                # or closed market does not use them up: only the broker's errors do)
                row.last_submit_error = "gate refused the re-attach: " + "; ".join(decision.reasons)
                orders_repo.note(session, row, row.last_submit_error)
                return _result(row, sent=False, reused=False)
            if not decision.approved:
                row.error = "; ".join(decision.reasons)
                target = OrderStatus.EXPIRED if decision.expired else OrderStatus.RISK_REJECTED
                orders_repo.set_status(session, row, target, f"gate at send (attempt {attempt}): {row.error}")
                for child in children:
                    orders_repo.set_status(session, child, target, f"entry {row.idempotency_key}: {row.error}")
                return _result(row, sent=False, reused=False)
            if hold_for_approval:
                orders_repo.note(session, row, "gate passed: awaiting approval, not sent")
                hold = row.approval or {}
                told = f"awaiting approval until {hold.get('deadline')}: {hold.get('why')}"
                publish(order_event(EventKind.APPROVAL_PENDING, row, told), session=session)
                return _result(row, sent=False, reused=False)
            row.submit_attempts = attempt
            orders_repo.set_status(session, row, OrderStatus.SUBMITTING, f"attempt {attempt}: gate passed")
            request = order_request(row, oca_group=None if children else _closing_group(session, row))
            for child in children:
                child.submit_attempts = attempt
                orders_repo.set_status(session, child, OrderStatus.SUBMITTING, f"with {row.idempotency_key}")
            ids = {row.idempotency_key: row.id} | {c.idempotency_key: c.id for c in children}
            bracket = _bracket(request, children)
            if entry is not None:
                entry_request, entry_done = order_request(entry), entry.status not in WORKING
                entry_perm = entry.ib_perm_id
                request = order_request(row, oca_group=entry.idempotency_key)
        # committed: from here on a crash leaves "submitting", which reconciliation resolves
        if entry is not None:
            return _reattach(db_url, broker, contract, order_id, request, (entry_request, entry_perm, entry_done))
        if bracket is not None:
            return _place_bracket(db_url, broker, contract, ids, bracket)
        return _place(db_url, broker, contract, order_id, request)


def _size_reattached(session: Session, child: Order, entry: Order) -> bool:
    """Size a child to re-attach to what its bracket still holds: the entry's fills less the children's, within
    the strategy's position on the entry's side; an entry still working keeps its size (the broker covers the
    fills). Nothing held: the child ends ``cancelled`` and False is returned."""
    if entry.status in WORKING:
        return True
    siblings = orders_repo.children(session, entry.id)
    held = entry.filled_quantity - sum((c.filled_quantity for c in siblings), Decimal(0))
    position = strategy_position(session, entry.strategy_name or "", entry.symbol)
    held = min(held, position if entry.side is OrderSide.BUY else -position)
    if held <= 0:
        orders_repo.set_status(session, child, OrderStatus.CANCELLED, "not re-attached: nothing left to protect")
        return False
    child.quantity = child.filled_quantity + held
    return True


def _reattach(
    db_url: str,
    broker: OrderBroker,
    contract: ContractInfo,
    order_id: int,
    request: OrderRequest,
    entry: tuple[OrderRequest, int | None, bool],
) -> SubmitResult:
    """Send a bracket child the broker does not have (gate passed, ``submitting`` committed). Its entry done
    (filled): a plain order in the entry's OCA group, for what the bracket holds. Its entry still working: attached
    to it (parentId) as in the bracket, only when the broker still knows the entry (never a second entry)."""
    entry_request, entry_perm, entry_done = entry
    if entry_done:
        return _place(db_url, broker, contract, order_id, request)

    def attach() -> BrokerOrder:
        if broker.find_order(entry_request.order_ref, entry_perm) is None:
            raise _NotSent(f"its entry {entry_request.order_ref} is not found at the broker: not attached")
        child = replace(request, oca_group=None)  # the bracket names the group
        tp, sl = (child if bracket_role(child.order_ref) is r else None for r in BracketRole.children())
        answers = broker.place_bracket(contract, Bracket(entry_request, tp, sl, entry_perm_id=entry_perm))
        for answer in answers:
            if answer.order_ref == request.order_ref:
                return answer
        raise _NotSent("the broker did not take the child")

    return _place(db_url, broker, contract, order_id, request, call=attach)


def order_request(row: Order, *, oca_group: str | None = None) -> OrderRequest:
    """What the broker is asked for ``row`` (its stored fields; a TRAIL with its trail)."""
    return OrderRequest(
        order_ref=row.idempotency_key,
        side=row.side,
        quantity=row.quantity,
        order_type=row.order_type,
        limit_price=row.limit_price,
        stop_price=row.stop_price,
        tif=row.tif,
        oca_group=oca_group,
        trail=Trail(amount=row.trail_amount, percent=row.trail_percent) if row.order_type is OrderType.TRAIL else None,
    )


def _bracket(entry: OrderRequest, children: list[Order]) -> Bracket | None:
    if not children:
        return None
    by_role = {bracket_role(c.idempotency_key): order_request(c) for c in children}
    return Bracket(entry, by_role.get(BracketRole.TAKE_PROFIT), by_role.get(BracketRole.STOP_LOSS))


def _closing_group(session: Session, row: Order) -> str | None:
    """An order against the strategy's working protective orders closes the position they protect: it joins
    their OCA group, so at the broker whichever fills first reduces (and at full size cancels) the others, and
    the position stays protected until the close executes."""
    for child in reversed(orders_repo.protective(session, row.symbol, row.strategy_name)):
        entry = orders_repo.get(session, child.parent_id) if child.parent_id is not None else None
        if child.side is row.side and child.status is not OrderStatus.CREATED and entry is not None:
            return entry.idempotency_key
    return None


def _place(
    db_url: str,
    broker: OrderBroker,
    contract: ContractInfo,
    order_id: int,
    request: OrderRequest,
    *,
    call: Callable[[], BrokerOrder] | None = None,
) -> SubmitResult:
    """Send one order (``call``: how, default ``place_order``) and record the broker's answer."""
    try:
        if broker.connectivity is not Connectivity.CONNECTED:
            raise _NotSent(f"broker {broker.connectivity.value}: not sent")
        broker_order = call() if call is not None else broker.place_order(contract, request)
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


def _place_bracket(
    db_url: str, broker: OrderBroker, contract: ContractInfo, ids: Mapping[str, int], bracket: Bracket
) -> SubmitResult:
    """Send a bracket and record every part; the result is the entry's."""
    entry_ref = bracket.entry.order_ref
    entry_id = ids[entry_ref]
    answers: list[BrokerOrder] = []
    try:
        if broker.connectivity is not Connectivity.CONNECTED:
            raise _NotSent(f"broker {broker.connectivity.value}: not sent")
        answers = broker.place_bracket(contract, bracket)
    except _NotSent as exc:
        for order_id in ids.values():
            _back_to_created(db_url, order_id, str(exc))
        return _reread(db_url, entry_id)
    except OrderRejectedError as exc:
        with session_scope(db_url) as session:
            for key, order_id in ids.items():
                row = orders_repo.get(session, order_id)
                assert row is not None
                row.error_code, row.error = exc.code, str(exc) if key == entry_ref else f"entry rejected: {exc}"
                orders_repo.set_status(session, row, OrderStatus.REJECTED, f"IB {exc.code}: {exc}")
            entry = orders_repo.get(session, entry_id)
            assert entry is not None
            return _result(entry, sent=True, reused=False)
    except BrokerConnectionError as exc:
        # may or may not have reached IB: ask the broker; the parts it does not know stay "submitting"
        try:
            answers = [bo for r in bracket.orders if (bo := broker.find_order(r.order_ref)) is not None]
        except TraderError:
            with session_scope(db_url) as session:
                for order_id in ids.values():
                    row = orders_repo.get(session, order_id)
                    assert row is not None
                    row.last_submit_error = f"{type(exc).__name__}: {exc}"
            return _reread(db_url, entry_id, sent=True)
        if not any(a.order_ref == entry_ref for a in answers):
            for order_id in ids.values():
                _back_to_created(db_url, order_id, f"{type(exc).__name__}: {exc} (not found at the broker)")
            return _reread(db_url, entry_id)
    with session_scope(db_url) as session:
        for answer in answers:
            row = orders_repo.get(session, ids[answer.order_ref]) if answer.order_ref in ids else None
            if row is not None:
                apply_broker_order(session, row, answer, "placed")
        entry = orders_repo.get(session, entry_id)
        assert entry is not None
        return _result(entry, sent=True, reused=False)


def _reread(db_url: str, order_id: int, *, sent: bool = False) -> SubmitResult:
    with session_scope(db_url) as session:
        row = orders_repo.get(session, order_id)
        assert row is not None
        return _result(row, sent=sent, reused=False)


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
    if order.parent_id is not None and broker_order.quantity > 0 and broker_order.quantity != order.quantity:
        # a bracket child covers what its entry filled: the broker resizes it (partial entry fill, OCA reduction)
        order.quantity = broker_order.quantity
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
