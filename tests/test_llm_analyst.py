"""analyze() end to end against the loopback OpenAI-compatible server, through the real ``openai`` client."""

from __future__ import annotations

import base64
import datetime as dt
import json
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from models.enums import AnalystKind, LlmProvider, SignalAction
from models.strategy import StrategyDefinition
from services.bars.loader import load_bars
from services.events import EventKind, strategy_resource, use_sink
from services.indicators import compute_indicators
from services.llm.analyst import AnalysisRequest, analyze, build_request
from services.llm.client import OpenAIAnalyst
from services.llm.offline import OFFLINE_LABEL
from services.llm.outcome import AnalysisOutcome
from services.llm.prompts import load_template, render_prompt
from services.llm.schema import FailureKind
from services.llm.store import DbLlmCallStore, InMemoryLlmCallStore, LlmCallStore
from services.settings import LLMSettings
from services.signals import generate_signal
from services.strategies import load_strategy_file
from tests.llm_server import LoopbackLLMServer, Scripted, answer, error, refusal
from tests.test_events import Recorder

ROOT = Path(__file__).resolve().parents[1]
SPY = Path(__file__).resolve().parents[1] / "data" / "samples" / "yahoofinance-SPY-20080101-20180101.csv"
NOW = dt.datetime(2017, 12, 29, 21, 10, tzinfo=dt.UTC)
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4  # stands in for a chart: only its bytes matter here
KEY = "sk-test-loopback-0123456789"
BUY = {
    "action": "BUY",
    "confidence": 0.72,
    "reasoning": "SMA20 above SMA50, RSI 61 leaves room.",
    "entry": 266.86,
    "stop": 263.0,
    "target": 273.5,
    "horizon_bars": 5,
}


def spy_definition() -> StrategyDefinition:
    return load_strategy_file(ROOT / "examples" / "strategies" / "spy-sma-cross.yaml")


def spy_request(definition: StrategyDefinition) -> AnalysisRequest:
    """``definition``'s analysis request over the last 250 SPY sample bars."""
    frame = load_bars(SPY).frame.tail(250).reset_index(drop=True)
    name, body = load_template(ROOT / "examples" / "prompts", definition.prompt)
    return build_request(definition, compute_indicators(frame, definition.indicators), body, template_name=name)


@pytest.fixture(scope="module")
def definition() -> StrategyDefinition:
    return spy_definition()


@pytest.fixture(scope="module")
def request_(definition: StrategyDefinition) -> AnalysisRequest:
    return spy_request(definition)


@pytest.fixture
def server() -> Iterator[LoopbackLLMServer]:
    with LoopbackLLMServer() as srv:
        yield srv


def settings(server: LoopbackLLMServer, **kw: Any) -> LLMSettings:
    values: dict[str, Any] = {
        "provider": LlmProvider.OPENAI,  # OpenAI's API at a loopback URL: priced, budgeted
        "api_key": SecretStr(KEY),
        "base_url": server.base_url,
        "model": "gpt-4o-mini",
        "timeout_s": 5.0,
        "max_retries": 2,
        "daily_budget_usd": Decimal("1.00"),
    }
    values.update(kw)
    return LLMSettings(**values)


def backend(cfg: LLMSettings) -> OpenAIAnalyst:
    return OpenAIAnalyst.from_settings(cfg, backoff_s=0.01)


def run(req: AnalysisRequest, cfg: LLMSettings, store: LlmCallStore, *, png: bytes | None = PNG) -> AnalysisOutcome:
    return analyze(req, settings=cfg, store=store, chart_png=png, now=NOW, backend=backend(cfg))


