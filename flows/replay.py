"""The ``replay`` flow: ``trader replay`` as a Prefect flow, publishing metrics, trades and the equity chart.

Artifacts: ``replay-<strategy>-metrics`` (table), ``replay-<strategy>-trades`` (table), ``replay-<strategy>-equity``
(markdown with a small PNG of the equity curve as a data URI, its exits marked by kind: stop, target, signal,
time). The run is stored in ``replay_runs``. The tasks are in :mod:`tasks.replay`.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from tasks.replay import publish_task, run_task

__all__ = ["replay_flow"]


@flow(name="replay", flow_run_name="replay-{name}", log_prints=False)
def replay_flow(
    name: str | None = None,
    start: str = "",
    end: str = "",
    decide_every: int = 1,
    analyst: str = "offline",
    file: str | None = None,
    data: str | None = None,
    slippage_bps: str = "0",
    initial_cash: str = "100000",
) -> dict[str, Any]:
    """Replay a stored strategy (or ``file``) over ``data`` between ``start`` and ``end`` (YYYY-MM-DD)."""
    result, run_id = run_task(name, start, end, decide_every, analyst, file, data, slippage_bps, initial_cash)
    publish_task(result, run_id)
    out = result.to_json(equity_points=False)
    out["run_id"] = run_id
    return out
