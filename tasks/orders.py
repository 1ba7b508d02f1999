"""Step 7 (BUY/SELL, or a due time exit): plan -> risk gate -> idempotent submit; one artifact ``<strategy>-order``.

What the signal asks for is decided by :func:`services.orders.planning.plan_order`, the decision replay makes
too (one position per strategy, no pyramiding; a BUY while long, or a SELL while flat without shorting, is
stored as a refusal and nothing is sent). An entry is a bracket: the signal's target and stop go to the broker
as a take-profit LMT and a protective STP attached to it (``services.orders.submit``). A signal against the
strategy's open position (SELL on a long, BUY on a short) closes it instead: the whole position, in the
protective orders' OCA group; once the close has
filled, what still protects the position is cancelled. With ``risk.max_holding_bars`` a position held that many
bars is closed first (``plan_time_exit``, a market order keyed ``<key>:time``), whatever the signal; on a HOLD or
ABSTAIN run only that is checked (``place_time_exit``).

Dry run (``settings.trading.dry_run``): the order goes to a :class:`MemoryBroker` seeded with this run's bars
(no socket); its fills are recorded at once (ids made unique per order) so positions follow. Otherwise to the
runtime's broker (TWS / the simulator), whose fills the order monitor records.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from models.bars import TIMESTAMP
from models.enums import OrderStatus, SignalAction
from models.strategy import BAR_SECONDS, StrategyDefinition
from services.broker.loop_owner import SyncBroker
from services.broker.memory import MemoryBroker
from services.broker.types import ContractInfo
from services.db import session_scope
from services.orders.approval import approval_rows, hold_for, is_pending
from services.orders.context import fetch_account
from services.orders.dry_run import work_protection
from services.orders.monitor import cancel_protective, record_dry_run_fills
from services.orders.planning import OrderPlan, held_bars, plan_order, plan_time_exit, sizing_atr
from services.orders.submit import OrderBroker, OrderIntent, SendContext, SubmitResult, signal_expiry, submit_order
from services.positions import strategy_holding
from services.runtime import get_runtime
from tasks.artifacts import artifact_key, publish_table
from tasks.market_data import MarketData
from tasks.run_log import step_log
from tasks.signal import StoredSignal
from tasks.timeouts import ORDER_TIMEOUT_S

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OrderStepResult:
    order_id: int
    key: str
    status: str
    sent: bool
    reused: bool
    reasons: tuple[str, ...]
    dry_run: bool
    awaiting_approval: bool = False  # created, not sent: the run pauses for a decision (tasks/approval.py)


def _memory(contract: ContractInfo, data: MarketData) -> MemoryBroker:
    return MemoryBroker(
        [contract], {contract.symbol: data.frame[[TIMESTAMP, "open", "high", "low", "close", "volume"]]}
    )


def _dry_run_broker(contract: ContractInfo, data: MarketData, now: dt.datetime) -> SyncBroker:
    memory = _memory(contract, data)
    memory.clock.set(now)
    broker = SyncBroker(lambda: memory)
    broker.connect()
    return broker


def order_for_signal(
    definition: StrategyDefinition,
    contract: ContractInfo,
    data: MarketData,
    stored: StoredSignal,
    *,
    broker: OrderBroker,
    dry_run: bool,
    now: dt.datetime,
    flow_run_id: str | None = None,
) -> SubmitResult:
    """Plan, gate and submit the order of one BUY/SELL signal (no Prefect needed; the task wraps it).

    Dry run: first the strategy's protective orders left working by earlier runs are worked against this run's
    bars (``services.orders.dry_run``), so the plan sees the position a stop or target may have closed."""
    runtime = get_runtime()
    signal = stored.signal
    if signal.action not in (SignalAction.BUY, SignalAction.SELL):
        raise ValueError(f"no order for a {signal.action.value} signal")
    risk = definition.risk
    last_close = _last_close(data)
    if signal.entry is None:
        signal = dataclasses.replace(signal, entry=last_close)
    position, due = _position_and_time_exit(runtime.database_url, definition, contract, data, now, dry_run=dry_run)
    if due is not None:  # the time exit comes first: this bar's signal order is not placed
        return _submit(definition, contract, data, due, broker=broker, dry_run=dry_run, now=now,
                       bar_time=signal.bar_time, flow_run_id=flow_run_id, signal_id=stored.id,
                       time_exit=True)  # fmt: skip
    account = fetch_account(broker)
    plan = plan_order(
        signal,
        risk,
        symbol=definition.symbol,
        position=position,
        equity=account.net_liquidation if account is not None else None,
        atr=lambda: sizing_atr(data.frame, risk.sizing.atr_period),
        size_increment=contract.size_increment,
        min_tick=contract.min_tick,
    )
    return _submit(definition, contract, data, plan, broker=broker, dry_run=dry_run, now=now,
                   bar_time=signal.bar_time, flow_run_id=flow_run_id, signal_id=stored.id)  # fmt: skip


def time_exit_for(
    definition: StrategyDefinition,
    contract: ContractInfo,
    data: MarketData,
    *,
    broker: OrderBroker,
    dry_run: bool,
    now: dt.datetime,
    flow_run_id: str | None = None,
) -> SubmitResult | None:
    """The strategy's time exit on a run whose signal orders nothing (HOLD, ABSTAIN): close a position held
    ``risk.max_holding_bars`` bars (``services.orders.planning.plan_time_exit``); None when none is due."""
    if definition.risk.max_holding_bars is None:
        return None
    _, due = _position_and_time_exit(get_runtime().database_url, definition, contract, data, now, dry_run=dry_run)
    if due is None:
        return None
    bar_time = data.last_bar_time.to_pydatetime()
    return _submit(definition, contract, data, due, broker=broker, dry_run=dry_run, now=now, bar_time=bar_time,
                   flow_run_id=flow_run_id, time_exit=True)  # fmt: skip


def _last_close(data: MarketData) -> Decimal:
    return Decimal(repr(float(data.frame["close"].iloc[-1])))


def _work_dry_run_protection(
    db_url: str, definition: StrategyDefinition, contract: ContractInfo, data: MarketData, now: dt.datetime
) -> None:
    for moved in work_protection(db_url, _memory(contract, data), contract, definition.name, now):
        log.info("dry run: %s %s -> %s on the bars since its entry filled", moved.key, moved.before.value,
                 moved.after.value)  # fmt: skip


def _position_and_time_exit(
    db_url: str,
    definition: StrategyDefinition,
    contract: ContractInfo,
    data: MarketData,
    now: dt.datetime,
    *,
    dry_run: bool,
) -> tuple[Decimal, OrderPlan | None]:
    """The strategy's position (in a dry run after its protective orders were worked over this run's bars) and the
    time exit due on it, if any."""
    if dry_run:
        _work_dry_run_protection(db_url, definition, contract, data, now)
    with session_scope(db_url) as session:
        position, opened = strategy_holding(session, definition.name, definition.symbol)
    return position, _time_exit_plan(definition, data, position, opened, _last_close(data))


def _time_exit_plan(
    definition: StrategyDefinition, data: MarketData, position: Decimal, opened: dt.datetime | None, close: Decimal
) -> OrderPlan | None:
    if definition.risk.max_holding_bars is None or opened is None:
        return None
    step = dt.timedelta(seconds=BAR_SECONDS[definition.bar_size])
    ends = [t + step for t in pd.DatetimeIndex(data.frame[TIMESTAMP]).to_pydatetime()]
    held = held_bars(ends, opened)
    return plan_time_exit(definition.risk, position=position, held=held, reference=close)


def _submit(
    definition: StrategyDefinition,
    contract: ContractInfo,
    data: MarketData,
    plan: OrderPlan,
    *,
    broker: OrderBroker,
    dry_run: bool,
    now: dt.datetime,
    bar_time: dt.datetime,
    flow_run_id: str | None,
    signal_id: int | None = None,
    time_exit: bool = False,
) -> SubmitResult:
    """Gate and submit a plan (``submit_order``); a close that filled at once cancels the position's protection."""
    runtime = get_runtime()
    closing = plan.closing > 0
    intent = OrderIntent(
        strategy_name=definition.name,
        symbol=definition.symbol,
        side=plan.side,
        quantity=plan.quantity,
        bar_time=bar_time,
        order_type=plan.order_type,
        limit_price=plan.limit,
        tif=plan.tif,
        conid=contract.conid,
        signal_id=signal_id,
        flow_run_id=flow_run_id,
        expires_at=signal_expiry(definition, bar_time),
        reference_price=plan.reference,
        take_profit=plan.target,
        stop_loss=plan.stop,
        trail=plan.trail,
        time_exit=time_exit,
    )
    ctx = SendContext(
        trading=runtime.settings.trading, now=now, dry_run=dry_run, marks={definition.symbol.upper(): _last_close(data)}
    )
    # the strategy's approval rule holds entries and signal closes; a time exit, like the bracket's stop and
    # target, belongs to the position already approved
    hold = hold_for(definition, intent, ctx) if plan.refusal is None and not time_exit else None
    result = submit_order(runtime.database_url, broker, contract, intent, ctx, refusal=plan.refusal, hold=hold)
    if dry_run and result.sent and result.status in (OrderStatus.FILLED, OrderStatus.PARTIALLY_FILLED):
        # the in-memory broker is gone after this step: its fills are recorded now, so positions (and the next
        # decision's position limit) see them at once
        record_dry_run_fills(runtime.database_url, result.order_id, result.key, broker.executions())
    step_log("order", _story(plan, result))
    if closing and result.status is OrderStatus.FILLED:
        cancel_protective(
            runtime.database_url,
            None if dry_run else broker,
            definition.symbol,
            definition.name,
            f"position closed by {result.key}",
        )
    return result