def test_valid_answer_becomes_a_buy_and_the_request_carries_prompt_and_image(
    server: LoopbackLLMServer, request_: AnalysisRequest, definition: StrategyDefinition
) -> None:
    server.enqueue(answer(BUY, prompt_tokens=1000, completion_tokens=100))
    store = InMemoryLlmCallStore()
    outcome = analyze(request_, settings=settings(server), store=store, chart_png=PNG, now=NOW)  # default backend
    assert outcome.ok and outcome.analyst is AnalystKind.LLM and not outcome.cached
    # gpt-4o-mini: 1000 * 0.15 / 1e6 + 100 * 0.60 / 1e6 = 0.00021 USD
    assert outcome.cost_usd == Decimal("0.00021") and not outcome.cost_estimated
    assert (outcome.prompt_tokens, outcome.completion_tokens, outcome.attempts) == (1000, 100, 1)

    (req,) = server.requests
    assert req.path == "/v1/chat/completions" and req.headers["authorization"] == f"Bearer {KEY}"
    body = req.body
    assert body["model"] == "gpt-4o-mini" and body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["strict"] is True
    assert req.image_urls() == ["data:image/png;base64," + base64.b64encode(PNG).decode()]
    texts = [p["text"] for p in body["messages"][1]["content"] if p["type"] == "text"]
    assert texts == [request_.prompt.text] and "sma_fast: 266.1675" in texts[0]

    (call,) = store.calls
    assert call.cost_usd == Decimal("0.00021") and call.error is None and call.response_text == json.dumps(BUY)
    assert call.prompt_sha256 == request_.prompt.sha256 and call.cache_key == outcome.cache_key
    assert KEY not in call.request_json and base64.b64encode(PNG).decode() not in call.request_json

    sig = generate_signal(
        outcome, definition, last_bar_time=request_.snapshot.last_bar_time, now=NOW, flagged_latest=False
    )
    assert sig.action is SignalAction.BUY and sig.risk_reward == Decimal("1.72")  # 6.64 / 3.86


def test_identical_second_call_is_served_from_cache_without_a_request(
    server: LoopbackLLMServer, request_: AnalysisRequest
) -> None:
    server.enqueue(answer(BUY))
    store = InMemoryLlmCallStore()
    cfg = settings(server)
    first = run(request_, cfg, store)
    second = run(request_, cfg, store)
    assert len(server.requests) == 1
    assert second.cached and second.cost_usd == 0 and second.analysis == first.analysis
    assert [c.cached for c in store.calls] == [False, True] and store.calls[1].cost_usd == 0
    # A different image is a different key: the server is asked again.
    server.enqueue(answer(BUY))
    third = run(request_, cfg, store, png=PNG + b"x")
    assert not third.cached and len(server.requests) == 2


def test_the_same_model_at_another_endpoint_is_asked_not_served_from_the_cache(
    server: LoopbackLLMServer, request_: AnalysisRequest
) -> None:
    store = InMemoryLlmCallStore()
    with LoopbackLLMServer() as other:
        server.enqueue(answer(BUY))
        other.enqueue(answer({**BUY, "action": "HOLD"}))
        first = run(request_, settings(server), store)
        second = run(request_, settings(other), store)  # same model name, same prompt and image
    assert not second.cached and len(other.requests) == 1 and first.cache_key != second.cache_key
    assert first.analysis is not None and second.analysis is not None
    assert (first.analysis.action, second.analysis.action) == (SignalAction.BUY, SignalAction.HOLD)
    # Userinfo in the URL is no part of the endpoint, so it neither leaks into the key's input nor splits the cache.
    assert settings(server).endpoint == settings(server, base_url=server.base_url.replace("//", "//u:p@")).endpoint


def test_budget_exhausted_makes_no_request_and_abstains(
    server: LoopbackLLMServer, request_: AnalysisRequest, definition: StrategyDefinition
) -> None:
    store = InMemoryLlmCallStore()
    cfg = settings(server, daily_budget_usd=Decimal("0.00030"))
    server.enqueue(answer(BUY, prompt_tokens=1000, completion_tokens=100), answer(BUY, prompt_tokens=1000))
    with use_sink(Recorder()) as told:
        assert run(request_, cfg, store).ok  # spends 0.00021
        assert run(request_, cfg, store, png=PNG + b"1").ok  # 0.00021 + ... still under at check time
        blocked = run(request_, cfg, store, png=PNG + b"2")
    # the trader is told once (services.events): by the call that spent the rest, not by every refusal
    (reached,) = told.events  # type: ignore[attr-defined]
    assert reached.kind is EventKind.LLM_BUDGET and reached.payload["budget_usd"] == "0.0003"
    assert reached.related == (strategy_resource(request_.strategy_name),)
    assert len(server.requests) == 2 and server.pending == 0
    assert blocked.failure is not None and blocked.failure.kind is FailureKind.BUDGET
    assert "budget exhausted" in blocked.failure.reason and blocked.cost_usd == 0
    assert store.calls[-1].error is not None and "budget" in store.calls[-1].error
    sig = generate_signal(blocked, definition, last_bar_time=request_.snapshot.last_bar_time, now=NOW,
                          flagged_latest=False)  # fmt: skip
    assert sig.action is SignalAction.ABSTAIN and "budget exhausted" in sig.reason
    # A new UTC day has a fresh budget.
    server.enqueue(answer(BUY))
    tomorrow = analyze(request_, settings=cfg, store=store, chart_png=PNG + b"2", now=NOW + dt.timedelta(hours=3),
                       backend=backend(cfg))  # fmt: skip
    assert tomorrow.ok


