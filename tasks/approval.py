"""The approval step (after step 7, only when the strategy's ``approval`` rule holds the order).

:func:`wait_for_approval` pauses the flow run with ``pause_flow_run(wait_for_input=ApprovalInput)``: the Prefect
UI shows the resume form with a markdown description (chart, signal, sizing, bracket, risk checks, the analyst's
reasoning); ``trader approve/reject`` answer through the same resume API. No answer within the strategy's
``approval.timeout_minutes`` is a decision too ("timed out"). :func:`settle_approval` records the decision on the
order, then sends (the risk gate runs again) or ends it unsent, and publishes the order artifact again.

A paused run blocks where it is (process worker: its process; warm worker: a thread that the worker no longer
counts against its concurrency, see ``deployments/warm_worker.py``), so resuming needs no re-run of steps 1-7.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Final, Literal
from uuid import UUID

from prefect import get_client, task
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.runtime import flow_run
from prefect.states import Running
from pydantic import Field

from models.enums import OrderStatus
from models.strategy import StrategyDefinition
from services.broker.loop_owner import SyncBroker
from services.broker.types import ContractInfo
from services.charts import ChartResult
from services.llm.outcome import AnalysisOutcome
from services.orders import approval
from services.orders.monitor import record_dry_run_fills
from services.orders.submit import OrderBroker, SendContext
from services.runtime import get_runtime
from tasks.artifacts import artifact_key, png_data_uri, publish_table
from tasks.market_data import MarketData
from tasks.orders import OrderStepResult, _dry_run_broker, _rows
from tasks.signal import StoredSignal
from tasks.timeouts import ORDER_TIMEOUT_S

POLL_SECONDS: Final = 2
DONE: Final = (
    OrderStatus.FILLED,
    OrderStatus.PARTIALLY_FILLED,
)  # how often a paused run asks the server whether it was resumed


class ApprovalInput(RunInput):
    """The resume form: approve or reject, why, and who decides (Prefect's OSS UI has no user to take it from)."""

    decision: Literal["approve", "reject"] = Field(description="approve: send the order; reject: do not send it")
    reason: str = Field(default="", max_length=500, description="Why (shown on the order)")
    approver: str = Field(default="", max_length=128, description="Your name: who decided")


def approval_description(
    definition: StrategyDefinition,
    stored: StoredSignal,
    order: OrderStepResult,
    chart: ChartResult | None,
    outcome: AnalysisOutcome | None,
) -> str:
    """The form's markdown for ``order`` (read back from the DB: what the gate judged is what is shown)."""
    signal = stored.signal
    rows: list[tuple[str, Any]] = [
        ("action", signal.action.value),
        ("bar", signal.bar_time.isoformat()),
        ("confidence", signal.confidence),
        ("entry", signal.entry),
        ("stop", signal.stop),
        ("target", signal.target),
        ("risk/reward", signal.risk_reward),
        ("reason", signal.reason),
    ]
    reasoning = outcome.analysis.reasoning if outcome is not None and outcome.analysis is not None else None
    return approval.describe(
        approval.view(get_runtime().database_url, order.order_id),
        definition=definition,
        signal_rows=rows,
        reasoning=reasoning,
        chart_uri=png_data_uri(chart.png) if chart is not None else None,
    )


def wait_for_approval(definition: StrategyDefinition, order: OrderStepResult, description: str) -> approval.Decision:
    """Pause this flow run until the order is approved or rejected (UI form or CLI), at most the strategy's timeout.

    Called from the flow body (Prefect pauses flow runs, not tasks)."""
    minutes = definition.approval.timeout_minutes
    form = ApprovalInput.with_initial_data(description=description, approver="")
    try:
        answer = pause_flow_run(
            wait_for_input=form, timeout=max(1, round(minutes * 60)), poll_interval=POLL_SECONDS,
            key=f"approval-{order.order_id}",
        )  # fmt: skip
    except FlowPauseTimeout:
        _resume_after_timeout()
        return approval.Decision(
            False, "timeout", f"no decision within {minutes:g} minutes", get_runtime().clock(), timed_out=True
        )
    return approval.Decision(
        answer.decision == "approve", answer.approver.strip() or "unnamed", answer.reason.strip(), get_runtime().clock()
    )


def _resume_after_timeout() -> None:
    """Leave the timed-out pause: the server turns any state proposed after an expired pause into Failed ("never
    resumed"), but a run that was not approved ends Completed. Forcing Running is what a resume would have done."""
    run_id = flow_run.get_id()
    if run_id:
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(UUID(run_id), Running(message="approval timed out"), force=True)


@task(name="8 approval", cache_policy=NO_CACHE, timeout_seconds=ORDER_TIMEOUT_S)
def settle_approval(
    definition: StrategyDefinition,
    contract: ContractInfo,
    data: MarketData,
    order: OrderStepResult,
    decision: approval.Decision,
) -> OrderStepResult:
    """Record the decision on the order; approved: send it (gate re-run now), else end it unsent. Publish the
    order artifact again (``<strategy>-order``, a new version) with who decided, when and why."""
    runtime = get_runtime()
    now = runtime.clock()
    dry_run = runtime.settings.trading.dry_run
    own: SyncBroker | None = None
    broker: OrderBroker | None = None
    if decision.approved:
        broker = own = _dry_run_broker(contract, data, now) if dry_run else None
        broker = broker or runtime.broker()
    last_close = Decimal(repr(float(data.frame["close"].iloc[-1])))
    ctx = SendContext(
        trading=runtime.settings.trading, now=now, dry_run=dry_run, marks={definition.symbol.upper(): last_close}
    )
    try:
        result = approval.settle(runtime.database_url, broker, contract, order.order_id, decision, ctx)
        if broker is not None and dry_run and result.sent and result.status in DONE:
            record_dry_run_fills(runtime.database_url, result.order_id, result.key, broker.executions())
    finally:
        if own is not None:
            own.close()
    publish_table(
        artifact_key(definition.name, "order"),
        _rows(result, dry_run),
        f"{definition.name}: order {result.status.value} ({decision.summary()})",
    )
    return OrderStepResult(
        result.order_id, result.key, result.status.value, result.sent, result.reused, result.reasons, dry_run
    )
