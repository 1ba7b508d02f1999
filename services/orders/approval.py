"""Order approval: a strategy's ``approval`` rule holds its order for a person before it is sent.

The order is created as usual and goes once through the send-time risk gate (:func:`~services.orders.submit.send`
with ``hold_for_approval``): a refusal ends it there and nobody is asked. Passed, it stays ``created`` with
``approval.state == "pending"``, and no send path sends it (the guard is in ``send`` itself, so neither the
order-retry flow nor anything else can). Then a decision (:func:`settle`):

* approved: recorded, then :func:`~services.orders.submit.send`, which re-runs the whole gate with fresh
  context (time has passed: limits, P&L, market hours, the signal's validity) under the send lock;
* rejected or timed out: recorded, the order ends ``cancelled`` "not approved: <reason>", nothing is placed.

Who decided, when and why are stored in the order's ``approval`` document and written as an order event, so the
order's lineage (``trader orders show``, the order artifact) shows them. Nothing here knows Prefect: the pause,
the form and the resume API live in ``tasks/approval.py`` and ``cli/approvals.py``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

from models.enums import ApprovalRule, TradingMode
from models.strategy import StrategyDefinition
from services.broker.types import ContractInfo
from services.db import session_scope
from services.orders.monitor import end_unsent
from services.orders.send_lock import send_lock
from services.orders.submit import OrderBroker, OrderIntent, SendContext, SubmitResult, send
from services.repositories import orders as orders_repo

PENDING: Final = "pending"
APPROVED: Final = "approved"
REJECTED: Final = "rejected"
TIMED_OUT: Final = "timed_out"


def approval_reason(definition: StrategyDefinition, intent: OrderIntent, ctx: SendContext) -> str | None:
    """Why the order of ``intent`` must wait for a person under the strategy's rule; None when it need not."""
    rule = definition.approval.rule
    if rule is ApprovalRule.NEVER or intent.quantity <= 0:
        return None
    if rule is ApprovalRule.ALWAYS:
        return "approval rule: always"
    if rule is ApprovalRule.LIVE_ONLY:
        live = ctx.trading.mode is TradingMode.LIVE and not ctx.dry_run
        return "approval rule: live_only (live account)" if live else None
    price = intent.limit_price if intent.limit_price is not None else intent.reference_price
    threshold = definition.approval.notional_threshold
    assert threshold is not None  # the model requires it for above_notional
    if price is None:
        return f"approval rule: above_notional {threshold} (no price to judge the notional by)"
    notional = abs(intent.quantity * price)
    return f"approval rule: notional {notional:.2f} above {threshold}" if notional > threshold else None


def hold_document(definition: StrategyDefinition, intent: OrderIntent, ctx: SendContext, why: str) -> dict[str, Any]:
    """The ``approval`` document of an order that waits: its rule, why, and the deadline for a decision."""
    deadline = ctx.now + dt.timedelta(minutes=definition.approval.timeout_minutes)
    return {
        "state": PENDING,
        "rule": definition.approval.rule.value,
        "why": why,
        "requested_at": ctx.now.isoformat(),
        "deadline": deadline.isoformat(),
        "timeout_minutes": definition.approval.timeout_minutes,
        "flow_run_id": intent.flow_run_id,
    }


def hold_for(definition: StrategyDefinition, intent: OrderIntent, ctx: SendContext) -> dict[str, Any] | None:
    """The hold document when the strategy's rule makes ``intent`` wait, else None (``submit_order(hold=...)``)."""
    why = approval_reason(definition, intent, ctx)
    return hold_document(definition, intent, ctx, why) if why is not None else None


@dataclass(frozen=True)
class Decision:
    """A person's (or the timeout's) answer to one order."""

    approved: bool
    by: str
    reason: str
    at: dt.datetime
    timed_out: bool = False

    @property
    def state(self) -> str:
        return APPROVED if self.approved else (TIMED_OUT if self.timed_out else REJECTED)

    def summary(self) -> str:
        verb = {APPROVED: "approved", REJECTED: "rejected", TIMED_OUT: "timed out"}[self.state]
        return f"{verb} by {self.by} at {self.at.isoformat()}" + (f": {self.reason}" if self.reason else "")


def record_decision(db_url: str, order_id: int, decision: Decision) -> dict[str, Any] | None:
    """Store ``decision`` on a pending order (and an order event); return the order's approval document.

    Only a pending order takes a decision: a second answer, or one for an order that ended meanwhile (halt,
    expiry) is not recorded; the document as it stands is returned.
    """
    with send_lock(db_url), session_scope(db_url) as session:
        row = orders_repo.get_for_update(session, order_id)
        assert row is not None
        doc = dict(row.approval or {})
        if doc.get("state") != PENDING:
            return doc or None
        doc |= {"state": decision.state, "by": decision.by, "at": decision.at.isoformat(), "reason": decision.reason}
        row.approval = doc
        orders_repo.note(session, row, f"approval {decision.summary()}")
        return doc


def settle(
    db_url: str,
    broker: OrderBroker | None,
    contract: ContractInfo,
    order_id: int,
    decision: Decision,
    ctx: SendContext,
) -> SubmitResult:
    """Record ``decision``; approved -> :func:`send` (the gate runs again now), else end the order unsent.
    ``broker`` is only used (and needed) to send an approved order."""
    doc = record_decision(db_url, order_id, decision)
    if doc is not None and doc.get("state") == APPROVED and decision.approved:
        if broker is None:
            raise ValueError("an approved order needs a broker to be sent")
        return send(db_url, broker, contract, order_id, ctx)
    if not decision.approved:
        end_unsent(db_url, order_id, f"not approved: {decision.reason or decision.state}")
    with session_scope(db_url) as session:
        row = orders_repo.get(session, order_id)
        assert row is not None
        return SubmitResult(
            order_id=row.id,
            key=row.idempotency_key,
            status=row.status,
            sent=False,
            reused=True,
            reasons=(f"not approved: {decision.reason or decision.state}",) if not decision.approved else (),
            error=row.error,
            error_code=row.error_code,
            risk_decision=row.risk_decision,
            approval=row.approval,
        )