def test_429_then_success_is_retried(server: LoopbackLLMServer, request_: AnalysisRequest) -> None:
    server.enqueue(error(429, "slow down", retry_after_ms=5), answer(BUY))
    outcome = run(request_, settings(server), InMemoryLlmCallStore())
    assert outcome.ok and outcome.attempts == 2 and len(server.requests) == 2


def test_500_until_retries_run_out_abstains(
    server: LoopbackLLMServer, request_: AnalysisRequest, definition: StrategyDefinition
) -> None:
    server.enqueue(*[error(500, "boom")] * 3, answer(BUY))
    store = InMemoryLlmCallStore()
    outcome = run(request_, settings(server, max_retries=2), store)
    assert len(server.requests) == 3 and server.pending == 1  # 1 + 2 retries, the answer never fetched
    assert outcome.failure is not None and outcome.failure.kind is FailureKind.TRANSIENT
    assert "gave up after 3 attempt(s)" in outcome.failure.reason and "HTTP 500" in outcome.failure.reason
    assert outcome.attempts == 3 and outcome.call_id == 1
    assert store.calls[0].error is not None and store.calls[0].cost_usd == 0
    sig = generate_signal(outcome, definition, last_bar_time=request_.snapshot.last_bar_time, now=NOW,
                          flagged_latest=False)  # fmt: skip
    assert sig.action is SignalAction.ABSTAIN and "transient" in sig.reason


def test_non_retryable_4xx_is_not_retried(server: LoopbackLLMServer, request_: AnalysisRequest) -> None:
    server.enqueue(error(400, "model does not support images"), answer(BUY))
    outcome = run(request_, settings(server), InMemoryLlmCallStore())
    assert len(server.requests) == 1
    assert outcome.failure is not None and outcome.failure.kind is FailureKind.HTTP_ERROR
    assert "HTTP 400" in outcome.failure.reason and "does not support images" in outcome.failure.reason
    assert KEY not in outcome.failure.reason


def test_auth_error_is_not_retried_and_the_key_is_redacted(
    server: LoopbackLLMServer, request_: AnalysisRequest
) -> None:
    server.enqueue(error(401, f"Incorrect API key provided: {KEY}. Also sk-proj-abcdef123456 is wrong."))
    store = InMemoryLlmCallStore()
    outcome = run(request_, settings(server), store)
    assert outcome.failure is not None and outcome.failure.kind is FailureKind.HTTP_ERROR
    assert "HTTP 401" in outcome.failure.reason and "Incorrect API key provided: ***" in outcome.failure.reason
    assert "sk-" not in outcome.failure.reason and store.calls[0].error is not None
    assert KEY not in store.calls[0].error and len(server.requests) == 1


def _held(release: threading.Event) -> Scripted:
    """A BUY answer the server sends only after ``release`` is set (or never, when the client hangs up first)."""
    return Scripted(200, answer(BUY).body, hold=release)


def _wait_abandoned(server: LoopbackLLMServer, count: int) -> None:
    deadline = time.monotonic() + 10
    while server.abandoned < count:
        assert time.monotonic() < deadline, f"{server.abandoned} of {count} held requests abandoned by the client"
        time.sleep(0.01)


