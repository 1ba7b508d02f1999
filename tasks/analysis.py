"""Step 5: render the versioned prompt and analyse it with the chart (LLM, or the offline analyst).

The artifact shows the analyst, whether the chart image was sent, the prompt, the raw reply and cost tables: this
call, the strategy's calls today (UTC) by model ($, tokens, mean latency, cache hits), and today's spend of every
strategy against the daily budgets.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from models.strategy import StrategyDefinition
from services.db import session_scope
from services.indicators import IndicatorResult
from services.llm.analyst import ChatBackend, analyze, build_request, make_backend
from services.llm.costs import CostRow, Grouping, summarize
from services.llm.outcome import AnalysisOutcome
from services.llm.prompts import RenderedPrompt
from services.llm.reply import LlmReply
from services.llm.store import LlmCallStore, budget_day
from services.repositories import prompt_templates
from services.runtime import get_runtime
from services.settings import LLMSettings
from tasks.artifacts import artifact_key, fenced, key_values, markdown_table, publish_markdown
from tasks.market_gate import LLM_CALLS, limited
from tasks.run_log import step_log
from tasks.timeouts import ANALYSIS_TIMEOUT_S


class RateLimitedBackend:
    """A chat backend whose real requests take the global ``llm-calls`` rate limit (strict).

    Only ``complete`` (a request to the model) is limited: the offline analyst, cache hits and budget refusals
    never reach it, so they take no slot.
    """

    def __init__(self, inner: ChatBackend) -> None:
        self.inner = inner
        self.model = inner.model

    def complete(self, prompt: RenderedPrompt, chart_png: bytes | None) -> LlmReply:
        with limited(LLM_CALLS):
            return self.inner.complete(prompt, chart_png)

    def request_json(self, prompt: RenderedPrompt, chart_png: bytes | None) -> str:
        return self.inner.request_json(prompt, chart_png)


def _backend(settings: LLMSettings) -> ChatBackend | None:
    """The rate-limited LLM client, or ``None`` for provider offline (``analyze`` then runs the offline analyst)."""
    inner = make_backend(settings)
    return None if inner is None else RateLimitedBackend(inner)


def _cost_rows(rows: list[CostRow], by: str) -> str:
    return markdown_table(
        [
            {
                by: r.key,
                "calls": r.calls,
                "requests": r.requests,
                "cache hits": r.cache_hits,
                "tokens in / out": f"{r.prompt_tokens} / {r.completion_tokens}",
                "USD": r.cost_usd,
                "mean latency (ms)": r.mean_latency_ms if r.mean_latency_ms is not None else "-",
            }
            for r in rows
        ]
    )


def cost_tables(
    store: LlmCallStore,
    now: dt.datetime,
    outcome: AnalysisOutcome,
    strategy: str,
    budgets: tuple[Decimal, Decimal | None],
) -> str:
    """Markdown: this call; the strategy's calls today (UTC) by model; today's spend of every strategy against the
    daily budgets ``(global, the strategy's or None)``. Only this strategy's rows are read (a SQL sum for the rest)."""
    day = budget_day(now)
    mine = store.usage_since(day, strategy_name=strategy)
    this = [c for c in mine if outcome.call_id is not None and c.id == outcome.call_id]
    date = day.date().isoformat()
    groups: list[tuple[str, Grouping, list[CostRow]]] = [
        ("this call", "call", summarize(this, "call")),
        (f"{strategy} on {date} (UTC) by model", "model", summarize(mine, "model")),
    ]
    parts: list[str] = []
    for title, by, rows in groups:
        parts += [f"**{title}**", _cost_rows(rows, by) if rows else "(no calls)"]
    overall, own = budgets
    line = f"**all strategies on {date} (UTC)**: {store.spent_since(day)} USD of the {overall} USD daily budget"
    if own is not None:
        line += f"; {strategy}: {sum((c.cost_usd for c in mine), Decimal(0))} USD of its {own} USD"
    if outcome.local:
        line += "; this endpoint is local: free, outside the budgets"
    return "\n\n".join([*parts, line])


@task(name="5 llm analysis", cache_policy=NO_CACHE, timeout_seconds=ANALYSIS_TIMEOUT_S)
def analyse(
    definition: StrategyDefinition, indicators: IndicatorResult, chart_png: bytes | None, run_dir: Path
) -> AnalysisOutcome:
    """Return the analysis outcome (never raises for model failures: they are in ``outcome.failure``).

    Retries for HTTP errors happen inside the client (bounded); the response cache makes reruns free.
    """
    runtime = get_runtime()
    with session_scope(runtime.database_url) as session:
        template = prompt_templates.require(session, definition.prompt.template, definition.prompt.version)
        body, name = template.body, f"{template.name} v{template.version}"
    request = build_request(definition, indicators, body, template_name=name)
    store = runtime.llm_store()
    now = runtime.clock()
    llm = runtime.settings.llm
    outcome = analyze(request, settings=llm, store=store, chart_png=chart_png, now=now, backend=_backend(llm))
    run_dir.mkdir(parents=True, exist_ok=True)
    prompt_path = run_dir / "prompt.md"
    prompt_path.write_text(f"# system\n\n{outcome.prompt.system}\n\n# user\n\n{outcome.prompt.text}\n")
    if outcome.raw_text is not None:
        (run_dir / "response.json").write_text(outcome.raw_text)
    if outcome.analyst == "offline":
        label = "OFFLINE analyst (deterministic rules, no LLM)"
    else:
        where = " (local endpoint: free, outside the budget)" if outcome.local else ""
        label = f"LLM {outcome.model} via {llm.resolved_provider.value}{where}"
    summary = key_values(
        [
            ("analyst", label),
            ("chart image", outcome.image),
            ("prompt template", name),
            ("prompt sha256", outcome.prompt.sha256),
            ("cached response", outcome.cached),
            ("attempts", outcome.attempts),
            ("tokens in / out", f"{outcome.prompt_tokens} / {outcome.completion_tokens}"),
            ("cost (USD)", f"{outcome.cost_usd}{' (estimated)' if outcome.cost_estimated else ''}"),
            ("latency (ms)", outcome.latency_ms),
            ("result", "ok" if outcome.failure is None else f"{outcome.failure.kind}: {outcome.failure.reason}"),
            ("decision policy", _policy(definition, outcome)),
            ("prompt file", str(prompt_path)),
        ]
    )
    markdown = "\n\n".join(
        [
            "## Step 5: analysis",
            summary,
            "### Cost",
            cost_tables(store, now, outcome, definition.name, (llm.daily_budget_usd, definition.llm.daily_budget_usd)),
            "### Rendered prompt",
            fenced(outcome.prompt.text),
            "### Raw response",
            fenced(outcome.raw_text or "(no response)", "json"),
        ]
    )
    publish_markdown(artifact_key(definition.name, "analysis"), markdown, f"{definition.symbol} analysis ({label})")
    step_log("analysis", _story(outcome, definition))
    return outcome


def _policy(definition: StrategyDefinition, outcome: AnalysisOutcome) -> str:
    """The strategy's decision policy, with each component's vote when it combined rules and LLM."""
    policy = definition.decision.policy.value
    return f"{policy}: {outcome.votes_text}" if outcome.votes_text else policy


def _story(outcome: AnalysisOutcome, definition: StrategyDefinition) -> str:
    who = f"offline rules ({outcome.model})" if outcome.analyst == "offline" else f"LLM {outcome.model}"
    if outcome.analysis is not None:
        said = f"{outcome.analysis.action} confidence {outcome.analysis.confidence:.2f}"
    else:
        said = f"failed ({outcome.failure})"
    tokens = (
        "n/a"
        if outcome.prompt_tokens is None and outcome.completion_tokens is None
        else f"{outcome.prompt_tokens} in / {outcome.completion_tokens} out"
    )
    return (
        f"{who} -> {said}; policy {_policy(definition, outcome)}; cost {outcome.cost_usd} USD"
        f"{' (estimated)' if outcome.cost_estimated else ''}, tokens {tokens}, latency {outcome.latency_ms} ms, "
        f"cached {'yes' if outcome.cached else 'no'}, attempts {outcome.attempts}, image {outcome.image}"
        + (", local endpoint (free)" if outcome.local else "")
    )
