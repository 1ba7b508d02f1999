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
from uuid import UUID

import pandas as pd
from prefect import flow, get_client
from prefect.runtime import flow_run
from prefect.states import Completed

from models.enums import BarSize, SignalAction
from models.strategy import BAR_SECONDS, StrategyDefinition
from services.db import session_scope
from services.errors import InputError, SkipError
from services.runtime import get_runtime
from services.strategies import find_definition
from tasks.analysis import analyse
from tasks.approval import approval_description, settle_approval, wait_for_approval
from tasks.chart import decision_chart, draw_chart
from tasks.indicators import calculate_indicators
from tasks.market_data import fetch_market_data
from tasks.market_gate import skip_state
from tasks.orders import OrderStepResult, place_order
from tasks.resolve_symbol import resolve_symbol
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


def _load(strategy: str) -> StrategyDefinition | None:
    with session_scope(get_runtime().database_url) as session:
        return find_definition(session, strategy)


def _label_run(definition: StrategyDefinition, bar_time: str | None = None) -> None:
    """Name the flow run after strategy, symbol and bar time, and tag it for filtering in the UI."""
    run_id = flow_run.get_id()
    if not run_id:
        return
    name = f"{definition.name}-{definition.symbol}" + (f"-{bar_time}" if bar_time else "")
    tags = sorted({*flow_run.get_tags(), f"strategy:{definition.name}", f"symbol:{definition.symbol}"})
    with get_client(sync_client=True) as client:
        client.update_flow_run(UUID(run_id), name=name, tags=tags)


def _bar_label(definition: StrategyDefinition, bar_time: pd.Timestamp) -> str:
    daily = BAR_SECONDS[definition.bar_size] >= BAR_SECONDS[BarSize.DAY_1]
    label: str = bar_time.strftime("%Y%m%d" if daily else "%Y%m%dT%H%MZ")
    return label


def _run_dir(definition: StrategyDefinition) -> Path:
    run_id = flow_run.get_id() or "local"
    path = get_runtime().runs_dir() / definition.name / str(run_id)
    path.mkdir(parents=True, exist_ok=True)
    return path


@flow(name="strategy-run", flow_run_name="{strategy}", log_prints=False)
def strategy_run(strategy: str) -> StrategyRunResult:
    """Run one strategy once: resolve, bars, indicators, chart, analysis, signal, and the order for BUY/SELL."""
    definition = _load(strategy)  # None: the strategy was deleted after this run was scheduled
    if (skipped := skip_state(definition)) is not None:  # deleted/inactive, market closed, IB reset: "Skipped"
        return skipped  # type: ignore[return-value]
    assert definition is not None  # skip_state stops a deleted strategy
    run_dir = _run_dir(definition)
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
        _label_run(definition, _bar_label(definition, data.last_bar_time) if data is not None else None)
    stored: StoredSignal = decide(definition, data, outcome, failure)
    drawn = decision_chart(definition, indicators, stored, run_dir)  # BUY/SELL only; never stops the order
    order = decision = None
    if stored.signal.action in (SignalAction.BUY, SignalAction.SELL) and contract is not None and data is not None:
        order = place_order(definition, contract, data, stored)
        if order.awaiting_approval:  # the strategy's approval rule: this run pauses until a person decides
            description = approval_description(definition, stored, order, chart, outcome)
            decision = wait_for_approval(definition, order, description)
            order = settle_approval(definition, contract, data, order, decision)
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