def test_timeouts_until_retries_run_out(server: LoopbackLLMServer, request_: AnalysisRequest) -> None:
    # The server never answers before the client gives up, however slow the box: the short timeout only sets
    # how long the test takes, not its outcome.
    release = threading.Event()
    server.enqueue(_held(release), _held(release))
    try:
        outcome = run(request_, settings(server, timeout_s=0.25, max_retries=1), InMemoryLlmCallStore())
        _wait_abandoned(server, 2)  # both attempts hung up on a request that was never answered
    finally:
        release.set()
    assert outcome.failure is not None and outcome.failure.kind is FailureKind.TIMEOUT
    assert "timeout after 0.25s" in outcome.failure.reason and len(server.requests) == 2
    assert outcome.attempts == 2


def test_timeout_then_success_is_retried(server: LoopbackLLMServer, request_: AnalysisRequest) -> None:
    # The first request is held until the client times out; the retry must be answered within the timeout, so
    # the timeout is generous (the held one costs that long, whatever the load).
    release = threading.Event()
    server.enqueue(_held(release), answer(BUY))
    try:
        outcome = run(request_, settings(server, timeout_s=3.0, max_retries=1), InMemoryLlmCallStore())
        _wait_abandoned(server, 1)
    finally:
        release.set()
    assert outcome.ok and outcome.attempts == 2 and len(server.requests) == 2


@pytest.mark.parametrize(
    ("scripted", "kind", "fragment"),
    [
        (answer("Sure! BUY with high confidence."), FailureKind.INVALID_JSON, "Expecting value"),
        (answer({**BUY, "confidence": 1.7}), FailureKind.OFF_SCHEMA, "confidence"),
        (answer({"verdict": "buy"}), FailureKind.OFF_SCHEMA, "action"),
        (refusal("I can't give financial advice."), FailureKind.REFUSAL, "financial advice"),
        (answer(""), FailureKind.EMPTY, "no content"),
    ],
)
def test_unusable_answers_abstain_with_the_reason_and_are_not_cached(
    server: LoopbackLLMServer,
    request_: AnalysisRequest,
    definition: StrategyDefinition,
    scripted: Scripted,
    kind: FailureKind,
    fragment: str,
) -> None:
    server.enqueue(scripted, scripted)
    store = InMemoryLlmCallStore()
    cfg = settings(server)
    outcome = run(request_, cfg, store)
    assert outcome.failure is not None and outcome.failure.kind is kind and fragment in outcome.failure.reason
    assert outcome.cost_usd > 0  # the call was made and billed
    sig = generate_signal(outcome, definition, last_bar_time=request_.snapshot.last_bar_time, now=NOW,
                          flagged_latest=False)  # fmt: skip
    assert sig.action is SignalAction.ABSTAIN and kind.value in sig.reason
    run(request_, cfg, store)  # a failed answer is not replayed from the cache
    assert len(server.requests) == 2


def test_fenced_json_answer_is_accepted(server: LoopbackLLMServer, request_: AnalysisRequest) -> None:
    server.enqueue(answer("Here you go:\n```json\n" + json.dumps(BUY) + "\n```"))
    outcome = run(request_, settings(server), InMemoryLlmCallStore())
    assert outcome.analysis is not None and outcome.analysis.stop == Decimal("263.0")


def test_unknown_model_and_missing_usage_are_flagged_estimates(
    server: LoopbackLLMServer, request_: AnalysisRequest
) -> None:
    server.enqueue(answer(BUY, prompt_tokens=None, completion_tokens=None))
    outcome = run(request_, settings(server, model="local-llava-13b"), InMemoryLlmCallStore())
    assert outcome.ok and outcome.cost_estimated and outcome.cost_usd > 0


def test_with_nothing_configured_the_offline_analyst_answers_and_no_request_is_made(
    server: LoopbackLLMServer, request_: AnalysisRequest, definition: StrategyDefinition
) -> None:
    store = InMemoryLlmCallStore()
    outcome = analyze(request_, settings=LLMSettings(), store=store, chart_png=PNG, now=NOW)
    assert server.requests == []
    assert outcome.analyst is AnalystKind.OFFLINE and outcome.cost_usd == 0 and outcome.analysis is not None
    assert outcome.analysis.reasoning.startswith(OFFLINE_LABEL)
    assert store.calls[0].analyst is AnalystKind.OFFLINE
    sig = generate_signal(outcome, definition, last_bar_time=request_.snapshot.last_bar_time, now=NOW,
                          flagged_latest=False)  # fmt: skip
    assert sig.analyst is AnalystKind.OFFLINE and OFFLINE_LABEL in sig.reason


