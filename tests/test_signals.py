from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from models.enums import AnalystKind, BarSize, SignalAction
from models.strategy import StrategyDefinition
from services.llm.outcome import AnalysisFailure, AnalysisOutcome
from services.llm.prompts import render_prompt
from services.llm.schema import Analysis, FailureKind
from services.signals import data_age_bars, generate_signal
from services.strategies import load_strategy_file

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "strategies"
UTC = dt.UTC
# Friday 2017-12-29 session bar, seen at 21:10 UTC (16:10 New York) the same day.
BAR = dt.datetime(2017, 12, 29, tzinfo=UTC)
NOW = dt.datetime(2017, 12, 29, 21, 10, tzinfo=UTC)


@pytest.fixture(scope="module")
def spy_def() -> StrategyDefinition:
    return load_strategy_file(EXAMPLES / "spy-sma-cross.yaml")  # no stop/take-profit pct, min conf 0.55, rr 1.5


@pytest.fixture(scope="module")
def aapl_def() -> StrategyDefinition:
    return load_strategy_file(EXAMPLES / "aapl-rsi-reversion.yaml")  # stop 3 %, target 6 %, min conf 0.6, rr 1.2


def outcome(analysis: Analysis | None = None, failure: AnalysisFailure | None = None) -> AnalysisOutcome:
    return AnalysisOutcome(
        analyst=AnalystKind.LLM,
        model="m",
        prompt=render_prompt("p", {}),
        reference_price=Decimal("100"),
        analysis=analysis,
        failure=failure,
    )


def analysis(action: str = "BUY", confidence: float = 0.8, **kw: Any) -> Analysis:
    base: dict[str, Any] = {"entry": Decimal(100), "stop": Decimal(95), "target": Decimal(110), "horizon_bars": 5}
    base.update(kw, action=action, confidence=confidence, reasoning="because")
    return Analysis.model_validate(base)


def signal(out: AnalysisOutcome, definition: StrategyDefinition, **kw: Any) -> Any:
    args: dict[str, Any] = {"last_bar_time": BAR, "now": NOW, "flagged_latest": False}
    args.update(kw)
    return generate_signal(out, definition, **args)


def test_buy_passes_with_decimal_risk_reward(spy_def: StrategyDefinition) -> None:
    sig = signal(outcome(analysis()), spy_def)
    assert sig.action is SignalAction.BUY
    assert sig.risk_reward == Decimal("2.00") and isinstance(sig.risk_reward, Decimal)
    assert (sig.entry, sig.stop, sig.target) == (Decimal(100), Decimal(95), Decimal(110))
    assert sig.analyst is AnalystKind.LLM and sig.bar_time == BAR


def test_sell_mirror_levels(spy_def: StrategyDefinition) -> None:
    sig = signal(outcome(analysis("SELL", stop=Decimal(104), target=Decimal(90))), spy_def)
    assert sig.action is SignalAction.SELL and sig.risk_reward == Decimal("2.50")


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        (FailureKind.INVALID_JSON, "Expecting value"),
        (FailureKind.OFF_SCHEMA, "confidence: too big"),
        (FailureKind.REFUSAL, "model refused"),
        (FailureKind.TIMEOUT, "timed out after 3 attempts"),
        (FailureKind.HTTP_ERROR, "HTTP 400"),
        (FailureKind.BUDGET, "budget exhausted"),
    ],
)
def test_every_analysis_failure_abstains_with_its_reason(
    spy_def: StrategyDefinition, kind: FailureKind, reason: str
) -> None:
    sig = signal(outcome(failure=AnalysisFailure(kind, reason)), spy_def)
    assert sig.action is SignalAction.ABSTAIN
    assert kind.value in sig.reason and reason in sig.reason


def test_flagged_newest_bar_abstains_even_with_a_good_analysis(spy_def: StrategyDefinition) -> None:
    sig = signal(outcome(analysis()), spy_def, flagged_latest=True)
    assert sig.action is SignalAction.ABSTAIN and "flagged" in sig.reason


def test_daily_age_counts_weekday_sessions() -> None:
    friday = dt.datetime(2017, 12, 29, tzinfo=UTC)
    assert data_age_bars(friday, NOW, BarSize.DAY_1) == 0
    assert data_age_bars(friday, dt.datetime(2018, 1, 1, 21, tzinfo=UTC), BarSize.DAY_1) == 1  # Monday
    assert data_age_bars(friday, dt.datetime(2018, 1, 5, 21, tzinfo=UTC), BarSize.DAY_1) == 5  # next Friday
    five_min = dt.datetime(2017, 12, 29, 15, 0, tzinfo=UTC)
    assert data_age_bars(five_min, dt.datetime(2017, 12, 29, 15, 14, tzinfo=UTC), BarSize.MIN_5) == 2


