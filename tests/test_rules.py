"""Indicator rules and the decision policies: the safe rule language, validation when a strategy is stored, and
each policy over real SPY bars (the LLM side through the real ``openai`` client against the loopback server)."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from pydantic import SecretStr

from models.enums import AnalystKind, SignalAction
from models.rule_expr import RuleSyntaxError, parse_condition
from models.strategy import StrategyDefinition
from services.bars.loader import load_bars
from services.bars.validation import validate_bars
from services.errors import InputError
from services.indicators import compute_indicators
from services.llm.analyst import AnalysisRequest, analyze, build_request
from services.llm.client import OpenAIAnalyst
from services.llm.offline import OFFLINE_LABEL
from services.llm.outcome import AnalysisOutcome
from services.llm.prompts import load_template
from services.llm.store import InMemoryLlmCallStore
from services.replay.engine import replay
from services.settings import LLMSettings, Settings
from services.signals import Signal, generate_signal
from services.strategies import load_strategy_file, parse_strategy
from tests.llm_server import LoopbackLLMServer, answer, error

ROOT = Path(__file__).resolve().parents[1]
SPY = ROOT / "data" / "samples" / "yahoofinance-SPY-20080101-20180101.csv"
NOW = dt.datetime(2017, 12, 29, 21, 10, tzinfo=dt.UTC)
KEY = "sk-test-loopback-rules"
# On 2017-12-29 SPY: SMA20 266.17 > SMA50 262.3, close 266.86, RSI(14) 61.
TREND_BUY = [
    {"when": "sma_fast > sma_slow and close > sma_slow", "action": "BUY", "weight": 2, "name": "uptrend"},
    {"when": "rsi_14 > 70", "action": "SELL", "weight": 1},
]
LLM_HOLD = {"action": "HOLD", "confidence": 0.6, "reasoning": "Extended after a long run; wait.", "horizon_bars": 5}
LLM_SELL = {**LLM_HOLD, "action": "SELL", "confidence": 0.8, "reasoning": "Topping pattern.", "stop": 270.0,
            "target": 255.0}  # fmt: skip
LLM_BUY = {**LLM_HOLD, "action": "BUY", "confidence": 0.72, "reasoning": "Trend intact.", "entry": 266.86,
           "stop": 263.0, "target": 273.5}  # fmt: skip


@pytest.fixture(scope="module")
def base() -> dict[str, Any]:
    return load_strategy_file(ROOT / "examples" / "strategies" / "spy-sma-cross.yaml").model_dump(mode="json")


def strategy(base: dict[str, Any], **decision: Any) -> StrategyDefinition:
    return parse_strategy({**base, "decision": decision})


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return load_bars(SPY).frame.tail(250).reset_index(drop=True)


def request_for(definition: StrategyDefinition, bars: pd.DataFrame) -> AnalysisRequest:
    name, body = load_template(ROOT / "examples" / "prompts", definition.prompt)
    return build_request(definition, compute_indicators(bars, definition.indicators), body, template_name=name)


@pytest.fixture
def server() -> Iterator[LoopbackLLMServer]:
    with LoopbackLLMServer() as srv:
        yield srv


def llm_settings(server: LoopbackLLMServer | None) -> LLMSettings:
    if server is None:
        return LLMSettings(api_key=None)
    return LLMSettings(api_key=SecretStr(KEY), base_url=server.base_url, model="gpt-4o-mini", timeout_s=5.0,
                       max_retries=0, daily_budget_usd=Decimal("1.00"))  # fmt: skip


def decide(
    definition: StrategyDefinition, bars: pd.DataFrame, server: LoopbackLLMServer | None
) -> tuple[AnalysisOutcome, Signal]:
    cfg = llm_settings(server)
    client = None
    if server is not None:
        assert cfg.api_key is not None
        client = OpenAIAnalyst(api_key=cfg.api_key, model=cfg.model, base_url=cfg.base_url, timeout_s=5.0,
                               max_retries=0, backoff_s=0.01)  # fmt: skip
    request = request_for(definition, bars)
    outcome = analyze(request, settings=cfg, store=InMemoryLlmCallStore(), chart_png=None, now=NOW, backend=client)
    signal = generate_signal(outcome, definition, last_bar_time=request.snapshot.last_bar_time, now=NOW,
                             flagged_latest=False)  # fmt: skip
    return outcome, signal


# -- the language -----------------------------------------------------------------------------------------------------


def test_conditions_evaluate_with_precedence_arithmetic_and_missing_values() -> None:
    cond = parse_condition("not rsi_14 > 70 and (close - sma_20) / atr_14 >= 1.5 or close < -1e3")
    assert cond.names == {"rsi_14", "close", "sma_20", "atr_14"}
    assert cond.evaluate({"rsi_14": 50, "close": 103, "sma_20": 100, "atr_14": 2}) is True
    assert cond.evaluate({"rsi_14": 50, "close": 102, "sma_20": 100, "atr_14": 2}) is False  # 1.0 < 1.5
    assert cond.evaluate({"rsi_14": 80, "close": 103, "sma_20": 100, "atr_14": 2}) is False
    # a name still warming up (None or NaN) or a division by zero: the rule does not apply
    assert cond.evaluate({"rsi_14": None, "close": 103, "sma_20": 100, "atr_14": 2}) is None
    assert cond.evaluate({"rsi_14": 50, "close": 103, "sma_20": 100, "atr_14": 0}) is None
    assert parse_condition("close != sma").evaluate({"close": 1.0, "sma": float("nan")}) is None
    assert parse_condition("a == 2 or b <= .5").evaluate({"a": 2.0, "b": 9.0}) is True


def test_crossings_compare_the_previous_bar_with_the_newest() -> None:
    up = parse_condition("sma_fast crosses_above sma_slow")
    assert up.needs_previous and not parse_condition("close > 1").needs_previous
    now = {"sma_fast": 101.0, "sma_slow": 100.0}
    assert up.evaluate({**now, "prev:sma_fast": 99.0, "prev:sma_slow": 100.0}) is True
    assert up.evaluate({**now, "prev:sma_fast": 100.0, "prev:sma_slow": 100.0}) is True  # from touching
    assert up.evaluate({**now, "prev:sma_fast": 100.5, "prev:sma_slow": 100.0}) is False  # was above already
    assert up.evaluate(now) is None  # no previous bar yet: the rule does not apply
    down = parse_condition("close crosses_below bb_lowerband * 1.01")  # operands may be arithmetic
    assert down.evaluate({"close": 99.0, "bb_lowerband": 100.0, "prev:close": 102.0, "prev:bb_lowerband": 100.0})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("__import__('os')", 'unexpected character "\'" at column 12'),
        ("__import__ > 1", "names are lowercase indicator columns"),
        ("close.__class__ > 1", "unexpected character '.' at column 6"),
        ("exec(close) > 1", "calls are not allowed (exec(...))"),
        ("[c for c in close] > 1", "unexpected character '['"),
        ("close > 1; import os", "unexpected character ';'"),
        ("lambda: 1", "unexpected character ':'"),
        ("close = 1", "unexpected character '='"),
        ("rsi_14 <", "expected a name, a number or '(' at the end"),
        ("(rsi_14 < 30", "expected ')' at the end"),
        ("rsi_14 < 30)", "unexpected text at column 12"),
        ("10 < rsi_14 < 30", "comparisons do not chain"),
        ("a crosses_above b crosses_above c", "comparisons do not chain"),
        ("crosses_above sma_slow", "'crosses_above' needs something before it at column 1"),
        ("prev:close > 1", "unexpected character ':' at column 5"),
        ("rsi_14", "is a number, not a condition"),
        ("rsi_14 < 30 and 2", "'and' needs conditions on both sides"),
        ("not close", "'not' needs a condition after it"),
        ("(close > 1) > 0", "'>' compares numbers, not conditions"),
        ("", "empty condition"),
        ("close > " + "1" * 600, "max 500"),
    ],
)
def test_bad_conditions_are_rejected_with_what_and_where(text: str, message: str) -> None:
    with pytest.raises(RuleSyntaxError) as info:
        parse_condition(text)
    assert message in str(info.value)


def test_rules_are_validated_when_the_strategy_is_stored(base: dict[str, Any]) -> None:
    with pytest.raises(InputError) as info:
        strategy(base, policy="rules_only", rules=[{"when": "rsi_41 < 30 and sma_fst > close", "action": "BUY"}])
    text = str(info.value)
    assert "decision.rules[0]" in text and "unknown name(s) 'rsi_41', 'sma_fst'" in text
    assert "known are atr_14, close, rsi_14, sma_fast, sma_slow" in text
    with pytest.raises(InputError) as info:
        strategy(base, rules=[{"when": "__import__('os').system('x')", "action": "BUY"}])
    assert "decision.rules[0].when" in str(info.value) and "unexpected character" in str(info.value)
    with pytest.raises(InputError) as info:
        strategy(base, policy="sometimes", rules=[{"when": "close > 1", "action": "HOLD", "weight": 0}])
    problems = {p.location for p in info.value.problems}
    assert {"decision.policy", "decision.rules[0].action", "decision.rules[0].weight"} <= problems
    ok = strategy(base, policy="weighted", threshold=0.4, rules=TREND_BUY)
    assert ok.decision.rules[0].names == {"sma_fast", "sma_slow", "close"}
    assert parse_strategy(ok.model_dump(mode="json")) == ok  # stored as JSON, read back the same


def test_the_shipped_rules_example_is_valid() -> None:
    definition = load_strategy_file(ROOT / "examples" / "rules" / "spy-rules-and-llm.yaml")
    assert definition.decision.policy == "both_agree" and len(definition.decision.rules) >= 2


# -- the policies -----------------------------------------------------------------------------------------------------


def test_both_agree_rules_buy_llm_hold_gives_hold_with_both_votes(
    base: dict[str, Any], bars: pd.DataFrame, server: LoopbackLLMServer
) -> None:
    server.enqueue(answer(LLM_HOLD))
    outcome, signal = decide(strategy(base, policy="both_agree", rules=TREND_BUY), bars, server)
    assert len(server.requests) == 1 and outcome.analyst is AnalystKind.LLM
    assert signal.action is SignalAction.HOLD
    assert [(v.component, v.action) for v in outcome.votes] == [("rules", "BUY"), ("llm", "HOLD")]
    assert outcome.votes_text == "rules BUY (confidence 0.80); llm HOLD (confidence 0.60)"  # artifacts show this
    assert "both_agree: rules BUY (confidence 0.80), llm HOLD (confidence 0.60): they disagree -> HOLD" in signal.reason
    assert "uptrend -> BUY (weight 2)" in signal.reason and "Extended after a long run" in signal.reason
    assert signal.confidence == pytest.approx(0.6)  # the lower of the two


def test_both_agree_buys_when_both_say_buy(base: dict[str, Any], bars: pd.DataFrame, server: LoopbackLLMServer) -> None:
    server.enqueue(answer(LLM_BUY))
    _, signal = decide(strategy(base, policy="both_agree", rules=TREND_BUY), bars, server)
    assert signal.action is SignalAction.BUY and "agree -> BUY" in signal.reason
    # the LLM's levels; the lower confidence of the two (rules 0.5 + 0.45 * 2/3 = 0.80, LLM 0.72)
    assert (signal.stop, signal.target, signal.confidence) == (Decimal("263.0"), Decimal("273.5"), 0.72)


def test_weighted_vote_sums_rules_and_llm_against_the_threshold(
    base: dict[str, Any], bars: pd.DataFrame, server: LoopbackLLMServer
) -> None:
    # rules: uptrend +2 of 3 (the RSI rule applies and does not hold); LLM SELL 0.8 x weight 1 = -0.8
    # score (2 - 0.8) / (3 + 1) = +0.30
    server.enqueue(answer(LLM_SELL), answer(LLM_SELL))
    _, buy = decide(strategy(base, policy="weighted", threshold=0.25, rules=TREND_BUY), bars, server)
    assert buy.action is SignalAction.BUY and "score +0.30 (threshold 0.25) -> BUY" in buy.reason
    assert buy.confidence == pytest.approx(0.64)  # 0.5 + 0.45 * 0.30 = 0.635
    assert buy.stop is not None and buy.stop < buy.entry < buy.target  # type: ignore[operator]  # rules' ATR levels
    assert "Topping pattern" in buy.reason and "uptrend -> BUY" in buy.reason
    _, hold = decide(strategy(base, policy="weighted", threshold=0.5, rules=TREND_BUY), bars, server)
    assert hold.action is SignalAction.HOLD and "score +0.30 (threshold 0.5) -> HOLD" in hold.reason


def test_llm_only_ignores_the_rules(base: dict[str, Any], bars: pd.DataFrame, server: LoopbackLLMServer) -> None:
    server.enqueue(answer(LLM_HOLD))
    outcome, signal = decide(strategy(base, policy="llm_only", rules=TREND_BUY), bars, server)
    assert signal.action is SignalAction.HOLD and outcome.votes == () and outcome.policy is None
    assert signal.reason == f"analyst says HOLD: {LLM_HOLD['reasoning']}"


def test_rules_only_asks_no_llm(base: dict[str, Any], bars: pd.DataFrame, server: LoopbackLLMServer) -> None:
    outcome, signal = decide(strategy(base, policy="rules_only", rules=TREND_BUY), bars, server)
    assert server.requests == [] and outcome.analyst is AnalystKind.OFFLINE
    assert signal.action is SignalAction.BUY and "[policy rules_only]" in signal.reason
    assert "uptrend -> BUY (weight 2)" in signal.reason and signal.confidence == pytest.approx(0.8)


def test_without_an_llm_a_combined_policy_falls_back_to_the_rules_labelled_offline(
    base: dict[str, Any], bars: pd.DataFrame
) -> None:
    outcome, signal = decide(strategy(base, policy="both_agree", rules=TREND_BUY), bars, None)
    assert outcome.analyst is AnalystKind.OFFLINE and signal.analyst is AnalystKind.OFFLINE
    assert signal.action is SignalAction.BUY and signal.reason.startswith(f"BUY: {OFFLINE_LABEL}")
    assert "policy both_agree: no LLM configured, the rules decide" in signal.reason


def test_a_failed_llm_call_abstains_under_a_combined_policy(
    base: dict[str, Any], bars: pd.DataFrame, server: LoopbackLLMServer
) -> None:
    server.enqueue(error(400, "bad request"))
    _, signal = decide(strategy(base, policy="both_agree", rules=TREND_BUY), bars, server)
    assert signal.action is SignalAction.ABSTAIN and signal.reason.startswith("analysis failed: http_error")


def test_the_replay_decides_with_the_same_rules(base: dict[str, Any]) -> None:
    rules = [
        {"when": "sma_fast > sma_slow", "action": "BUY", "group": "cross"},
        {"when": "sma_fast < sma_slow", "action": "SELL", "group": "cross"},
    ]
    definition = strategy(base, policy="rules_only", rules=rules)
    frame = load_bars(SPY).frame
    # analyst "llm" without an API key: rules_only never asks the LLM, so the replay runs on the rules alone
    result = replay(definition, frame, start="2016-01-01", end="2016-06-30", settings=Settings(), analyst="llm",
                    store=InMemoryLlmCallStore(), adjust=False)  # fmt: skip
    assert result.params["analyst"] == "offline" and result.llm_requests == 0
    ind = compute_indicators(frame.loc[frame["timestamp"] <= pd.Timestamp("2016-07-01", tz="UTC")],
                             definition.indicators).frame.set_index("timestamp")  # fmt: skip
    actions = set()
    for d in result.decisions:
        row = ind.loc[pd.Timestamp(d.bar_time)]
        voted = "BUY" if row["sma_fast"] > row["sma_slow"] else "SELL"
        assert "[policy rules_only]" in d.reason and f"-> {voted}" in d.reason
        if d.action in (SignalAction.BUY, SignalAction.SELL):
            assert d.action.value == voted
        actions.add(d.action)
    assert {SignalAction.BUY, SignalAction.SELL} <= actions  # the window has crosses both ways


def test_a_crossing_rule_decides_the_same_in_the_replay_as_in_a_live_snapshot(base: dict[str, Any]) -> None:
    rules = [
        {"when": "sma_fast crosses_above sma_slow", "action": "BUY", "group": "cross"},
        {"when": "sma_fast crosses_below sma_slow", "action": "SELL", "group": "cross"},
    ]
    definition = strategy(base, policy="rules_only", rules=rules)
    frame = load_bars(SPY).frame
    result = replay(definition, frame, start="2015-01-01", end="2016-12-31", settings=Settings(),
                    store=InMemoryLlmCallStore(), adjust=False)  # fmt: skip
    checked = validate_bars(frame, bar_size=definition.bar_size).frame  # two flagged rows in March 2015
    ind = compute_indicators(checked, definition.indicators).frame
    fast, slow = ind["sma_fast"].to_numpy(), ind["sma_slow"].to_numpy()
    usable = [i for i, bad in enumerate(ind["flagged"]) if not bad]
    previous = {after: before for before, after in itertools.pairwise(usable)}
    row_of = {pd.Timestamp(t): i for i, t in enumerate(ind["timestamp"])}
    crossings = {}
    for d in result.decisions:
        i = row_of[pd.Timestamp(d.bar_time)]
        if ind["flagged"].iat[i]:
            assert d.action is SignalAction.ABSTAIN
            continue
        p = previous[i]
        up = fast[p] <= slow[p] and fast[i] > slow[i]
        down = fast[p] >= slow[p] and fast[i] < slow[i]
        voted = "BUY" if up else "SELL" if down else "HOLD"
        assert f"score {'+1.00' if up else '-1.00' if down else '+0.00'} -> {voted}" in d.reason, d.reason
        if voted != "HOLD":
            crossings[d.bar_time] = voted
            # the live path on the same bars (snapshot_from over the bars up to the decision) says the same
            live = decide(definition, checked.iloc[: i + 1].reset_index(drop=True), None)[0]
            assert live.analysis is not None and live.analysis.action == voted
    assert set(crossings.values()) == {"BUY", "SELL"}  # two years of SPY cross both ways
