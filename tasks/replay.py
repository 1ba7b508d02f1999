"""The replay flow's tasks: run the replay (stored in ``replay_runs``) and publish metrics, trades and the equity chart.

Artifacts: ``replay-<strategy>-metrics`` (table), ``replay-<strategy>-trades`` (table), ``replay-<strategy>-equity``
(markdown with a small PNG of the equity curve as a data URI, its exits marked by kind: stop, target, signal,
time). The run is stored in ``replay_runs``.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from models.enums import ExitKind
from services.charts import ChartRenderError, render_png
from services.db import init_database, session_scope
from services.errors import InputError
from services.replay.engine import ReplayResult
from services.replay.runs import resolve_inputs, run_replay, save_run
from services.runtime import get_runtime
from tasks.artifacts import artifact_key, png_data_uri, publish_markdown, publish_table

__all__ = ["CHART_HEIGHT", "CHART_WIDTH", "equity_figure", "publish_task", "run_task"]

CHART_WIDTH: Final = 640
CHART_HEIGHT: Final = 280
MAX_POINTS: Final = 800


# How each exit kind is marked on the equity curve (Plotly marker symbol and colour).
EXIT_MARKERS: Final = {
    ExitKind.STOP: ("triangle-down", "#d62728"),
    ExitKind.TARGET: ("triangle-up", "#2ca02c"),
    ExitKind.SIGNAL: ("circle", "#ff7f0e"),
    ExitKind.TIME: ("square", "#7f7f7f"),
}


def _exit_traces(result: ReplayResult) -> list[dict[str, Any]]:
    """One marker trace per exit kind that occurred, at the exit bar's equity (every exit, never thinned)."""
    equity = result.equity
    traces = []
    for kind, (symbol, colour) in EXIT_MARKERS.items():
        times = [t.exit_time for t in result.trades if t.exit_kind is kind and t.exit_time is not None]
        if not times:
            continue
        at = equity.reindex(pd.DatetimeIndex(times), method="ffill")
        traces.append(
            {
                "type": "scatter",
                "mode": "markers",
                "name": f"{kind.value} exit ({len(times)})",
                "x": [t.strftime("%Y-%m-%d") for t in at.index],
                "y": [round(float(v), 2) for v in at.to_numpy()],
                "marker": {"symbol": symbol, "color": colour, "size": 7},
            }
        )
    return traces


def equity_figure(result: ReplayResult) -> dict[str, Any]:
    """A Plotly figure dict of the equity curve (at most :data:`MAX_POINTS` points, the last one kept), with a
    marker per closed trade at its exit, by exit kind (stop, target, signal, time; :data:`EXIT_MARKERS`)."""
    equity = result.equity
    step = max(1, len(equity) // MAX_POINTS)
    picked = equity.iloc[::step]
    if len(equity) and picked.index[-1] != equity.index[-1]:
        picked = equity.iloc[[*range(0, len(equity), step), len(equity) - 1]]
    exits = _exit_traces(result)
    return {
        "data": [
            {
                "type": "scatter",
                "mode": "lines",
                "name": "equity",
                "x": [t.strftime("%Y-%m-%d") for t in picked.index],
                "y": [round(float(v), 2) for v in picked.to_numpy()],
                "line": {"color": "#1f77b4", "width": 1.5},
            },
            *exits,
        ],
        "layout": {
            "title": {"text": f"{result.strategy} equity", "font": {"size": 13}},
            "margin": {"l": 60, "r": 15, "t": 35, "b": 35},
            "xaxis": {"type": "date"},
            "yaxis": {"tickformat": ",.0f"},
            "showlegend": bool(exits),
            "legend": {"orientation": "h", "y": -0.15},
        },
    }


def _date(value: str, field: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise InputError("replay", f"{field} {value!r} is not a date (YYYY-MM-DD)") from None


@task(name="replay", cache_policy=NO_CACHE)
def run_task(
    name: str | None,
    start: str,
    end: str,
    decide_every: int,
    analyst: str,
    file: str | None,
    data: str | None,
    slippage_bps: str,
    initial_cash: str,
) -> tuple[ReplayResult, int]:
    runtime = get_runtime()
    settings = runtime.settings
    if analyst not in ("offline", "llm"):
        raise InputError("replay", f"analyst must be offline or llm, got {analyst!r}")
    init_database(settings)
    with session_scope(runtime.database_url) as session:
        inputs = resolve_inputs(
            name=name,
            file=Path(file) if file else None,
            data=Path(data) if data else None,
            session=session,
        )
    result = run_replay(
        inputs,
        settings,
        start=_date(start, "start"),
        end=_date(end, "end"),
        decide_every=decide_every,
        analyst="llm" if analyst == "llm" else "offline",
        slippage_bps=Decimal(slippage_bps),
        initial_cash=Decimal(initial_cash),
        store=runtime.llm_store() if analyst == "llm" else None,
    )
    with session_scope(runtime.database_url) as session:
        run_id = save_run(session, result)
    return result, run_id


@task(name="publish replay", cache_policy=NO_CACHE)
def publish_task(result: ReplayResult, run_id: int) -> None:
    m = result.metrics.to_json()
    rows: list[dict[str, Any]] = [{"metric": "run id", "value": run_id}]
    rows += [{"metric": k, "value": v} for k, v in m.items()]
    rows += [
        {"metric": "decisions", "value": len(result.decisions)},
        *({"metric": f"{kind} exits", "value": n} for kind, n in result.exit_counts().items()),
        {"metric": "llm requests / cached", "value": f"{result.llm_requests} / {result.llm_cached}"},
        {"metric": "possibly contaminated", "value": result.contaminated},
    ]
    publish_table(
        artifact_key("replay", result.strategy, "metrics"),
        rows,
        f"replay #{run_id} of {result.strategy} {result.params['start']} .. {result.params['end']}",
    )
    publish_table(
        artifact_key("replay", result.strategy, "trades"),
        result.trades_json(),
        f"replay #{run_id}: {len(result.trades)} closed trades" + (" + 1 open" if result.open_trade else ""),
    )
    try:
        png = render_png(equity_figure(result), width=CHART_WIDTH, height=CHART_HEIGHT)
        image = f"![equity]({png_data_uri(png)})"
    except ChartRenderError as exc:
        image = f"_equity chart not rendered: {exc}_"
    total = m["total_return"]
    summary = f"total return {total * 100:.2f} %" if total is not None else "total return n/a"
    publish_markdown(
        artifact_key("replay", result.strategy, "equity"),
        f"# {result.strategy}: equity ({summary})\n\n{image}\n",
        f"replay #{run_id} equity curve",
    )
