"""The strategy flow: six tasks, read top to bottom. Each step publishes one artifact (the lineage).

Before step 1 the gate (``tasks.market_gate.skip_state``) ends the run Completed "Skipped" when the stored
strategy is deleted or inactive (checked at the start of every run, whoever scheduled it), when its market is
closed or inside IB's reset window: no signal, no order.

Any step that cannot produce its output (unknown contract, no or invalid data, a template error) ends
the run with an ABSTAIN signal that carries the reason; nothing after it runs and nothing is ordered.

A BUY or SELL gets its decision chart (entry, stop, target and the signal drawn on the chart) before the order
step; drawing it never stops the order (``tasks/chart.py``).

When the strategy's ``approval`` rule holds the order, the run pauses after step 7 for a decision (Prefect UI
form or ``trader approve``/``reject``); approved it sends (step 8 re-runs the risk gate), rejected or timed out
it ends Completed "not approved: <reason>" with nothing placed (``tasks/approval.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prefect import flow
from prefect.runtime import flow_run
from prefect.states import Completed

from models.enums import SignalAction
from services.errors import InputError, SkipError
from tasks.analysis import analyse
from tasks.approval import approval_description, settle_approval, wait_for_approval
from tasks.chart import decision_chart, draw_chart
from tasks.indicators import calculate_indicators
from tasks.market_data import fetch_market_data
from tasks.market_gate import skip_state
from tasks.orders import OrderStepResult, place_order, place_time_exit
from tasks.resolve_symbol import resolve_symbol
from tasks.run_meta import label_run, load_definition, run_dir_for
from tasks.signal import StoredSignal, decide
from tasks.timeouts import run_step


@dataclass(frozen=True)
class StrategyRunResult:
    strategy: str
    flow_run_id: str | None
    signal_id: int
    action: str
    reason: str
    run_dir: Path
    chart_png: Path | None = None
    chart_html: Path | None = None
    decision_chart: Path | None = None  # BUY/SELL: the chart with entry, stop, target and the signal drawn
    prompt: Path | None = None
    order: OrderStepResult | None = None


@flow(name="strategy-run", flow_run_name="{strategy}", log_prints=False)
def strategy_run(strategy: str) -> StrategyRunResult:
    """Run one strategy once: resolve, bars, indicators, chart, analysis, signal, and the order for BUY/SELL."""
    definition = load_definition(strategy)  # None: the strategy was deleted after this run was scheduled
    if (skipped := skip_state(definition)) is not None:  # deleted/inactive, market closed, IB reset: "Skipped"
        return skipped  # type: ignore[return-value]
    assert definition is not None  # skip_state stops a deleted strategy
    run_dir = run_dir_for(definition)
    chart = outcome = data = contract = indicators = None
    failure: str | None = None
    try:
        contract = run_step(resolve_symbol, definition)
        data = run_step(fetch_market_data, definition, contract)
        indicators = run_step(calculate_indicators, definition, data)
        chart = run_step(draw_chart, definition, indicators, run_dir)
        outcome = run_step(analyse, definition, indicators, chart.png, run_dir)
    except (SkipError, InputError) as exc:  # a step past its time limit is a SkipError too (tasks/timeouts.py)
        failure = f"{type(exc).__name__}: {exc}"
    finally:  # one API call: name (with the bar time once known) and tags, whatever happened above
        label_run(definition, data.last_bar_time if data is not None else None)
    stored: StoredSignal = decide(definition, data, outcome, failure)
    drawn = decision_chart(definition, indicators, stored, run_dir)  # BUY/SELL only; never stops the order
    order = decision = None
    if stored.signal.action in (SignalAction.BUY, SignalAction.SELL) and contract is not None and data is not None:
        order = place_order(definition, contract, data, stored)
        if order.awaiting_approval:  # the strategy's approval rule: this run pauses until a person decides
            description = approval_description(definition, stored, order, chart, outcome)
            decision = wait_for_approval(definition, order, description)
            order = settle_approval(definition, contract, data, order, decision)
    elif definition.risk.max_holding_bars is not None and contract is not None and data is not None:
        order = place_time_exit(definition, contract, data)  # HOLD / ABSTAIN: only a due time exit is placed
    result = StrategyRunResult(
        strategy=strategy,
        flow_run_id=flow_run.get_id(),
        signal_id=stored.id,
        action=stored.signal.action.value,
        reason=stored.signal.reason,
        run_dir=run_dir,
        chart_png=chart.png_path if chart else None,
        chart_html=chart.html_path if chart else None,
        decision_chart=drawn,
        prompt=run_dir / "prompt.md" if outcome else None,
        order=order,
    )
    if decision is not None and not decision.approved:  # rejected or timed out: nothing was placed
        return Completed(message=f"not approved: {decision.reason or decision.state}", data=result)  # type: ignore[return-value]
    return result
