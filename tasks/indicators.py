"""Step 3: TA-Lib indicators on the validated bars (flagged rows are excluded from the input)."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from models.strategy import StrategyDefinition
from services.indicators import IndicatorResult, compute_indicators
from tasks.artifacts import artifact_key, publish_table
from tasks.market_data import MarketData
from tasks.run_log import figures, step_log
from tasks.timeouts import INDICATORS_TIMEOUT_S


@task(name="3 indicators", cache_policy=NO_CACHE, timeout_seconds=INDICATORS_TIMEOUT_S)
def calculate_indicators(definition: StrategyDefinition, data: MarketData) -> IndicatorResult:
    """Compute the strategy's indicators; publishes the latest values as a table artifact."""
    result = compute_indicators(data.frame, definition.indicators)
    by_name = {column.name: column for column in result.columns}
    rows = [
        {
            "column": name,
            "function": by_name[name].function,
            "output": by_name[name].output,
            "latest": None if value is None else round(value, 6),
            "bar (UTC)": result.latest_timestamp.isoformat() if result.latest_timestamp is not None else None,
        }
        for name, value in result.latest.items()
    ]
    publish_table(artifact_key(definition.name, "indicators"), rows, f"{definition.symbol} latest indicator values")
    bar = result.latest_timestamp.isoformat() if result.latest_timestamp is not None else "no usable bar"
    step_log("indicators", f"latest at {bar}: {figures(result.latest.items())}")
    return result