def test_unexpected_extra_request_fails_loudly(server: LoopbackLLMServer, request_: AnalysisRequest) -> None:
    outcome = run(request_, settings(server), InMemoryLlmCallStore())  # nothing scripted
    assert outcome.failure is not None and "HTTP 418" in outcome.failure.reason


def test_only_the_adapter_imports_openai_and_records_hold_no_credentials() -> None:
    importers = sorted(
        str(path.relative_to(ROOT))
        for path in (ROOT / "services").rglob("*.py")
        if any(line.startswith(("import openai", "from openai")) for line in path.read_text().splitlines())
    )
    assert importers == ["services/llm/client.py"]
    llm = OpenAIAnalyst(api_key=KEY, model="gpt-4o-mini", base_url="https://bob:hunter2@llm.example/v1")
    recorded = llm.request_json(render_prompt("hello", {}), PNG)
    assert "hunter2" not in recorded and "bob" not in recorded and KEY not in recorded
    assert "https://***@llm.example/v1" in recorded and KEY not in repr(llm)


def test_cache_and_budget_live_in_the_database(
    server: LoopbackLLMServer, request_: AnalysisRequest, db_url: str
) -> None:
    cfg = settings(server, daily_budget_usd=Decimal("0.00020"))
    server.enqueue(answer(BUY, prompt_tokens=1000, completion_tokens=100))  # 0.00021 USD
    first = run(request_, cfg, DbLlmCallStore(db_url))
    # A new store object (as in the next flow run, another process) sees the cached answer and the spend.
    again = analyze(request_, settings=cfg, store=DbLlmCallStore(db_url), chart_png=PNG, now=NOW)
    assert first.ok and again.cached and again.analysis == first.analysis and len(server.requests) == 1
    blocked = analyze(request_, settings=cfg, store=DbLlmCallStore(db_url), chart_png=PNG + b"!", now=NOW)
    assert blocked.failure is not None and blocked.failure.kind is FailureKind.BUDGET
    assert "spent 0.00021" in blocked.failure.reason and len(server.requests) == 1
    assert (first.call_id, again.call_id, blocked.call_id) == (1, 2, 3)


def _completion(choice: dict[str, Any]) -> Scripted:
    body = {"id": "c", "object": "chat.completion", "created": 0, "model": "gpt-4o-mini", "choices": [choice]}
    return Scripted(200, body)


@pytest.mark.parametrize(
    ("scripted", "fragment"),
    [
        (
            _completion({"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": BUY}}),
            "not text",
        ),
        (
            _completion({"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": 42}}),
            "not text",
        ),
        (_completion({"index": 0, "finish_reason": "stop"}), "no message"),
        (Scripted(200, "<html><body>Bad gateway</body></html>"), "not a chat completion"),
    ],
    ids=["content-is-an-object", "content-is-a-number", "choice-without-message", "html-with-200"],
)
def test_reply_shapes_outside_the_api_abstain_instead_of_failing(
    server: LoopbackLLMServer,
    request_: AnalysisRequest,
    definition: StrategyDefinition,
    scripted: Scripted,
    fragment: str,
) -> None:
    """Four shapes an OpenAI-compatible server can send that the SDK passes through unchecked: each ends in an
    ABSTAIN whose reason says what was wrong (they used to raise AttributeError / JSONDecodeError: a Failed run)."""
    server.enqueue(scripted)
    outcome = run(request_, settings(server, max_retries=0), InMemoryLlmCallStore())
    assert outcome.failure is not None and fragment in outcome.failure.reason, outcome.failure
    sig = generate_signal(outcome, definition, last_bar_time=request_.snapshot.last_bar_time, now=NOW,
                          flagged_latest=False)  # fmt: skip
    assert sig.action is SignalAction.ABSTAIN and outcome.failure.kind.value in sig.reason
