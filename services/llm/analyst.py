"""Step 5 as a service: ``analyze(request, ...)`` -> :class:`~services.llm.outcome.AnalysisOutcome`.

* **LLM or offline.** ``settings.resolved_provider`` is ``offline`` (nothing configured: no key, no base URL, or
  ``TRADER_LLM__PROVIDER=offline``) -> the deterministic offline analyst, labelled ``AnalystKind.OFFLINE`` in the
  outcome and in the call record. Otherwise OpenAI, Azure or any OpenAI-compatible endpoint (:func:`make_backend`).
* **Rules and LLM combined.** The strategy's ``decision.policy`` (``services/decision.py``): ``rules_only`` asks
  no LLM (the rules answer, labelled offline); ``both_agree`` / ``weighted`` combine the LLM's answer with the
  rules' vote; ``llm_only`` (default) leaves it alone.
* **Vision.** The chart goes with the prompt only when the model reads images (``settings.vision``) and the
  strategy asks for it (``llm.vision``); otherwise the same prompt goes without it and ``outcome.image`` says why.
* **Cache.** ``cache_key = sha256(endpoint, model, system prompt + rendered prompt, chart PNG bytes)``. A stored
  successful response under that key is reused: no request, cost 0, ``cached=True`` (recorded as a cached row).
* **Budget.** The daily budgets are per UTC day: before a call, ``store.spent_since(00:00 UTC of now)`` is
  compared with ``settings.daily_budget_usd`` and, when the strategy sets ``llm.daily_budget_usd``, the strategy's
  own spend with it; at or over either no request is made and the outcome fails with ``FailureKind.BUDGET``
  ("budget exhausted"), so the signal ABSTAINs. (Concurrent runs may each pass the check and overshoot by at most
  one call each.) A local endpoint (``settings.is_local``) costs 0 and is not checked against either budget.
* **Every call is recorded** through the :class:`~services.llm.store.LlmCallStore`: model, prompt hash, the
  request (image replaced by its size and hash, never the key), response text, tokens, cost, latency, cached
  flag and error.
* **Failures never raise**: transient errors after retries, timeouts, 4xx, refusals, malformed or off-schema
  answers all become ``outcome.failure`` with a kind and reason (freqtrade's safe-wrapper idea).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Final, Protocol

from models.enums import AnalystKind, DecisionPolicy, LlmProvider
from models.strategy import Decision, IndicatorSpec, StrategyDefinition
from services.decision import combine, rules_decision
from services.errors import LlmTransientError
from services.events import EventKind, Resource, TraderEvent, json_value, publish, strategy_resource
from services.indicators import IndicatorResult
from services.llm.context import MarketSnapshot, build_prompt_context, snapshot_from
from services.llm.offline import OFFLINE_MODEL
from services.llm.outcome import AnalysisFailure, AnalysisOutcome
from services.llm.pricing import call_cost
from services.llm.prompts import RenderedPrompt, render_prompt, with_timeframe_sections
from services.llm.reply import CONTENT, LlmReply, LlmRequestError, LlmTimeoutError, LlmUnusableReplyError
from services.llm.schema import Analysis, AnalysisParseError, FailureKind, parse_analysis
from services.llm.store import BudgetUse, LlmCallRecord, LlmCallStore, budgets_today
from services.settings import LLMSettings

__all__ = ["AnalysisRequest", "ChatBackend", "analyze", "build_request", "cache_key", "image_for", "make_backend"]

# When the server reports no usage, charge a conservative estimate (~4 characters per token, plus a
# high-detail image) so the budget still counts the call; the outcome flags the cost as estimated.
_CHARS_PER_TOKEN: Final = 4
_IMAGE_TOKENS_ESTIMATE: Final = 1_500


@dataclass(frozen=True)
class AnalysisRequest:
    """Everything step 5 needs: the rendered prompt, the market snapshot, the strategy's indicator specs, whether
    it wants the chart sent, its own daily budget (USD, ``None``: only the global one) and its decision policy
    (rules and LLM combined, ``services/decision.py``)."""

    strategy_name: str
    prompt: RenderedPrompt
    snapshot: MarketSnapshot
    specs: tuple[IndicatorSpec, ...] = ()
    decision: Decision = field(default_factory=Decision)
    vision: bool = True
    daily_budget_usd: Decimal | None = None


class ChatBackend(Protocol):
    """What :func:`analyze` needs from an LLM client (``services.llm.client.OpenAIAnalyst`` implements it)."""

    model: str

    def complete(self, prompt: RenderedPrompt, chart_png: bytes | None) -> LlmReply: ...

    def request_json(self, prompt: RenderedPrompt, chart_png: bytes | None) -> str: ...


def build_request(
    definition: StrategyDefinition, indicators: IndicatorResult, template_body: str, *, template_name: str
) -> AnalysisRequest:
    """Render the strategy's prompt over the indicators; raise ``InputError`` for template or data problems."""
    context = build_prompt_context(definition, indicators)
    prompt = render_prompt(with_timeframe_sections(template_body, context), context, name=template_name)
    snapshot = snapshot_from(indicators, symbol=definition.symbol, bar_size=definition.bar_size)
    return AnalysisRequest(
        definition.name,
        prompt,
        snapshot,
        tuple(definition.indicators),
        vision=definition.llm.vision,
        daily_budget_usd=definition.llm.daily_budget_usd,
        decision=definition.decision,
    )