def _story(plan: OrderPlan, result: SubmitResult) -> str:
    """Quantity, how it was sized and the gate's verdict, in one line (no account id: it is not a figure here)."""
    decision = result.risk_decision or {}
    if plan.refusal is not None:
        verdict = f"refused by the plan ({plan.refusal.name}: {plan.refusal.detail})"
    elif "approved" in decision:
        verdict = (
            "gate approved" if decision["approved"] else "gate REJECTED: " + "; ".join(decision.get("reasons", []))
        )
    else:
        verdict = "gate not run"
    sizing = f"; sizing {plan.sizing}" if plan.sizing else ""
    return (
        f"{plan.note}{sizing}; {verdict}; status {result.status.value}"
        + (" (reused)" if result.reused else "")
        + (f", sent as {result.key}" if result.sent else f", {result.key} not sent")
    )


def _rows(result: SubmitResult, dry_run: bool) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = [
        {"check": "order", "result": result.status.value, "detail": f"{result.key} (id {result.order_id})"},
        {"check": "mode", "result": "dry run" if dry_run else "broker", "detail": "reused" if result.reused else ""},
    ]
    for check in (result.risk_decision or {}).get("checks", []):
        rows.append(
            {"check": check["name"], "result": "pass" if check["passed"] else "FAIL", "detail": check["detail"]}
        )
    if result.error:
        rows.append({"check": "error", "result": str(result.error_code or ""), "detail": result.error})
    return rows + approval_rows(result.approval)


