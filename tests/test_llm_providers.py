"""Providers (offline / openai / azure / compatible), their settings, reply shapes, vision, budgets and costs.

Every provider is driven through the real ``openai`` client (``OpenAIAnalyst``) against the loopback server in
that provider's dialect (tests/llm_server.py: Ollama, vLLM, Azure OpenAI, OpenAI).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest

from models.enums import AnalystKind, LlmProvider, SignalAction
from models.strategy import StrategyDefinition
from services.errors import InputError
from services.events import use_sink
from services.llm.analyst import AnalysisRequest, analyze
from services.llm.client import NO_KEY, OpenAIAnalyst
from services.llm.costs import summarize
from services.llm.offline import OFFLINE_MODEL
from services.llm.outcome import AnalysisOutcome
from services.llm.schema import FailureKind
from services.llm.store import DbLlmCallStore, InMemoryLlmCallStore, LlmCallStore
from services.settings import LLMSettings, load_settings
from services.signals import generate_signal
from tests.llm_server import (
    Flavor,
    LoopbackLLMServer,
    Scripted,
    answer,
    error,
    stream,
    tool_call,
    vllm_legacy_error,
)
from tests.test_events import Recorder
from tests.test_llm_analyst import BUY, NOW, PNG, spy_definition, spy_request
from tests.trader_cli import Invoke

KEY = "sk-test-providers-0123456789"


@pytest.fixture(scope="module")
def definition() -> StrategyDefinition:
    return spy_definition()


@pytest.fixture(scope="module")
def request_(definition: StrategyDefinition) -> AnalysisRequest:
    return spy_request(definition)


def llm_env(env: dict[str, str]) -> LLMSettings:
    return load_settings({"TRADER_LLM__TIMEOUT_S": "5", "TRADER_LLM__MAX_RETRIES": "0", **env}).llm


def run(
    req: AnalysisRequest, cfg: LLMSettings, store: LlmCallStore | None = None, *, png: bytes | None = PNG
) -> AnalysisOutcome:
    backend = OpenAIAnalyst.from_settings(cfg, backoff_s=0.01)
    return analyze(req, settings=cfg, store=store or InMemoryLlmCallStore(), chart_png=png, now=NOW, backend=backend)


def signal_of(outcome: AnalysisOutcome, definition: StrategyDefinition, req: AnalysisRequest) -> Any:
    return generate_signal(outcome, definition, last_bar_time=req.snapshot.last_bar_time, now=NOW,
                           flagged_latest=False)  # fmt: skip


# --- settings -------------------------------------------------------------------------------------------------


def test_the_provider_is_inferred_and_offline_stays_the_default() -> None:
    assert llm_env({}).resolved_provider is LlmProvider.OFFLINE
    assert llm_env({"TRADER_LLM__API_KEY": "   "}).resolved_provider is LlmProvider.OFFLINE
    openai_ = llm_env({"TRADER_LLM__API_KEY": KEY})
    assert openai_.resolved_provider is LlmProvider.OPENAI and openai_.token_param == "max_completion_tokens"
    local = llm_env({"TRADER_LLM__BASE_URL": "http://localhost:11434/v1"})
    assert local.resolved_provider is LlmProvider.COMPATIBLE and local.is_local and local.token_param == "max_tokens"
    lan = llm_env({"TRADER_LLM__BASE_URL": "http://192.168.1.20:8000/v1", "TRADER_LLM__API_KEY": KEY})
    assert lan.is_local  # a private address is a local server, key or not
    remote = llm_env({"TRADER_LLM__BASE_URL": "https://api.together.xyz/v1", "TRADER_LLM__API_KEY": KEY})
    assert remote.resolved_provider is LlmProvider.COMPATIBLE and not remote.is_local
    keyless = llm_env({"TRADER_LLM__BASE_URL": "https://llm.example.org/v1"})
    assert keyless.is_local  # a compatible endpoint without a key is the user's own
    forced = llm_env({"TRADER_LLM__PROVIDER": "offline", "TRADER_LLM__API_KEY": KEY})
    assert forced.resolved_provider is LlmProvider.OFFLINE
    chosen = llm_env({"TRADER_LLM__BASE_URL": "http://localhost:8080/v1", "TRADER_LLM__TOKEN_LIMIT_PARAM":
                      "max_completion_tokens"})  # fmt: skip
    assert chosen.token_param == "max_completion_tokens"


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"TRADER_LLM__PROVIDER": "openai"}, "provider openai needs TRADER_LLM__API_KEY"),
        ({"TRADER_LLM__PROVIDER": "compatible"}, "provider compatible needs TRADER_LLM__BASE_URL"),
        (
            {"TRADER_LLM__PROVIDER": "azure", "TRADER_LLM__API_KEY": KEY, "TRADER_LLM__BASE_URL": "https://x.openai.azure.com"},
            "provider azure needs TRADER_LLM__DEPLOYMENT",
        ),
        ({"TRADER_LLM__PROVIDER": "azure", "TRADER_LLM__DEPLOYMENT": "d"},
         "TRADER_LLM__API_KEY and TRADER_LLM__BASE_URL"),
        ({"TRADER_LLM__API_KEY": KEY, "TRADER_LLM__DEPLOYMENT": "d"}, "applies to provider azure only"),
        ({"TRADER_LLM__PROVIDER": "gemini"}, "llm.provider"),
        ({"TRADER_LLM__BASE_URL": "localhost:11434"}, "not an http(s) URL"),
        ({"TRADER_LLM__PRICES": "{not json"}, "llm.prices: Value error, not JSON"),
        ({"TRADER_LLM__PRICES": '{"m": {"input_per_m": "-1", "output_per_m": "2"}}'}, "input_per_m"),
    ],
)  # fmt: skip
def test_a_provider_missing_what_it_needs_is_a_settings_error_at_start_up(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(InputError) as caught:
        load_settings(env)
    assert fragment in caught.value.summary()


def test_user_prices_extend_the_table(request_: AnalysisRequest) -> None:
    prices = '{"My-Model": {"input_per_m": "1", "output_per_m": "2"}}'
    with LoopbackLLMServer() as server:
        server.enqueue(answer(BUY, prompt_tokens=1000, completion_tokens=100, model="my-model"))
        cfg = llm_env({"TRADER_LLM__PROVIDER": "openai", "TRADER_LLM__API_KEY": KEY,
                       "TRADER_LLM__BASE_URL": server.base_url, "TRADER_LLM__MODEL": "my-model",
                       "TRADER_LLM__PRICES": prices})  # fmt: skip
        outcome = run(request_, cfg)
    # 1000 * 1 / 1e6 + 100 * 2 / 1e6, a known price (not the flagged default)
    assert outcome.ok and outcome.cost_usd == Decimal("0.0012") and not outcome.cost_estimated


# --- providers, each in its own dialect ------------------------------------------------------------------------


@pytest.fixture
def ollama() -> Iterator[LoopbackLLMServer]:
    with LoopbackLLMServer("ollama") as srv:
        yield srv


def test_a_local_ollama_needs_only_its_base_url_costs_nothing_and_skips_the_budget(
    ollama: LoopbackLLMServer, request_: AnalysisRequest, definition: StrategyDefinition
) -> None:
    cfg = llm_env({"TRADER_LLM__BASE_URL": ollama.base_url, "TRADER_LLM__MODEL": "llama3.2-vision",
                   "TRADER_LLM__DAILY_BUDGET_USD": "0"})  # fmt: skip
    store = InMemoryLlmCallStore()
    ollama.enqueue(answer(BUY, model="llama3.2-vision", prompt_tokens=900, completion_tokens=90))
    # The main job's own path: no backend given, analyze builds it from the settings.
    outcome = analyze(request_, settings=cfg, store=store, chart_png=PNG, now=NOW)
    assert outcome.ok and outcome.analyst is AnalystKind.LLM and outcome.model == "llama3.2-vision"
    assert outcome.cost_usd == 0 and not outcome.cost_estimated and outcome.local  # a 0 budget did not stop it
    assert signal_of(outcome, definition, request_).action is SignalAction.BUY
    (sent,) = ollama.requests
    assert sent.path == "/v1/chat/completions" and sent.headers["authorization"] == f"Bearer {NO_KEY}"
    assert sent.body["max_tokens"] == 800 and "max_completion_tokens" not in sent.body  # what Ollama reads
    assert sent.body["model"] == "llama3.2-vision" and len(sent.image_urls()) == 1
    assert store.calls[0].cost_usd == 0 and store.spent_since(NOW - dt.timedelta(days=1)) == 0
    # Ollama's error shape: a model not pulled is a 404 whose message reaches the reason.
    ollama.enqueue(ollama.error(404, 'model "llama3.2-vision" not found, try pulling it first'))
    missing = run(request_, cfg, png=PNG + b"1")
    assert missing.failure is not None and missing.failure.kind is FailureKind.HTTP_ERROR
    assert "HTTP 404" in missing.failure.reason and "try pulling it first" in missing.failure.reason


def test_vllm_with_its_api_key_and_error_shape(request_: AnalysisRequest, definition: StrategyDefinition) -> None:
    too_long_text = (
        "This model's maximum context length is 4096 tokens. However, your request has 5210 input "
        "tokens. Please reduce the length of the input messages."
    )  # vLLM's wording (engine/serving.py)
    with LoopbackLLMServer("vllm", api_key=KEY) as vllm:
        cfg = llm_env({"TRADER_LLM__BASE_URL": vllm.base_url, "TRADER_LLM__API_KEY": KEY,
                       "TRADER_LLM__MODEL": "Qwen/Qwen2.5-VL-7B-Instruct"})  # fmt: skip
        vllm.enqueue(answer(BUY), vllm.error(400, too_long_text), vllm_legacy_error(400, "old server: too long"))
        ok = run(request_, cfg)
        too_long = run(request_, cfg, png=PNG + b"1")
        legacy = run(request_, cfg, png=PNG + b"3")
        wrong_key = run(request_, cfg.model_copy(update={"api_key": None}), png=PNG + b"2")
        sent = vllm.requests
    assert ok.ok and ok.cost_usd == 0 and ok.local  # loopback: a local server even with a key
    assert sent[0].headers["authorization"] == f"Bearer {KEY}" and sent[0].body["max_tokens"] == 800
    assert too_long.failure is not None and too_long.failure.kind is FailureKind.HTTP_ERROR
    assert "maximum context length is 4096" in too_long.failure.reason  # error.message of vLLM's nested shape
    assert legacy.failure is not None and legacy.failure.kind is FailureKind.HTTP_ERROR
    assert "old server: too long" in legacy.failure.reason  # the top-level "message" of vLLM <= 0.10.0
    assert wrong_key.failure is not None and "HTTP 401" in wrong_key.failure.reason
    assert signal_of(too_long, definition, request_).action is SignalAction.ABSTAIN


def test_azure_deployment_api_version_and_api_key_header(
    request_: AnalysisRequest, definition: StrategyDefinition
) -> None:
    with LoopbackLLMServer("azure", api_key=KEY, deployment="trader-4o-mini") as azure:
        env = {"TRADER_LLM__PROVIDER": "azure", "TRADER_LLM__BASE_URL": azure.base_url,
               "TRADER_LLM__API_KEY": KEY, "TRADER_LLM__DEPLOYMENT": "trader-4o-mini"}  # fmt: skip
        cfg = llm_env(env)
        azure.enqueue(answer(BUY, prompt_tokens=1000, completion_tokens=100))
        ok = run(request_, cfg)
        gone = run(request_, llm_env({**env, "TRADER_LLM__DEPLOYMENT": "deleted"}), png=PNG + b"1")
        sent = azure.requests
    assert ok.ok and ok.cost_usd == Decimal("0.00021") and not ok.local  # priced as the deployed gpt-4o-mini
    assert sent[0].path == "/openai/deployments/trader-4o-mini/chat/completions?api-version=2024-10-21"
    assert sent[0].headers["api-key"] == KEY and "authorization" not in sent[0].headers
    assert sent[0].body["max_tokens"] == 800 and "max_completion_tokens" not in sent[0].body
    assert gone.failure is not None and "HTTP 404" in gone.failure.reason
    assert "deployment for this resource does not exist" in gone.failure.reason
    assert signal_of(ok, definition, request_).action is SignalAction.BUY


@pytest.mark.parametrize("flavor", ["openai", "ollama", "vllm", "azure"])
def test_each_dialect_passes_the_analysis_contract(
    flavor: Flavor, request_: AnalysisRequest, definition: StrategyDefinition
) -> None:
    """The same three answers (valid, off-schema, a 500) end BUY, ABSTAIN off_schema, ABSTAIN transient."""
    key = KEY if flavor in ("openai", "azure") else None
    with LoopbackLLMServer(flavor, api_key=key) as server:
        env = {"TRADER_LLM__BASE_URL": server.base_url}
        if flavor == "openai":
            env |= {"TRADER_LLM__PROVIDER": "openai", "TRADER_LLM__API_KEY": KEY}
        if flavor == "azure":
            env |= {"TRADER_LLM__PROVIDER": "azure", "TRADER_LLM__API_KEY": KEY,
                    "TRADER_LLM__DEPLOYMENT": server.deployment}  # fmt: skip
        cfg = llm_env(env)
        server.enqueue(answer(BUY), answer({**BUY, "confidence": 3}), server.error(500, "boom"))
        outcomes = [run(request_, cfg, png=PNG + bytes([i])) for i in range(3)]
        fields = {server.token_field in r.body for r in server.requests}
    actions = [signal_of(o, definition, request_).action for o in outcomes]
    assert actions == [SignalAction.BUY, SignalAction.ABSTAIN, SignalAction.ABSTAIN]
    assert [o.failure.kind if o.failure else None for o in outcomes] == [None, FailureKind.OFF_SCHEMA,
                                                                          FailureKind.TRANSIENT]  # fmt: skip
    assert fields == {True}  # every request carried the length field this dialect reads


# --- reply shapes ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scripted", "fragment"),
    [
        (stream(BUY), None),
        (tool_call(BUY), None),
        (Scripted(200, {**answer(None).body, "choices": [{"index": 0, "finish_reason": "stop", "message": {
            "role": "assistant", "content": [{"type": "text", "text": json.dumps(BUY)}]}}]}), None),
        (stream(BUY, finish=False, done=False, usage=False), "cut off after"),
        (Scripted(200, 'data: {"error": {"message": "overloaded"}}\n\n', content_type="text/event-stream"),
         "the stream carried an error: overloaded"),
        (tool_call({**BUY, "action": "YOLO"}), "in the reply's tool call 'submit_analysis' arguments"),
        (tool_call("{'action': 'BUY'"), "in the reply's tool call 'submit_analysis' arguments"),
        (tool_call(None), "tool call 'submit_analysis' with no arguments"),
        (Scripted(200, {"object": "error", "message": "engine dead", "code": 500}), "HTTP 200 with an error"),
        (Scripted(200, [1, 2]), "a JSON list, not an object"),
    ],
    ids=["sse", "tool-call", "content-parts", "sse-cut-off", "sse-error", "tool-call-off-schema",
         "tool-call-not-json", "tool-call-no-arguments", "error-object-200", "json-list"],
)  # fmt: skip
def test_every_reply_shape_ends_in_a_signal(
    request_: AnalysisRequest, definition: StrategyDefinition, scripted: Scripted, fragment: str | None
) -> None:
    with LoopbackLLMServer() as server:
        server.enqueue(scripted)
        cfg = llm_env({"TRADER_LLM__PROVIDER": "openai", "TRADER_LLM__API_KEY": KEY,
                       "TRADER_LLM__BASE_URL": server.base_url})  # fmt: skip
        outcome = run(request_, cfg)
    sig = signal_of(outcome, definition, request_)
    if fragment is None:
        assert outcome.ok and sig.action is SignalAction.BUY, outcome.failure
        assert outcome.analysis is not None and outcome.analysis.stop == Decimal("263.0")
    else:
        assert outcome.failure is not None and fragment in outcome.failure.reason, outcome.failure
        assert sig.action is SignalAction.ABSTAIN and outcome.failure.kind.value in sig.reason


def test_a_streamed_reply_keeps_its_usage(request_: AnalysisRequest) -> None:
    with LoopbackLLMServer() as server:
        server.enqueue(stream(BUY, pieces=7))
        cfg = llm_env({"TRADER_LLM__PROVIDER": "openai", "TRADER_LLM__API_KEY": KEY,
                       "TRADER_LLM__BASE_URL": server.base_url})  # fmt: skip
        outcome = run(request_, cfg)
    assert (outcome.prompt_tokens, outcome.completion_tokens) == (1200, 80) and not outcome.cost_estimated


# --- vision ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["model", "strategy"])
def test_a_text_only_model_gets_the_same_prompt_without_the_image(
    ollama: LoopbackLLMServer, request_: AnalysisRequest, where: str
) -> None:
    env = {"TRADER_LLM__BASE_URL": ollama.base_url}
    if where == "model":
        env["TRADER_LLM__VISION"] = "false"
    req = request_ if where == "model" else replace(request_, vision=False)
    ollama.enqueue(answer(BUY), answer(BUY))
    text_only = run(req, llm_env(env))
    with_image = run(request_, llm_env({"TRADER_LLM__BASE_URL": ollama.base_url}))
    blind, seeing = ollama.requests
    assert blind.image_urls() == [] and len(seeing.image_urls()) == 1
    texts = [[p["text"] for p in r.body["messages"][1]["content"] if p["type"] == "text"] for r in (blind, seeing)]
    assert texts[0] == texts[1] == [request_.prompt.text]
    assert text_only.image.startswith("not sent") and ("VISION=false" if where == "model" else "llm.vision") in \
        text_only.image  # fmt: skip
    assert with_image.image.startswith("sent") and text_only.cache_key != with_image.cache_key
    # A text-only model refusing the image says how to turn images off.
    # Ollama's ErrNoVisionModel (ollama/ollama model/model.go until commit 7b22ac968, July 2026, removed as dead code).
    ollama.enqueue(ollama.error(400, "this model is missing data required for image input"))
    refused = run(request_, llm_env({"TRADER_LLM__BASE_URL": ollama.base_url}), png=PNG + b"1")
    assert refused.failure is not None and "TRADER_LLM__VISION=false" in refused.failure.reason


# --- budgets and costs -----------------------------------------------------------------------------------------


def test_a_strategy_budget_stops_that_strategy_only(request_: AnalysisRequest, definition: StrategyDefinition) -> None:
    store = InMemoryLlmCallStore()
    capped = replace(request_, daily_budget_usd=Decimal("0.0002"))
    other = replace(request_, strategy_name="other")
    with LoopbackLLMServer() as server:
        cfg = llm_env({"TRADER_LLM__PROVIDER": "openai", "TRADER_LLM__API_KEY": KEY,
                       "TRADER_LLM__BASE_URL": server.base_url, "TRADER_LLM__DAILY_BUDGET_USD": "1"})  # fmt: skip
        server.enqueue(answer(BUY, prompt_tokens=1000, completion_tokens=100), answer(BUY))  # 0.00021 USD
        with use_sink(Recorder()) as told:
            first = run(capped, cfg, store)
            blocked = run(capped, cfg, store, png=PNG + b"1")
            elsewhere = run(other, cfg, store, png=PNG + b"1")
        assert len(server.requests) == 2
    assert first.ok and elsewhere.ok
    (reached,) = told.events  # type: ignore[attr-defined]  # the first call reached the strategy's budget
    assert reached.payload["budget"] == "spy-sma-cross's daily" and reached.payload["budget_usd"] == "0.0002"
    assert blocked.failure is not None and blocked.failure.kind is FailureKind.BUDGET
    assert "strategy budget exhausted: spy-sma-cross spent 0.00021000 of its 0.0002 USD" in blocked.failure.reason
    assert signal_of(blocked, definition, request_).action is SignalAction.ABSTAIN


def test_the_strategy_document_carries_the_budget_and_the_vision_switch(definition: StrategyDefinition) -> None:
    data = definition.model_dump(mode="json")
    data["llm"] = {"vision": False, "daily_budget_usd": "0.50"}
    req = spy_request(StrategyDefinition.model_validate(data))
    assert (req.vision, req.daily_budget_usd) == (False, Decimal("0.50"))
    data["llm"] = {"daily_budget_usd": "-1"}
    with pytest.raises(ValueError, match="daily_budget_usd"):
        StrategyDefinition.model_validate(data)


def test_costs_by_strategy_model_day_and_call(request_: AnalysisRequest, db_url: str) -> None:
    store = DbLlmCallStore(db_url)
    other = replace(request_, strategy_name="other")
    with LoopbackLLMServer() as server:
        cfg = llm_env({"TRADER_LLM__PROVIDER": "openai", "TRADER_LLM__API_KEY": KEY,
                       "TRADER_LLM__BASE_URL": server.base_url})  # fmt: skip
        server.enqueue(answer(BUY, prompt_tokens=1000, completion_tokens=100), error(400, "no"))
        run(request_, cfg, store)  # 0.00021
        run(request_, cfg, store)  # cache hit: 0
        run(other, cfg, store, png=PNG + b"1")  # failed request: 0
    analyze(request_, settings=LLMSettings(), store=store, chart_png=None, now=NOW)  # offline
    usage = store.usage_since(NOW - dt.timedelta(days=1))
    by_strategy = {r.key: r for r in summarize(usage, "strategy")}
    mine = by_strategy["spy-sma-cross"]
    assert (mine.calls, mine.requests, mine.cache_hits, mine.errors) == (3, 1, 1, 0)
    assert (mine.prompt_tokens, mine.completion_tokens, mine.cost_usd) == (1000, 100, Decimal("0.00021"))
    assert mine.mean_latency_ms is not None and by_strategy["other"].errors == 1
    assert [r.key for r in summarize(usage, "model")] == sorted(["gpt-4o-mini", OFFLINE_MODEL])
    (day,) = summarize(usage, "day")
    assert day.key == "2017-12-29" and day.calls == 4 and day.cost_usd == Decimal("0.00021")
    assert [r.calls for r in summarize(usage, "call")] == [1, 1, 1, 1]
    assert store.spent_since(NOW.replace(hour=0), strategy_name="other") == 0


def test_trader_llm_costs(trader: Invoke, request_: AnalysisRequest) -> None:
    from cli import common

    store = DbLlmCallStore(common.settings().database_url())
    common.ensure_schema()
    now = dt.datetime.now(dt.UTC)
    with LoopbackLLMServer() as server:
        cfg = llm_env({"TRADER_LLM__PROVIDER": "openai", "TRADER_LLM__API_KEY": KEY,
                       "TRADER_LLM__BASE_URL": server.base_url})  # fmt: skip
        server.enqueue(answer(BUY, prompt_tokens=1000, completion_tokens=100))
        analyze(request_, settings=cfg, store=store, chart_png=PNG, now=now,
                backend=OpenAIAnalyst.from_settings(cfg))  # fmt: skip
    result = trader("llm", "costs", "--by", "model", "--json")
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.output)
    assert row["key"] == "gpt-4o-mini" and row["cost_usd"] == "0.00021000" and row["requests"] == 1
    table = trader("llm", "costs")
    assert table.exit_code == 0 and "spy-sma-cross" in table.output and "0.00021" in table.output
    bad = trader("llm", "costs", "--by", "week")
    assert bad.exit_code == 2 and "must be one of strategy, model, day" in bad.output


def test_the_analysis_artifact_tables_cost_per_call_strategy_and_model(request_: AnalysisRequest) -> None:
    from tasks.analysis import RateLimitedBackend, _backend, cost_tables

    local = _backend(LLMSettings(base_url="http://localhost:11434/v1", model="qwen2.5vl"))
    assert isinstance(local, RateLimitedBackend) and local.model == "qwen2.5vl"  # the main job's client
    assert _backend(LLMSettings()) is None
    store = InMemoryLlmCallStore()
    with LoopbackLLMServer() as server:
        cfg = llm_env({"TRADER_LLM__PROVIDER": "openai", "TRADER_LLM__API_KEY": KEY,
                       "TRADER_LLM__BASE_URL": server.base_url})  # fmt: skip
        server.enqueue(answer(BUY, prompt_tokens=1000, completion_tokens=100))
        first = run(request_, cfg, store)
        again = run(request_, cfg, store)
    run(replace(request_, strategy_name="other"), cfg, store)  # another strategy's call: in the total only
    markdown = cost_tables(store, NOW, again, "spy-sma-cross", (Decimal("5"), Decimal("0.50")))
    titles = markdown.split("**")[1::2]
    assert titles == ["this call", "spy-sma-cross on 2017-12-29 (UTC) by model", "all strategies on 2017-12-29 (UTC)"]
    rows = [line for line in markdown.splitlines() if line.startswith("| ") and "calls" not in line]
    assert rows[0].startswith(f"| #{again.call_id} ") and "| 0 |" in rows[0]  # the cache hit: 0 USD, 1 cache hit
    assert rows[1] == f"| gpt-4o-mini | 2 | 1 | 1 | 1000 / 100 | 0.00021000 | {first.latency_ms} |"
    assert len(rows) == 2
    assert markdown.endswith(
        ": 0.00021000 USD of the 5 USD daily budget; spy-sma-cross: 0.00021000 USD of its 0.50 USD"
    )
