"""Time limits of the strategy steps, defined once; a step past its limit ends the run instead of holding a slot.

Each ``@task`` in ``tasks/`` takes ``timeout_seconds=`` from here. Each limit sits above the step's own bounded
waits (client timeouts times attempts, rate-limit waits) so it only fires when the step is truly hung.

How Prefect stops a sync task: in the flow run's main thread (a process worker, ``serve``, a direct call) an
alarm signal interrupts even a blocking wait; in any other thread an exception is injected that takes effect
only once the blocked call returns (Prefect logs a warning then).

:func:`run_step` turns Prefect's ``TaskRunTimeoutError`` into :class:`~services.errors.StepTimeoutError` (a
``SkipError``), so the strategy flow ends as ABSTAIN with the reason "step X timed out after N s".
"""

from __future__ import annotations

from typing import Final, ParamSpec, TypeVar

from prefect import Task
from prefect.task_engine import TaskRunTimeoutError

from services.errors import StepTimeoutError

__all__ = [
    "ANALYSIS_TIMEOUT_S",
    "CHART_TIMEOUT_S",
    "INDICATORS_TIMEOUT_S",
    "MARKET_DATA_TIMEOUT_S",
    "ORDER_TIMEOUT_S",
    "RESOLVE_TIMEOUT_S",
    "SIGNAL_TIMEOUT_S",
    "run_step",
]

P = ParamSpec("P")
R = TypeVar("R")

RESOLVE_TIMEOUT_S: Final = 120.0  # IB contract details: connect 10 s + 30 s request, a few attempts
MARKET_DATA_TIMEOUT_S: Final = 420.0  # the ib-historical rate limit may wait up to 300 s, then the request
INDICATORS_TIMEOUT_S: Final = 60.0  # TA-Lib over at most a few thousand bars: milliseconds
CHART_TIMEOUT_S: Final = 180.0  # Kaleido/Chromium start (up to 60 s) plus the render
ANALYSIS_TIMEOUT_S: Final = 600.0  # llm-calls rate limit (up to 300 s) + 3 attempts of 60 s + backoff
SIGNAL_TIMEOUT_S: Final = 60.0  # one DB transaction
ORDER_TIMEOUT_S: Final = 300.0  # risk gate + submit (120 s broker call limit) + dry-run fills


def run_step(step: Task[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """Call the task ``step``; a Prefect task timeout becomes :class:`StepTimeoutError` naming step and limit."""
    try:
        return step(*args, **kwargs)
    except TaskRunTimeoutError:
        raise StepTimeoutError(f"step {step.name!r} timed out after {step.timeout_seconds or 0:g} s") from None
