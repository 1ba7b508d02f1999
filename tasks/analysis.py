"""Step 5: render the versioned prompt and analyse it with the chart (LLM, or the offline analyst)."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from models.strategy import StrategyDefinition
from services.db import session_scope
from services.indicators import IndicatorResult
from services.llm.analyst import ChatBackend, analyze, build_request
from services.llm.outcome import AnalysisOutcome
from services.llm.prompts import RenderedPrompt
from services.llm.reply import LlmReply
from services.repositories import prompt_templates
from services.runtime import get_runtime
from services.settings import LLMSettings
from tasks.artifacts import artifact_key, fenced, key_values, publish_markdown
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
    """The rate-limited LLM client, or ``None`` without an API key (``analyze`` then runs the offline analyst)."""
    if settings.api_key is None or not settings.api_key.get_secret_value().strip():
        return None
    from services.llm.analyst import _make_backend

    return RateLimitedBackend(_make_backend(settings))


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
    outcome = analyze(
        request,
        settings=runtime.settings.llm,
        store=runtime.llm_store(),
        chart_png=chart_png,
        now=runtime.clock(),
        backend=_backend(runtime.settings.llm),
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    prompt_path = run_dir / "prompt.md"
    prompt_path.write_text(f"# system\n\n{outcome.prompt.system}\n\n# user\n\n{outcome.prompt.text}\n")
    if outcome.raw_text is not None:
        (run_dir / "response.json").write_text(outcome.raw_text)
    label = "OFFLINE analyst (deterministic rules, no LLM)" if outcome.analyst == "offline" else f"LLM {outcome.model}"
    summary = key_values(
        [
            ("analyst", label),
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
    return f"{policy}: {', '.join(map(str, outcome.votes))}" if outcome.votes else policy


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
        f"cached {'yes' if outcome.cached else 'no'}, attempts {outcome.attempts}"
    )
