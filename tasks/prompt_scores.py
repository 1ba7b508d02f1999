"""The prompt-scores flow's tasks: score the stored signals of a day (``services.prompt_performance``; stored in
``prompt_scores``) and publish the table artifact ``prompt-scores`` (one row per template version)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from services.db import session_scope
from services.prompt_performance import BrokerForwardBars, PromptScore, score_prompts
from services.runtime import get_runtime
from tasks.artifacts import publish_table
from tasks.retry import IO_RETRIES, IO_RETRY_DELAYS, retry_if_transient

ARTIFACT_KEY = "prompt-scores"


def _number(value: Any, digits: int = 4) -> float | None:
    return None if value is None else round(float(value), digits)


def score_row(score: PromptScore) -> dict[str, Any]:
    """One artifact row: counts, hit rates and mean returns per horizon, pending, LLM cost per signal."""
    m = score.metrics
    row: dict[str, Any] = {
        "template": score.template_name,
        "version": score.template_version,
        "day": score.day.isoformat(),
        "signals": m.get("signals", 0),
        "BUY/SELL": m.get("directional", 0),
        "abstain rate": _number(m.get("abstain_rate")),
    }
    for horizon, h in m.get("horizons", {}).items():
        row[f"hit rate +{horizon}"] = _number(h["hit_rate"])
        row[f"mean return +{horizon}"] = _number(h["mean_return"], 6)
        row[f"pending +{horizon}"] = h["pending"]
    row["llm cost usd"] = m.get("llm_cost_usd")
    row["cost per signal"] = m.get("cost_per_signal")
    return row


@task(
    name="score prompts",
    cache_policy=NO_CACHE,
    retries=IO_RETRIES,
    retry_delay_seconds=IO_RETRY_DELAYS,
    retry_condition_fn=retry_if_transient,
)
def score_day(day: dt.date) -> list[PromptScore]:
    """Score every template version for ``day`` and store the scores (forward closes from the broker)."""
    runtime = get_runtime()
    forward = BrokerForwardBars(runtime.broker(), runtime.clock)
    with session_scope(runtime.database_url) as session:
        return score_prompts(session, day, forward)


@task(name="publish prompt scores", cache_policy=NO_CACHE)
def publish_scores(scores: list[PromptScore], day: dt.date) -> list[dict[str, Any]]:
    rows = [score_row(s) for s in scores]
    publish_table(ARTIFACT_KEY, rows, f"prompt scores for {day.isoformat()}: {len(rows)} template versions")
    return rows
