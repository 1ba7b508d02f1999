"""Step 3: TA-Lib indicators on the validated bars (flagged rows are excluded from the input), and on each higher
timeframe's bars (the strategy's indicators, or the timeframe's own)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from models.strategy import StrategyDefinition
from services.indicators import IndicatorResult, TimeframeIndicators, compute_indicators
from tasks.artifacts import artifact_key, publish_table
from tasks.market_data import MarketData
from tasks.run_log import figures, step_log
from tasks.timeouts import INDICATORS_TIMEOUT_S


def _rows(result: IndicatorResult, label: str = "") -> list[dict[str, Any]]:
    by_name = {column.name: column for column in result.columns}
    return [
        {
            "column": f"{label}{name}",
            "function": by_name[name].function,
            "output": by_name[name].output,
            "latest": None if value is None else round(value, 6),
            "bar (UTC)": result.latest_timestamp.isoformat() if result.latest_timestamp is not None else None,
        }
        for name, value in result.latest.items()
    ]


@task(name="3 indicators", cache_policy=NO_CACHE, timeout_seconds=INDICATORS_TIMEOUT_S)
def calculate_indicators(definition: StrategyDefinition, data: MarketData) -> IndicatorResult:
    """Compute the strategy's indicators; publishes the latest values as a table artifact."""
    result = compute_indicators(data.frame, definition.indicators)
    rows = _rows(result)
    if data.timeframes:
        specs = {tf.bar_size: definition.timeframe_indicators(tf) for tf in definition.timeframes}
        higher = tuple(
            TimeframeIndicators(tf.bar_size, compute_indicators(tf.frame, specs[tf.bar_size])) for tf in data.timeframes
        )
        result = replace(result, timeframes=higher)
        for tf in higher:
            rows += _rows(tf.result, f"{tf.bar_size.value}: ")
    publish_table(artifact_key(definition.name, "indicators"), rows, f"{definition.symbol} latest indicator values")
    bar = result.latest_timestamp.isoformat() if result.latest_timestamp is not None else "no usable bar"
    step_log("indicators", f"latest at {bar}: {figures(result.latest.items())}")
    return result