def cache_key(model: str, prompt: RenderedPrompt, chart_png: bytes | None, *, endpoint: str) -> str:
    """Return sha256 over the endpoint (``LLMSettings.endpoint``), the model name, the full prompt (system + text)
    and the image bytes."""
    digest = hashlib.sha256()
    for part in (endpoint.encode(), model.encode(), prompt.system.encode(), prompt.text.encode(), chart_png or b""):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def _offline(request: AnalysisRequest, store: LlmCallStore, now: dt.datetime) -> AnalysisOutcome:
    started = time.perf_counter()
    analysis = rules_decision(request.snapshot, request.specs, request.decision)
    latency_ms = round((time.perf_counter() - started) * 1000)
    text = analysis.model_dump_json()
    call_id = store.record(
        LlmCallRecord(
            model=OFFLINE_MODEL,
            analyst=AnalystKind.OFFLINE,
            prompt_sha256=request.prompt.sha256,
            request_json=json.dumps({"analyst": "offline", "latest": request.snapshot.latest}, sort_keys=True),
            created_at=now,
            response_text=text,
            latency_ms=latency_ms,
            strategy_name=request.strategy_name,
        )
    )
    return AnalysisOutcome(
        analyst=AnalystKind.OFFLINE,
        model=OFFLINE_MODEL,
        prompt=request.prompt,
        reference_price=request.snapshot.last_close,
        analysis=analysis,
        raw_text=text,
        latency_ms=latency_ms,
        call_id=call_id,
        image="not used (offline analyst)",
    )


def make_backend(settings: LLMSettings) -> ChatBackend | None:
    """The LLM client ``settings`` describe, or ``None`` for the offline analyst."""
    if settings.resolved_provider is LlmProvider.OFFLINE:
        return None
    from services.llm.client import OpenAIAnalyst

    return OpenAIAnalyst.from_settings(settings)


def image_for(request: AnalysisRequest, settings: LLMSettings, chart_png: bytes | None) -> tuple[bytes | None, str]:
    """The image to send (or ``None``) and what the artifact says about it."""
    if chart_png is None:
        return None, "none (no chart was drawn)"
    if not settings.vision:
        return None, "not sent: the model is text-only (TRADER_LLM__VISION=false); same prompt without the image"
    if not request.vision:
        return None, "not sent: the strategy asks for none (llm.vision: false); same prompt without the image"
    return chart_png, f"sent ({len(chart_png)} bytes PNG)"


