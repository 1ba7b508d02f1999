"""Step 4: the chart (Plotly candlestick, volume, indicator panes) as PNG for the LLM and HTML for people."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from models.strategy import StrategyDefinition
from services.charts import ChartResult, render_chart
from services.indicators import IndicatorResult
from services.runtime import get_runtime
from tasks.artifacts import artifact_key, png_data_uri, publish_markdown
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
    return chart
