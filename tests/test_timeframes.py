"""Higher timeframes: the strategy document's checks, steps 2 and 3 over the memory broker, the prompt's section per
timeframe and the chart's pane per timeframe (figure only; Chromium renders it in tests/test_flow_timeframes_e2e.py)."""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from models.enums import BarSize, SecType
from models.strategy import MAX_TIMEFRAMES, StrategyDefinition
from services.bars.loader import load_bars
from services.bars.resample import resample_bars
from services.broker.memory import MemoryBroker
from services.broker.types import ContractInfo
from services.charts import TIMEFRAME_PANE_PX, add_timeframe_panes, build_figure
from services.errors import DataError, InputError
from services.indicators import TimeframeIndicators, compute_indicators
from services.llm.context import build_prompt_context
from services.llm.prompts import render_prompt, with_timeframe_sections
from services.runtime import Runtime, use_runtime
from services.settings import load_settings
from services.strategies import parse_strategy
from tasks.indicators import calculate_indicators
from tasks.market_data import fetch_market_data

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "strategies" / "spy-sma-cross.yaml"
TEMPLATE = (ROOT / "examples" / "prompts" / "daily-analyst.v1.j2").read_text()
SPY_DAILY = ROOT / "data" / "samples" / "yahoofinance-SPY-20080101-20180101.csv"