def _over_budget(request: AnalysisRequest, settings: LLMSettings, store: LlmCallStore, now: dt.datetime) -> str | None:
    """Why no request may be made today, or ``None``."""
    for use in _budgets(request, settings, store, now):
        if use.spent < use.limit:
            continue
        if use.scope == "global":
            return f"budget exhausted: spent {use.spent} of {use.limit} USD today (UTC); no request made"
        return (
            f"strategy budget exhausted: {request.strategy_name} spent {use.spent} of its {use.limit} "
            "USD today (UTC, llm.daily_budget_usd); no request made"
        )
    return None


def _budgets(request: AnalysisRequest, settings: LLMSettings, store: LlmCallStore, now: dt.datetime) -> list[BudgetUse]:
    return budgets_today(store, now, daily_budget=settings.daily_budget_usd, strategy_name=request.strategy_name,
                         strategy_budget=request.daily_budget_usd)  # fmt: skip


def analyze(
    request: AnalysisRequest,
    *,
    settings: LLMSettings,
    store: LlmCallStore,
    chart_png: bytes | None,
    now: dt.datetime,
    backend: ChatBackend | None = None,
) -> AnalysisOutcome:
    """Analyse with the configured LLM (cache and budget first) or, with provider offline, the offline analyst.

    ``now`` (timezone-aware) stamps the records and picks the budget day. ``backend`` replaces the client built
    from ``settings`` (tests pass an ``OpenAIAnalyst`` with a short backoff).
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if request.decision.policy is DecisionPolicy.RULES_ONLY:  # the rules decide: no LLM call at all
        return _offline(request, store, now)
    llm = backend if backend is not None else make_backend(settings)
    if llm is None:
        return _offline(request, store, now)
    model = llm.model
    prompt = request.prompt
    image, image_note = image_for(request, settings, chart_png)
    key = cache_key(model, prompt, image, endpoint=settings.endpoint)
    request_json = llm.request_json(prompt, image)

    base_record = LlmCallRecord(
        model=model,
        analyst=AnalystKind.LLM,
        prompt_sha256=prompt.sha256,
        request_json=request_json,
        created_at=now,
        cache_key=key,
        strategy_name=request.strategy_name,
    )

    def finish(
        record: LlmCallRecord,
        *,
        analysis: Analysis | None = None,
        failure: AnalysisFailure | None = None,
        cost_estimated: bool = False,
        attempts: int = 0,
    ) -> AnalysisOutcome:
        call_id = store.record(record)
        outcome = AnalysisOutcome(
            analyst=AnalystKind.LLM,
            model=model,
            prompt=prompt,
            reference_price=request.snapshot.last_close,
            analysis=analysis,
            failure=failure,
            raw_text=record.response_text,
            prompt_tokens=record.prompt_tokens,
            completion_tokens=record.completion_tokens,
            cost_usd=record.cost_usd,
            cost_estimated=cost_estimated,
            latency_ms=record.latency_ms,
            cached=record.cached,
            attempts=attempts,
            cache_key=key,
            call_id=call_id,
            image=image_note,
            local=settings.is_local,
        )
        return combine(outcome, request.snapshot, request.specs, request.decision)  # the strategy's policy

    hit = store.find_cached(key)
    if hit is not None and hit.response_text is not None:
        try:
            analysis = parse_analysis(hit.response_text)
        except AnalysisParseError:
            pass  # an old record that no longer parses (schema changed): ask again
        else:
            cached = replace(
                base_record,
                response_text=hit.response_text,
                cached=True,
                latency_ms=0,
                prompt_tokens=hit.prompt_tokens,
                completion_tokens=hit.completion_tokens,
            )
            return finish(cached, analysis=analysis)

    refused = None if settings.is_local else _over_budget(request, settings, store, now)
    if refused is not None:
        failure = AnalysisFailure(FailureKind.BUDGET, refused)
        return finish(replace(base_record, error=str(failure)), failure=failure)

    started = time.perf_counter()
    try:
        reply = llm.complete(prompt, image)
    except (LlmTransientError, LlmRequestError) as exc:
        if isinstance(exc, LlmTimeoutError):
            kind = FailureKind.TIMEOUT
        elif isinstance(exc, LlmTransientError):
            kind = FailureKind.TRANSIENT
        elif isinstance(exc, LlmUnusableReplyError):
            kind = FailureKind.OFF_SCHEMA
        else:
            kind = FailureKind.HTTP_ERROR
        reason = str(exc)
        if kind is FailureKind.HTTP_ERROR and image is not None and "image" in reason.lower():
            reason += " (a text-only model? TRADER_LLM__VISION=false sends the same prompt without the chart)"
        failure = AnalysisFailure(kind, reason)
        latency_ms = round((time.perf_counter() - started) * 1000)
        attempts = int(getattr(exc, "attempts", 0))
        return finish(replace(base_record, error=str(failure), latency_ms=latency_ms), failure=failure,
                      attempts=attempts)  # fmt: skip

    estimated = reply.prompt_tokens is None or reply.completion_tokens is None
    prompt_tokens = reply.prompt_tokens
    completion_tokens = reply.completion_tokens
    if prompt_tokens is None:
        chars = len(prompt.system) + len(prompt.text)
        prompt_tokens = chars // _CHARS_PER_TOKEN + (_IMAGE_TOKENS_ESTIMATE if image else 0)
    if completion_tokens is None:
        completion_tokens = len(reply.text or "") // _CHARS_PER_TOKEN
    cost = call_cost(settings, model, prompt_tokens, completion_tokens)
    reached = None if settings.is_local else _budget_reached(request, settings, store, now, cost.usd, model)
    if reached is not None:
        publish(reached)  # this call spent the rest of a budget: the next ones are refused (a notification)
    answered = replace(
        base_record,
        response_text=reply.text if reply.text is not None else reply.refusal,
        prompt_tokens=reply.prompt_tokens,
        completion_tokens=reply.completion_tokens,
        cost_usd=cost.usd,
        latency_ms=reply.latency_ms,
    )
    flagged = (estimated and not settings.is_local) or not cost.known
    try:
        analysis = parse_analysis(reply.text, refusal=reply.refusal)
    except AnalysisParseError as exc:
        where = "" if reply.source == CONTENT else f" (in the reply's {reply.source})"
        failure = AnalysisFailure(exc.kind, exc.reason + where)
        return finish(replace(answered, error=str(failure)), failure=failure, cost_estimated=flagged,
                      attempts=reply.attempts)  # fmt: skip
    return finish(answered, analysis=analysis, cost_estimated=flagged, attempts=reply.attempts)


def _budget_reached(
    request: AnalysisRequest, settings: LLMSettings, store: LlmCallStore, now: dt.datetime, cost: Decimal, model: str
) -> TraderEvent | None:
    """The LLM_BUDGET event when this call (not yet stored) takes today's spend to the global or the strategy's
    budget; told once a day per budget, by the call that crosses it (every later one is refused before it asks)."""
    for use in _budgets(request, settings, store, now):
        label = "daily" if use.scope == "global" else f"{request.strategy_name}'s daily"
        spent, budget = use.spent, use.limit
        if spent < budget <= spent + cost:
            total = spent + cost
            told = f"LLM {label} budget reached: {total} of {budget} USD spent today (UTC); further calls ABSTAIN"
            payload = {
                "budget": label,
                "spent_usd": json_value(total),
                "budget_usd": json_value(budget),
                "model": model,
            }
            budget_resource = Resource("trader.llm.budget", "LLM budget")
            return TraderEvent(
                EventKind.LLM_BUDGET, budget_resource, told, payload, (strategy_resource(request.strategy_name),)
            )
    return None