def test_stale_data_abstains_but_a_weekend_does_not(spy_def: StrategyDefinition) -> None:
    monday = dt.datetime(2018, 1, 1, 21, 10, tzinfo=UTC)
    assert signal(outcome(analysis()), spy_def, now=monday).action is SignalAction.BUY
    thursday = dt.datetime(2018, 1, 4, 21, 10, tzinfo=UTC)  # Fri bar, Mon..Wed missing: 4 sessions > 3
    sig = signal(outcome(analysis()), spy_def, now=thursday)
    assert sig.action is SignalAction.ABSTAIN and "stale data" in sig.reason and "4 bars old" in sig.reason


def test_future_bar_and_naive_times(spy_def: StrategyDefinition) -> None:
    sig = signal(outcome(analysis()), spy_def, last_bar_time=NOW + dt.timedelta(days=2))
    assert sig.action is SignalAction.ABSTAIN and "future" in sig.reason
    with pytest.raises(ValueError, match="timezone-aware"):
        signal(outcome(analysis()), spy_def, now=dt.datetime(2017, 12, 29))


@pytest.mark.parametrize(
    ("action", "levels", "fragment"),
    [
        ("BUY", {"stop": Decimal(101)}, "stop 101 is not below entry 100"),
        ("BUY", {"target": Decimal(99)}, "target 99 is not above entry 100"),
        ("SELL", {"stop": Decimal(95), "target": Decimal(90)}, "stop 95 is not above entry 100"),
    ],
)
def test_levels_on_the_wrong_side_abstain(
    spy_def: StrategyDefinition, action: str, levels: dict[str, Decimal], fragment: str
) -> None:
    sig = signal(outcome(analysis(action, 0.8, **levels)), spy_def)
    assert sig.action is SignalAction.ABSTAIN and fragment in sig.reason


def test_low_confidence_becomes_hold_with_the_numbers(spy_def: StrategyDefinition) -> None:
    sig = signal(outcome(analysis(confidence=0.5)), spy_def)
    assert sig.action is SignalAction.HOLD
    assert sig.reason == "BUY not taken: confidence 0.50 < min 0.55"
    assert signal(outcome(analysis(confidence=0.55)), spy_def).action is SignalAction.BUY  # threshold is inclusive


def test_low_risk_reward_becomes_hold(spy_def: StrategyDefinition) -> None:
    sig = signal(outcome(analysis(target=Decimal(107))), spy_def)  # 7 / 5 = 1.4 < 1.5
    assert sig.action is SignalAction.HOLD and sig.reason == "BUY not taken: risk/reward 1.40 < min 1.5"


def test_missing_levels_are_filled_from_risk_percentages(aapl_def: StrategyDefinition) -> None:
    sig = signal(outcome(analysis(entry=None, stop=None, target=None)), aapl_def)
    assert sig.action is SignalAction.BUY
    assert (sig.entry, sig.stop, sig.target) == (Decimal(100), Decimal("97.0000"), Decimal("106.0000"))
    assert sig.risk_reward == Decimal("2.00")
    short = signal(outcome(analysis("SELL", entry=None, stop=None, target=None)), aapl_def)
    assert (short.stop, short.target) == (Decimal("103.0000"), Decimal("94.0000"))


def test_missing_levels_without_percentages_abstain(spy_def: StrategyDefinition) -> None:
    sig = signal(outcome(analysis(stop=None)), spy_def)
    assert sig.action is SignalAction.ABSTAIN and "without stop" in sig.reason


def test_analyst_hold_is_hold_with_its_reasoning(spy_def: StrategyDefinition) -> None:
    sig = signal(outcome(analysis("HOLD", confidence=0.9, stop=None, target=None)), spy_def)
    assert sig.action is SignalAction.HOLD and sig.reason == "analyst says HOLD: because"


def test_entry_far_from_the_last_close_abstains(spy_def: StrategyDefinition) -> None:
    sig = signal(outcome(analysis(entry=Decimal(150), stop=Decimal(140), target=Decimal(170))), spy_def)
    assert sig.action is SignalAction.ABSTAIN and "50.0 % away from the last close 100" in sig.reason
    near = signal(outcome(analysis(entry=Decimal(109), stop=Decimal(104), target=Decimal(120))), spy_def)
    assert near.action is SignalAction.BUY
