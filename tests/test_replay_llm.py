"""Replay through the LLM path against the loopback OpenAI-compatible server (the real openai client).

First run: one request per decision (prompt + chart). Second run on the same call store: zero requests, every
answer from the response cache, identical decisions, trades and equity. The budget pre-check refuses a replay
whose uncached calls would exceed today's remaining budget, before any request.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from models.enums import AnalystKind
from models.strategy import LlmOptions
from services.bars.loader import load_bars
from services.errors import InputError
from services.llm.store import InMemoryLlmCallStore, LlmCallRecord
from services.replay.cutoffs import cutoff_for, possibly_contaminated
from services.replay.engine import ReplayResult, replay
from services.settings import Settings, load_settings
from services.strategies import load_strategy_file
from tests.llm_server import LoopbackLLMServer, answer

ROOT = Path(__file__).resolve().parents[1]
DAILY = ROOT / "data" / "samples" / "synthetic" / "SYNTH-1995-2014.csv"  # generated: services.bars.synthetic
STRATEGY = ROOT / "examples" / "replay" / "orcl-sma-cross.yaml"
HAS_BROWSER = Path("/usr/bin/chromium").exists() or shutil.which("chromium") is not None
KEY = "sk-test-loopback-replay"
WINDOW = {"start": "2014-12-01", "end": "2014-12-31", "decide_every": 5}
ANSWERS: list[dict[str, Any]] = [
    {"action": "BUY", "confidence": 0.8, "reasoning": "SMA20 above SMA50.", "horizon_bars": 5},
    {"action": "HOLD", "confidence": 0.5, "reasoning": "Mixed.", "horizon_bars": 5},
    {"action": "SELL", "confidence": 0.7, "reasoning": "Close fell below SMA20.", "horizon_bars": 5},
    {"action": "BUY", "confidence": 0.9, "reasoning": "Trend resumed.", "horizon_bars": 5},
    {"action": "HOLD", "confidence": 0.4, "reasoning": "Wait.", "horizon_bars": 5},
]


@pytest.fixture(scope="module")
def daily() -> pd.DataFrame:
    return load_bars(DAILY).frame


@pytest.fixture
def server() -> Iterator[LoopbackLLMServer]:
    with LoopbackLLMServer() as srv:
        yield srv


def llm_settings(server: LoopbackLLMServer, budget: str = "1.00") -> Settings:
    return load_settings(
        {},
        llm={
            "provider": "openai",  # OpenAI's API at a loopback URL: priced and budgeted like OpenAI
            "api_key": KEY,
            "base_url": server.base_url,
            "model": "gpt-4o-mini",
            "timeout_s": 5.0,
            "max_retries": 0,
            "daily_budget_usd": budget,
        },
    )


def run(
    daily: pd.DataFrame, settings: Settings, store: InMemoryLlmCallStore, *, charts: bool = HAS_BROWSER
) -> ReplayResult:
    return replay(
        load_strategy_file(STRATEGY),
        daily,
        analyst="llm",
        settings=settings,
        store=store,
        charts=charts,
        **WINDOW,  # type: ignore[arg-type]
    )


def _stable(result: ReplayResult) -> dict[str, Any]:
    data = result.to_json()
    for key in ("llm_requests", "llm_cached"):
        data.pop(key)
    data["metrics"].pop("llm_cost_usd")
    return data


def test_llm_replay_reruns_from_the_cache_with_zero_requests(daily: pd.DataFrame, server: LoopbackLLMServer) -> None:
    settings = llm_settings(server)
    store = InMemoryLlmCallStore()
    server.enqueue(*(answer(a) for a in ANSWERS))
    first = run(daily, settings, store)
    assert len(first.decisions) == 5
    assert len(server.requests) == 5 and first.llm_requests == 5 and first.llm_cached == 0
    if HAS_BROWSER:
        assert all(len(r.image_urls()) == 1 for r in server.requests)
    assert [d.action.value for d in first.decisions] == ["BUY", "HOLD", "SELL", "BUY", "HOLD"]
    assert first.metrics.llm_cost_usd > 0
    assert first.fills, "the BUY must fill at the next open"
    # gpt-4o-mini's training cutoff is after 2014: every decision may be contaminated
    assert first.contaminated == 5 and all(d.possibly_contaminated for d in first.decisions)
    # each request carries the decision's own data only: the newest bar in the prompt is the decision bar
    for request, decision in zip(server.requests, first.decisions, strict=True):
        text = json.dumps(request.body["messages"])
        assert f"Data as of {decision.bar_time.date()}" in text

    second = run(daily, settings, store)
    assert len(server.requests) == 5, "the rerun must not call the model"
    assert second.llm_requests == 0 and second.llm_cached == 5
    assert second.metrics.llm_cost_usd == 0
    assert _stable(second) == _stable(first)
    assert [(d.action, d.reason) for d in second.decisions] == [(d.action, d.reason) for d in first.decisions]


def test_budget_precheck_refuses_before_any_request(daily: pd.DataFrame, server: LoopbackLLMServer) -> None:
    store = InMemoryLlmCallStore()
    with pytest.raises(InputError) as err:
        run(daily, llm_settings(server, budget="0.0001"), store, charts=False)
    assert "5 uncached LLM calls" in err.value.summary()
    assert server.requests == []
    # once cached, the same tiny budget is enough: cached calls cost nothing
    server.enqueue(*(answer(a) for a in ANSWERS))
    run(daily, llm_settings(server), store, charts=False)
    rerun = run(daily, llm_settings(server, budget="0.0001"), store, charts=False)
    assert rerun.llm_cached == 5 and len(server.requests) == 5


def test_training_cutoffs() -> None:
    assert cutoff_for("gpt-4o-mini") == (dt.date(2023, 10, 1), True)
    assert cutoff_for("gpt-4o-mini-2024-07-18")[0] == dt.date(2023, 10, 1)
    assert cutoff_for("my-local-model")[1] is False
    assert possibly_contaminated("gpt-4o", dt.date(2014, 12, 1))
    assert not possibly_contaminated("gpt-4o", dt.date(2024, 1, 2))


def test_budget_precheck_counts_the_strategy_budget_and_skips_local_endpoints(
    daily: pd.DataFrame, server: LoopbackLLMServer
) -> None:
    capped = load_strategy_file(STRATEGY).model_copy(update={"llm": LlmOptions(daily_budget_usd=Decimal("0.0001"))})
    with pytest.raises(InputError) as err:
        replay(capped, daily, analyst="llm", settings=llm_settings(server), store=InMemoryLlmCallStore(),
               charts=False, **WINDOW)  # type: ignore[arg-type]  # fmt: skip
    assert "the strategy's llm.daily_budget_usd" in err.value.summary() and server.requests == []
    # the same strategy against a local endpoint (no key): free, so no budget applies, not even one already spent
    # today (a paid call of this strategy over its cap and the global budget of 0 would refuse any other endpoint)
    now = dt.datetime(2026, 1, 5, 15, 0, tzinfo=dt.UTC)
    spent = InMemoryLlmCallStore()
    spent.record(LlmCallRecord(model="gpt-4o-mini", analyst=AnalystKind.LLM, prompt_sha256="0" * 64,
                               request_json="{}", created_at=now - dt.timedelta(hours=1), cost_usd=Decimal("0.001"),
                               strategy_name=capped.name))  # fmt: skip
    local = load_settings({}, llm={"base_url": server.base_url, "timeout_s": 5.0, "max_retries": 0,
                                   "daily_budget_usd": "0"})  # fmt: skip
    server.enqueue(*(answer(a) for a in ANSWERS))
    result = replay(capped, daily, analyst="llm", settings=local, store=spent, charts=False, clock=lambda: now,
                    **WINDOW)  # type: ignore[arg-type]  # fmt: skip
    assert result.llm_requests == 5 and result.metrics.llm_cost_usd == 0
