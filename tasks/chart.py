"""Step 4: the chart (Plotly candlestick, volume, indicator panes) as PNG for the LLM and HTML for people; after
step 6, for a BUY or SELL, the decision chart: the same chart with the signal, entry, stop and target drawn on it.

The decision chart is only for BUY/SELL: HOLD and ABSTAIN have no levels to draw, and their reason is in the signal
artifact. It never holds up or stops the order: a render failure (or the task's time limit) is logged and the run
goes on without it (:func:`decision_chart`)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from models.enums import SignalAction
from models.strategy import StrategyDefinition
from services.charts import ChartRenderError, ChartResult, DecisionMarks, png_size, render_chart
from services.errors import InputError
from services.indicators import IndicatorResult
from services.runtime import get_runtime
from tasks.artifacts import artifact_key, png_data_uri, publish_markdown
from tasks.run_log import step_log
from tasks.signal import StoredSignal
from tasks.timeouts import CHART_TIMEOUT_S


@task(name="4 chart", cache_policy=NO_CACHE, timeout_seconds=CHART_TIMEOUT_S)
def draw_chart(definition: StrategyDefinition, indicators: IndicatorResult, run_dir: Path) -> ChartResult:
    """Render and save the chart; the artifact shows the PNG inline (data URI) and the saved paths."""
    title = f"{definition.symbol} {definition.bar_size.value} ({definition.name})"
    # one plotly.min.js for all runs (runs root), not 4.7 MB per run directory
    chart = render_chart(
        indicators.frame, indicators, title=title, out_dir=run_dir, assets_dir=get_runtime().runs_dir()
    )
    markdown = "\n\n".join(
        [
            "## Step 4: chart",
            f"![{definition.symbol} chart]({png_data_uri(chart.png)})",
            f"PNG: `{chart.png_path}`  \nHTML (interactive): `{chart.html_path}`",
        ]
    )
    publish_markdown(artifact_key(definition.name, "chart"), markdown, f"{definition.symbol} chart")
    width, height = png_size(chart.png)
    step_log(
        "chart",
        f"{width}x{height} PNG {len(chart.png) / 1024:.0f} KB, HTML {len(chart.html) / 1024:.0f} KB, "
        f"panes {', '.join(chart.panes)}; rendered in {chart.render_ms:.0f} ms",
    )
    return chart


@task(name="6b decision chart", cache_policy=NO_CACHE, timeout_seconds=CHART_TIMEOUT_S)
def draw_decision_chart(
    definition: StrategyDefinition, indicators: IndicatorResult, stored: StoredSignal, run_dir: Path
) -> Path | None:
    """Render ``decision.png`` / ``.html`` for a BUY/SELL signal and publish ``<strategy>-decision-chart``; None
    (nothing drawn) for other signals or when the chart cannot be rendered (logged)."""
    signal = stored.signal
    if signal.action not in (SignalAction.BUY, SignalAction.SELL) or signal.entry is None:
        return None
    marks = DecisionMarks(
        action=signal.action.value,
        bar_time=pd.Timestamp(signal.bar_time),
        entry=signal.entry,
        stop=signal.stop,
        target=signal.target,
        confidence=signal.confidence,
        risk_reward=signal.risk_reward,
    )
    title = f"{definition.symbol} {definition.bar_size.value}: {signal.action.value} signal ({definition.name})"
    try:
        chart = render_chart(indicators.frame, indicators, title=title, out_dir=run_dir, stem="decision",
                             assets_dir=get_runtime().runs_dir(), marks=marks)  # fmt: skip
    except (ChartRenderError, InputError) as exc:
        step_log("decision chart", f"not drawn: {exc}")
        return None
    levels = f"entry {signal.entry}, stop {signal.stop}, target {signal.target}, R/R {signal.risk_reward}"
    markdown = "\n\n".join(
        [
            f"## Decision: {signal.action.value} (signal {stored.id})",
            f"![{definition.symbol} decision chart]({png_data_uri(chart.png)})",
            f"{levels}  \nPNG: `{chart.png_path}`  \nHTML (interactive): `{chart.html_path}`",
        ]
    )
    publish_markdown(artifact_key(definition.name, "decision-chart"), markdown, f"{definition.symbol} decision chart")
    width, height = png_size(chart.png)
    step_log(
        "decision chart", f"{signal.action.value} with {levels}; {width}x{height} PNG {len(chart.png) / 1024:.0f} KB"
    )
    return chart.png_path


def decision_chart(
    definition: StrategyDefinition, indicators: IndicatorResult | None, stored: StoredSignal, run_dir: Path
) -> Path | None:
    """Run :func:`draw_decision_chart` for a BUY/SELL; whatever happens to it (even its time limit), the run goes on."""
    if indicators is None or stored.signal.action not in (SignalAction.BUY, SignalAction.SELL):
        return None
    state = draw_decision_chart(definition, indicators, stored, run_dir, return_state=True)
    result = state.result(raise_on_failure=False)
    return result if isinstance(result, Path) else None