# A timeout here never leaves an order ambiguous: submit_order stores the order as `submitting` (with its
# idempotency key) before the broker call, so an order abandoned mid-call stays `submitting` and the order
# monitor's reconciliation (services/orders/monitor.py) settles it against the broker; a rerun reuses the key.
@task(name="7 order", cache_policy=NO_CACHE, timeout_seconds=ORDER_TIMEOUT_S)
def place_order(
    definition: StrategyDefinition, contract: ContractInfo, data: MarketData, stored: StoredSignal
) -> OrderStepResult:
    """Size, gate and submit the signal's order; publish the decision table as ``<strategy>-order``."""
    result = _with_broker(
        contract,
        data,
        lambda broker, dry_run, now, run_id: order_for_signal(
            definition, contract, data, stored, broker=broker, dry_run=dry_run, now=now, flow_run_id=run_id
        ),
    )
    assert result is not None
    return _published(definition, result)


@task(name="7 time exit", cache_policy=NO_CACHE, timeout_seconds=ORDER_TIMEOUT_S)
def place_time_exit(definition: StrategyDefinition, contract: ContractInfo, data: MarketData) -> OrderStepResult | None:
    """On a run whose signal orders nothing: close the position once it is past ``risk.max_holding_bars``."""
    result = _with_broker(
        contract,
        data,
        lambda broker, dry_run, now, run_id: time_exit_for(
            definition, contract, data, broker=broker, dry_run=dry_run, now=now, flow_run_id=run_id
        ),
    )
    return _published(definition, result) if result is not None else None


def _with_broker(
    contract: ContractInfo,
    data: MarketData,
    step: Callable[[OrderBroker, bool, dt.datetime, str | None], SubmitResult | None],
) -> SubmitResult | None:
    """Run ``step`` with this run's broker: a fresh in-memory one over the run's bars in a dry run, else the
    runtime's session."""
    runtime = get_runtime()
    now = runtime.clock()
    dry_run = runtime.settings.trading.dry_run
    broker: OrderBroker
    own: SyncBroker | None = None
    if dry_run:
        broker = own = _dry_run_broker(contract, data, now)
    else:
        broker = runtime.broker()
    try:
        run_id = flow_run.get_id()
        return step(broker, dry_run, now, str(run_id) if run_id else None)
    finally:
        if own is not None:
            own.close()


def _published(definition: StrategyDefinition, result: SubmitResult) -> OrderStepResult:
    dry_run = get_runtime().settings.trading.dry_run
    refused = result.status is OrderStatus.RISK_REJECTED
    publish_table(
        artifact_key(definition.name, "order"),
        _rows(result, dry_run),
        f"{definition.name}: order {result.status.value}" + (" (refused)" if refused else ""),
    )
    return OrderStepResult(
        result.order_id,
        result.key,
        result.status.value,
        result.sent,
        result.reused,
        result.reasons,
        dry_run,
        awaiting_approval=result.status is OrderStatus.CREATED and is_pending(result.approval),
    )
