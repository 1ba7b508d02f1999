"""Order approval without Prefect (services/orders/approval.py): the strategy's rule, the held order that no send
path sends, and a decision that sends through the gate again or ends the order unsent, with who/when/why stored.

A MemoryBroker stands in for a real broker (not a dry run); SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal as D

import pytest
from pydantic import ValidationError

from models.enums import ApprovalRule, OrderStatus, TradingMode
from models.strategy import Approval, StrategyDefinition
from services.broker.loop_owner import SyncBroker
from services.broker.memory import MemoryBroker
from services.db import session_scope
from services.orders import approval
from services.orders.monitor import retry_orders
from services.orders.submit import OrderIntent, SendContext, SubmitResult, send, submit_order
from services.repositories import orders as orders_repo
from services.settings import TradingSettings
from services.strategies import set_active_now
from tests.orders_support import NOW, SPY, memory_broker, send_ctx, store_strategy, strategy
from tests.test_send_gate import CTX, at_broker, order, row


@pytest.fixture
def world() -> Iterator[tuple[MemoryBroker, SyncBroker]]:
    yield from memory_broker()


def with_rule(rule: ApprovalRule, threshold: str | None = None, minutes: float = 15) -> StrategyDefinition:
    doc = Approval(rule=rule, notional_threshold=D(threshold) if threshold else None, timeout_minutes=minutes)
    return strategy().model_copy(update={"approval": doc})


def held(db_url: str, broker: SyncBroker, it: OrderIntent, ctx: SendContext = CTX) -> SubmitResult:
    definition = with_rule(ApprovalRule.ALWAYS)
    store_strategy(db_url, definition)
    hold = approval.hold_for(definition, it, ctx)
    assert hold is not None
    return submit_order(db_url, broker, SPY, it, ctx, hold=hold)


def events(db_url: str, order_id: int) -> list[str]:
    with session_scope(db_url) as s:
        return [e.detail or "" for e in orders_repo.events(s, order_id)]


def test_the_approval_document_is_validated() -> None:
    assert strategy().approval == Approval()  # omitted: never, 15 minutes
    assert (Approval().rule, Approval().timeout_minutes) == (ApprovalRule.NEVER, 15)
    with pytest.raises(ValidationError, match="needs 'notional_threshold'"):
        Approval(rule=ApprovalRule.ABOVE_NOTIONAL)
    with pytest.raises(ValidationError, match="only applies to the above_notional"):
        Approval(rule=ApprovalRule.ALWAYS, notional_threshold=D(5))
    with pytest.raises(ValidationError):
        Approval(timeout_minutes=0)
    with pytest.raises(ValidationError):
        StrategyDefinition.model_validate(strategy().model_dump() | {"approval": {"rule": "sometimes"}})


def test_each_rule_says_when_an_order_waits() -> None:
    it = order(qty=10, limit="50.00")  # notional 500
    paper = send_ctx(NOW, dry_run=False)
    live = send_ctx(NOW, dry_run=False, trading=TradingSettings(mode=TradingMode.LIVE, live_enabled=True))
    live_dry = send_ctx(NOW, dry_run=True, trading=TradingSettings(mode=TradingMode.LIVE, live_enabled=True))
    assert approval.approval_reason(with_rule(ApprovalRule.NEVER), it, live) is None
    assert approval.approval_reason(with_rule(ApprovalRule.ALWAYS), it, paper) == "approval rule: always"
    assert approval.approval_reason(with_rule(ApprovalRule.LIVE_ONLY), it, paper) is None
    assert approval.approval_reason(with_rule(ApprovalRule.LIVE_ONLY), it, live_dry) is None
    assert "live_only" in (approval.approval_reason(with_rule(ApprovalRule.LIVE_ONLY), it, live) or "")
    above = approval.approval_reason(with_rule(ApprovalRule.ABOVE_NOTIONAL, "499.99"), it, paper)
    assert above == "approval rule: notional 500.00 above 499.99"
    assert approval.approval_reason(with_rule(ApprovalRule.ABOVE_NOTIONAL, "500"), it, paper) is None
    doc = approval.hold_for(with_rule(ApprovalRule.ALWAYS, minutes=2.5), it, paper)
    assert doc is not None and doc["state"] == "pending"
    assert dt.datetime.fromisoformat(doc["deadline"]) == NOW + dt.timedelta(minutes=2.5)


def test_a_held_order_is_judged_once_and_never_sent_by_any_send_path(
    db_url: str, world: tuple[MemoryBroker, SyncBroker]
) -> None:
    _mb, broker = world
    result = held(db_url, broker, order())
    assert (result.status, result.sent) == (OrderStatus.CREATED, False)
    assert approval.is_pending(result.approval) and result.risk_decision is not None
    assert result.risk_decision["approved"] is True and result.risk_decision["checks"]  # the gate ran at hold time
    assert at_broker(broker) == []
    assert "gate passed: awaiting approval, not sent" in events(db_url, result.order_id)
    again = send(db_url, broker, SPY, result.order_id, CTX)
    assert (again.status, again.sent) == (OrderStatus.CREATED, False)
    with session_scope(db_url) as s:  # even as the retry flow's kind of order (a submit error, attempts left)
        r = orders_repo.get(s, result.order_id)
        assert r is not None
        r.last_submit_error = "broker disconnected: not sent"
    assert [x.sent for x in retry_orders(db_url, broker, lambda _w: SPY, 3, CTX)] == [False]
    assert at_broker(broker) == []
    assert [v.order_id for v in approval.pending_views(db_url)] == [result.order_id]


def test_approval_sends_through_the_gate_and_stores_who_when_why(
    db_url: str, world: tuple[MemoryBroker, SyncBroker]
) -> None:
    _mb, broker = world
    result = held(db_url, broker, order())
    later = NOW + dt.timedelta(minutes=3)
    decision = approval.Decision(True, "alice", "chart looks right", later)
    sent = approval.settle(db_url, broker, SPY, result.order_id, decision, send_ctx(later, dry_run=False))
    assert sent.sent and sent.status is OrderStatus.SUBMITTED
    assert at_broker(broker) == [result.key]
    stored = row(db_url, result.order_id).approval or {}
    assert (stored["state"], stored["by"], stored["reason"]) == ("approved", "alice", "chart looks right")
    assert stored["at"] == later.isoformat()
    assert row(db_url, result.order_id).risk_decision["at"] == later.isoformat()  # type: ignore[index]  # re-run
    assert any(e.startswith("approval approved by alice") for e in events(db_url, result.order_id))
    assert approval.pending_views(db_url) == []
    late = approval.record_decision(db_url, result.order_id, approval.Decision(False, "bob", "no", later))
    assert late is not None and late["by"] == "alice"  # a second answer changes nothing


def test_an_approved_order_the_gate_now_refuses_is_not_sent(
    db_url: str, world: tuple[MemoryBroker, SyncBroker]
) -> None:
    _mb, broker = world
    result = held(db_url, broker, order())
    set_active_now(db_url, "spy-test", False)  # while it waited: the gate at send time sees it
    decision = approval.Decision(True, "alice", "", NOW)
    refused = approval.settle(db_url, broker, SPY, result.order_id, decision, CTX)
    assert not refused.sent and refused.status in (OrderStatus.RISK_REJECTED, OrderStatus.CANCELLED)
    assert at_broker(broker) == []


@pytest.mark.parametrize("timed_out", [False, True])
def test_rejection_and_timeout_end_the_order_unsent(
    db_url: str, world: tuple[MemoryBroker, SyncBroker], timed_out: bool
) -> None:
    _mb, broker = world
    result = held(db_url, broker, order())
    who, why = ("timeout", "no decision within 15 minutes") if timed_out else ("bob", "too big")
    ended = approval.settle(
        db_url, None, SPY, result.order_id, approval.Decision(False, who, why, NOW, timed_out=timed_out), CTX
    )
    assert (ended.status, ended.sent) == (OrderStatus.CANCELLED, False)
    assert ended.reasons == (f"not approved: {why}",)
    assert at_broker(broker) == []
    stored = row(db_url, result.order_id).approval or {}
    assert stored["state"] == ("timed_out" if timed_out else "rejected") and stored["by"] == who
    trail = events(db_url, result.order_id)
    assert f"not approved: {why} (never sent)" in trail
    rows = approval.approval_rows(stored)
    assert {"check": "approval reason", "result": "", "detail": why} in rows


def test_a_hold_while_the_broker_is_down_waits_and_sends_once_approved(
    db_url: str, world: tuple[MemoryBroker, SyncBroker]
) -> None:
    mb, broker = world
    mb.drop_connection()
    result = held(db_url, broker, order())
    assert result.status is OrderStatus.CREATED and approval.is_pending(result.approval)
    view = approval.view(db_url, result.order_id)
    md = approval.describe(view, definition=with_rule(ApprovalRule.ALWAYS), signal_rows=[], reasoning=None,
                           chart_uri=None)  # fmt: skip
    assert "not judged yet" in md and f"trader approve {result.order_id}" in md
    broker.connect()
    assert [x.sent for x in retry_orders(db_url, broker, lambda _w: SPY, 3, CTX)] == [False]
    assert at_broker(broker) == []
    sent = approval.settle(db_url, broker, SPY, result.order_id, approval.Decision(True, "alice", "", NOW), CTX)
    assert sent.sent and at_broker(broker) == [result.key]