def notional(quantity: Decimal, price: Decimal | None) -> Decimal | None:
    return None if price is None else abs(quantity * price)


def is_pending(doc: dict[str, Any] | None) -> bool:
    return (doc or {}).get("state") == PENDING


def approval_rows(doc: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The order artifact's rows for the approval document: the rule and why, then who decided, when and why."""
    if not doc:
        return []
    rows = [{"check": "approval", "result": doc.get("state", ""), "detail": doc.get("why", "")}]
    if doc.get("state") == PENDING:
        rows.append({"check": "approval deadline", "result": "", "detail": doc.get("deadline", "")})
    else:
        rows += [
            {"check": "approved by" if doc.get("state") == APPROVED else "decided by", "result": doc.get("by", ""),
             "detail": doc.get("at", "")},
            {"check": "approval reason", "result": "", "detail": doc.get("reason", "")},
        ]  # fmt: skip
    return rows


@dataclass(frozen=True)
class ApprovalView:
    """What a person sees before deciding (the pause form's description, ``trader approvals list``)."""

    order_id: int
    key: str
    strategy: str | None
    symbol: str
    side: str
    quantity: Decimal
    order_type: str
    limit_price: Decimal | None
    reference_price: Decimal | None
    take_profit: Decimal | None
    stop_loss: Decimal | None
    approval: dict[str, Any]
    checks: tuple[dict[str, Any], ...]
    flow_run_id: str | None
    created_at: dt.datetime

    @property
    def notional(self) -> Decimal | None:
        return notional(self.quantity, self.limit_price if self.limit_price is not None else self.reference_price)


def view(db_url: str, order_id: int) -> ApprovalView:
    """The order, its bracket and the gate's checks at hold time, read from the DB."""
    with session_scope(db_url) as session:
        row = orders_repo.get(session, order_id)
        if row is None:
            raise KeyError(order_id)
        prices = {c.idempotency_key.rsplit(":", 1)[-1]: c for c in orders_repo.children(session, row.id)}
        tp, sl = prices.get("TP"), prices.get("SL")
        return ApprovalView(
            order_id=row.id,
            key=row.idempotency_key,
            strategy=row.strategy_name,
            symbol=row.symbol,
            side=row.side.value,
            quantity=row.quantity,
            order_type=row.order_type.value,
            limit_price=row.limit_price,
            reference_price=row.reference_price,
            take_profit=tp.limit_price if tp is not None else None,
            stop_loss=sl.stop_price if sl is not None else None,
            approval=dict(row.approval or {}),
            checks=tuple((row.risk_decision or {}).get("checks", ())),
            flow_run_id=row.flow_run_id,
            created_at=row.created_at,
        )


def pending_views(db_url: str) -> list[ApprovalView]:
    """Every order waiting for a decision, oldest first."""
    with session_scope(db_url) as session:
        ids = [o.id for o in orders_repo.pending_approvals(session)]
    return [view(db_url, i) for i in ids]


def _table(rows: list[tuple[str, Any]]) -> str:
    lines = ["| field | value |", "|---|---|"]
    lines += [f"| {k} | {'' if v is None else str(v).replace('|', '/')} |" for k, v in rows]
    return "\n".join(lines)


def describe(
    order: ApprovalView,
    *,
    definition: StrategyDefinition,
    signal_rows: list[tuple[str, Any]],
    reasoning: str | None,
    chart_uri: str | None,
) -> str:
    """The markdown a person reads in the Prefect UI's resume form: chart, signal, sizing, bracket, risk checks,
    the analyst's reasoning, and the deadline."""
    sizing = definition.risk.sizing
    what = f"{order.side} {order.quantity.normalize():f} {order.symbol}"
    parts = [
        f"## Approve {what}? ({definition.name}, order {order.order_id})",
        f"Why it waits: {order.approval.get('why', '')}. Decide by **{order.approval.get('deadline', '')}** "
        f"(else it is not sent). CLI: `trader approve {order.order_id}` or "
        f"`trader reject {order.order_id} --reason ...`",
    ]
    if chart_uri:
        parts.append(f"![{order.symbol} chart]({chart_uri})")
    parts += ["### Signal", _table(signal_rows)]
    parts += [
        "### Sizing",
        _table(
            [
                ("order", f"{order.side} {order.quantity} {order.symbol} {order.order_type}"),
                ("limit price", order.limit_price),
                ("reference price", order.reference_price),
                ("notional", f"{order.notional:.2f}" if order.notional is not None else None),
                ("sizing method", sizing.method.value),
                ("max notional per order", definition.risk.max_notional_per_order),
                ("key", order.key),
            ]
        ),
        "### Bracket",
        _table([("take profit (LMT)", order.take_profit), ("stop loss (STP)", order.stop_loss)]),
        "### Risk checks (at hold time; they run again when approved)",
    ]
    if order.checks:
        lines = ["| check | result | detail |", "|---|---|---|"]
        for c in order.checks:
            detail = str(c.get("detail", "")).replace("|", "/")
            lines.append(f"| {c.get('name')} | {'pass' if c.get('passed') else 'FAIL'} | {detail} |")
        parts.append("\n".join(lines))
    else:
        parts.append("_not judged yet (the broker was not connected); the gate runs when approved_")
    parts += ["### Analyst reasoning", reasoning or "_none_"]
    return "\n\n".join(parts)