def _doc(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    doc.update(changes)
    return doc


def _problems(**changes: Any) -> list[str]:
    with pytest.raises(InputError) as caught:
        parse_strategy(_doc(**changes))
    return [f"{p.location}: {p.message}" for p in caught.value.problems]


def test_existing_strategies_have_no_timeframes() -> None:
    definition = parse_strategy(_doc())
    assert definition.timeframes == []


def test_timeframes_as_bar_sizes_or_mappings_with_default_or_own_lookback() -> None:
    definition = parse_strategy(
        _doc(
            bar_size="1 hour",
            lookback="30 D",
            timeframes=["1 day", {"bar_size": "1 week", "lookback": "5 Y", "indicators": [{"function": "RSI"}]}],
        )
    )
    daily, weekly = definition.timeframes
    assert (daily.bar_size, daily.lookback, daily.indicators) == (BarSize.DAY_1, "1 Y", None)
    assert definition.timeframe_indicators(daily) == definition.indicators
    assert (weekly.lookback, [s.function for s in definition.timeframe_indicators(weekly)]) == ("5 Y", ["RSI"])
    again = StrategyDefinition.model_validate(definition.model_dump(mode="json"))  # stored and read back
    assert again == definition


def test_bad_timeframes_are_listed_together() -> None:
    problems = " | ".join(
        _problems(bar_size="1 hour", lookback="30 D", timeframes=["30 mins", "1 hour", "1 day", "1 day", "1 week"])
    )
    assert f"at most {MAX_TIMEFRAMES}, got 5" in problems
    assert "each bar size at most once" in problems
    assert "timeframes[0] (30 mins): must be a higher timeframe than the main bars (1 hour)" in problems
    assert "timeframes[1] (1 hour): must be a higher timeframe" in problems
    short = " | ".join(_problems(timeframes=[{"bar_size": "1 week", "lookback": "1 Y"}]))
    assert "lookback '1 Y' gives ~52 bars; the indicators need ~150" in short
    too_long = " | ".join(
        _problems(bar_size="1 min", lookback="5 D", timeframes=[{"bar_size": "5 mins", "lookback": "1 Y"}])
    )
    assert "exceeds IB's limit" in too_long
    assert "bar_size" in " | ".join(_problems(timeframes=["2 days"]))


SPY = ContractInfo(756733, "SPY", SecType.STK, "SMART", "ARCA", "USD", min_tick=Decimal("0.01"))


@pytest.fixture(scope="module")
def daily() -> pd.DataFrame:
    return load_bars(SPY_DAILY).frame


def test_steps_2_and_3_fetch_validate_and_compute_each_timeframe(tmp_path: Path, daily: pd.DataFrame) -> None:
    definition = parse_strategy(_doc(timeframes=["1 week"]))
    weeks = resample_bars(daily, BarSize.WEEK_1)
    broken = weeks.index[-30]
    weeks.loc[broken, "high"] = weeks.loc[broken, "low"] - 1  # a native weekly series with one impossible bar
    memory = MemoryBroker([SPY], {"SPY": [daily, weeks]}, start=dt.datetime(2017, 12, 30, tzinfo=dt.UTC))
    requests: list[Any] = []
    real = memory.historical_bars

    async def counting(contract: ContractInfo, request: Any) -> pd.DataFrame:
        requests.append(request)
        return await real(contract, request)

    memory.historical_bars = counting  # type: ignore[method-assign]
    settings = load_settings({"TRADER_DATA_DIR": str(tmp_path)})
    runtime = Runtime(settings, broker_factory=lambda: memory)
    with use_runtime(runtime):
        data = fetch_market_data.fn(definition, SPY)
        result = calculate_indicators.fn(definition, data)
        # a timeframe with its own indicators gets those, not the strategy's
        own = parse_strategy(_doc(timeframes=[{"bar_size": "1 week", "indicators": [{"function": "RSI"}]}]))
        [own_tf] = calculate_indicators.fn(own, data).timeframes
    runtime.close()
    assert own_tf.result.column_names() == ["rsi"]
    assert [(r.bar_size, r.duration) for r in requests] == [(BarSize.DAY_1, "1 Y"), (BarSize.WEEK_1, "5 Y")]
    [weekly] = data.timeframes
    assert weekly.bar_size is BarSize.WEEK_1 and 255 <= len(weekly.frame) <= 262  # five years of weeks
    # validated like the main bars: the impossible bar is flagged (policy "flag") and listed
    assert not weekly.validation.passed and weekly.validation.rows_flagged == 1
    assert weekly.frame["flagged"].sum() == 1 and bool(weekly.frame["flagged"].iloc[-30])
    assert data.validation.passed  # the main bars are not affected
    [tf] = result.timeframes
    assert tf.result.column_names() == result.column_names()  # the strategy's indicators, on weekly bars
    assert pd.isna(tf.result.frame["sma_fast"].iloc[-30])  # the flagged bar stays out of the indicators
    good = weekly.frame[~weekly.frame["flagged"]]
    assert tf.result.latest["sma_fast"] == pytest.approx(good["close"].tail(20).mean())


def test_a_higher_timeframe_failing_validation_fails_step_2_under_the_fail_policy(
    tmp_path: Path, daily: pd.DataFrame
) -> None:
    definition = parse_strategy(_doc(timeframes=["1 week"]))
    weeks = resample_bars(daily, BarSize.WEEK_1)
    weeks.loc[weeks.index[-30], "high"] = weeks.loc[weeks.index[-30], "low"] - 1
    memory = MemoryBroker([SPY], {"SPY": [daily, weeks]}, start=dt.datetime(2017, 12, 30, tzinfo=dt.UTC))
    settings = load_settings({"TRADER_DATA_DIR": str(tmp_path), "TRADER_TRADING__BAD_ROW_POLICY": "fail"})
    runtime = Runtime(settings, broker_factory=lambda: memory)
    with use_runtime(runtime), pytest.raises(DataError) as caught:
        fetch_market_data.fn(definition, SPY)  # the main daily bars are clean; the weekly batch is not
    runtime.close()
    assert str(caught.value).startswith("SPY 1 week 5 Y (higher timeframe): ")


def _with_daily_context(frame: pd.DataFrame, definition: StrategyDefinition) -> Any:
    main = compute_indicators(frame.tail(120).reset_index(drop=True), definition.indicators)
    weekly = resample_bars(frame, BarSize.WEEK_1).tail(150).reset_index(drop=True)
    return replace(
        main, timeframes=(TimeframeIndicators(BarSize.WEEK_1, compute_indicators(weekly, definition.indicators)),)
    )


def test_the_prompt_gets_a_section_per_timeframe_and_is_unchanged_without(daily: pd.DataFrame) -> None:
    plain = parse_strategy(_doc())
    single = compute_indicators(daily.tail(250).reset_index(drop=True), plain.indicators)
    context = build_prompt_context(plain, single)
    assert context["timeframes"] == [] and with_timeframe_sections(TEMPLATE, context) == TEMPLATE

    definition = parse_strategy(_doc(timeframes=["1 week"]))
    both = _with_daily_context(daily, definition)
    context = build_prompt_context(definition, both)
    [week] = context["timeframes"]
    assert (
        week["bar_size"] == "1 week"
        and len(week["bars"]) == 5
        and set(week["indicators"]) == set(context["indicators"])
    )
    text = render_prompt(with_timeframe_sections(TEMPLATE, context), context).text
    assert text.startswith(render_prompt(TEMPLATE, context).text.rstrip("\n"))
    assert 'Higher timeframe 1 week (context; the chart\'s "1 week" pane)' in text
    assert f"- sma_fast: {week['indicators']['sma_fast']}" in text
    own = "{% for tf in timeframes %}[{{ tf.bar_size }}]{% endfor %}"
    assert with_timeframe_sections(own, context) == own  # a template that places the timeframes itself


def test_the_chart_gets_a_pane_per_timeframe_below_the_main_panes(daily: pd.DataFrame) -> None:
    definition = parse_strategy(_doc(timeframes=["1 week"]))
    both = _with_daily_context(daily, definition)
    fig, panes = build_figure(both.frame, both, title="SPY")
    panes, height = add_timeframe_panes(fig, panes, both.timeframes, main_label="1 day", height=600)
    assert panes == ["price", "volume", "rsi_14", "atr_14", "1 week"] and height == 600 + TIMEFRAME_PANE_PX
    layout = fig["layout"]
    domains = [layout[f"yaxis{s}"]["domain"] for s in ("", "2", "3", "4", "5")]
    assert all(0 <= lo < hi <= 1 for lo, hi in domains)
    assert all(upper[0] > lower[1] for upper, lower in itertools.pairwise(domains))
    titles = [a["text"] for a in layout["annotations"]]
    assert titles == ["<b>1 day (main)</b>", "<b>1 week (higher timeframe)</b>"]
    weekly = [t for t in fig["data"] if t.get("yaxis") == "y5"]
    assert [t["type"] for t in weekly] == ["candlestick", "scatter", "scatter"]  # candles, sma_fast, sma_slow
    assert len(weekly[0]["x"]) == len(both.timeframes[0].result.frame)
