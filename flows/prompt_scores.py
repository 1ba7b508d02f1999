"""The prompt-scores flow: score every prompt template version for a day and publish one table.

Reads top to bottom: pick the day (the market's date in New York unless given), score the stored signals with
forward closes from the broker's history (``services.prompt_performance``; the scores are stored in
``prompt_scores``), then publish the table artifact ``prompt-scores`` (one row per template version). The tasks are
in :mod:`tasks.prompt_scores`.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from services.prompt_performance import market_day, parse_day
from services.runtime import get_runtime
from tasks.prompt_scores import ARTIFACT_KEY, publish_scores, score_day

__all__ = ["ARTIFACT_KEY", "prompt_scores_flow"]


@flow(name="prompt-scores")
def prompt_scores_flow(day: str | None = None) -> list[dict[str, Any]]:
    """Score every prompt template version (``day`` YYYY-MM-DD; default: today in New York) and publish the table."""
    runtime = get_runtime()
    when = parse_day(day, today=market_day(runtime.clock()))
    scores = score_day(when)
    return publish_scores(scores, when)
