from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest

from models.enums import BarSize
from models.strategy import IndicatorSpec
from services.bars.loader import load_bars
from services.indicators import IndicatorColumn, compute_indicators
from services.llm.context import MarketSnapshot, snapshot_from
from services.llm.offline import OFFLINE_LABEL, offline_analysis

SPY = Path(__file__).resolve().parents[1] / "data" / "samples" / "yahoofinance-SPY-20080101-20180101.csv"
SPECS = [
    IndicatorSpec(function="SMA", params={"timeperiod": 20}, alias="sma_fast"),
    IndicatorSpec(function="SMA", params={"timeperiod": 50}, alias="sma_slow"),
    IndicatorSpec(function="RSI", params={"timeperiod": 14}),
    IndicatorSpec(function="BBANDS", params={"timeperiod": 20}, alias="bb"),
    IndicatorSpec(function="MACD"),
    IndicatorSpec(function="ATR", params={"timeperiod": 14}),
]


def col(name: str, function: str, output: str = "real", group: str = "Overlap Studies") -> IndicatorColumn:
    return IndicatorColumn(name, function, output, name.split("_" + output)[0] if output != "real" else name, group)


COLUMNS = (
    col("sma_fast", "SMA"),
    col("sma_slow", "SMA"),
    col("rsi_14", "RSI", group="Momentum Indicators"),
    col("bb_upperband", "BBANDS", "upperband"),
    col("bb_lowerband", "BBANDS", "lowerband"),
    col("macd_macdhist", "MACD", "macdhist", "Momentum Indicators"),
    col("atr_14", "ATR", group="Volatility Indicators"),
)


def snap(close: str, **latest: float | None) -> MarketSnapshot:
    return MarketSnapshot(
        symbol="SPY",
        bar_size=BarSize.DAY_1,
        last_bar_time=pd.Timestamp("2017-12-29", tz="UTC"),
        last_close=Decimal(close),
        latest={c.name: latest.get(c.name) for c in COLUMNS},
        columns=COLUMNS,
        flagged_latest=False,
    )


def test_uptrend_with_momentum_buys_with_atr_levels() -> None:
    s = snap("105", sma_fast=103, sma_slow=100, rsi_14=60, bb_upperband=108, bb_lowerband=98, macd_macdhist=0.4,
             atr_14=2.0)  # fmt: skip
    result = offline_analysis(s, SPECS)
    assert result.action == "BUY"
    # votes: trend +2, rsi 0, bb 0, macd +1 -> score 3/5 = 0.6 -> confidence 0.5 + 0.45 * 0.6 = 0.77
    assert result.confidence == pytest.approx(0.77)
    assert (result.entry, result.stop, result.target) == (Decimal("105"), Decimal("101.0000"), Decimal("111.0000"))
    assert result.reasoning.startswith(OFFLINE_LABEL)


def test_overbought_downtrend_sells_and_mixed_holds() -> None:
    down = offline_analysis(snap("95", sma_fast=97, sma_slow=100, rsi_14=75, macd_macdhist=-0.2, atr_14=1.0), SPECS)
    assert down.action == "SELL" and down.stop == Decimal("97.0000") and down.target == Decimal("92.0000")
    mixed = offline_analysis(snap("101", sma_fast=99, sma_slow=100, rsi_14=25, macd_macdhist=-0.1), SPECS)
    # trend 0 (fast below slow, close above), rsi +1, macd -1 -> score 0 -> HOLD, no levels
    assert mixed.action == "HOLD" and mixed.stop is None and mixed.confidence == pytest.approx(0.5)


def test_no_indicator_values_is_a_labelled_hold_with_zero_confidence() -> None:
    result = offline_analysis(snap("100"), SPECS)
    assert result.action == "HOLD" and result.confidence == 0.0
    assert "no usable indicator values" in result.reasoning and OFFLINE_LABEL in result.reasoning


def test_real_spy_bars_give_the_same_answer_every_time() -> None:
    frame = load_bars(SPY).frame.tail(250).reset_index(drop=True)
    snapshot = snapshot_from(compute_indicators(frame, SPECS), symbol="SPY", bar_size=BarSize.DAY_1)
    first = offline_analysis(snapshot, SPECS)
    assert all(offline_analysis(snapshot, SPECS) == first for _ in range(5))
    assert snapshot.last_close == Decimal("266.86")
    # SPY closed 2017 in a steady uptrend: SMA20 > SMA50 and the close above both.
    # votes: uptrend +2, RSI 61 neutral, inside the bands, MACD histogram < 0 -> -1: score 1/5 < 1/3 -> HOLD
    assert "uptrend" in first.reasoning and "score +0.20 -> HOLD" in first.reasoning
    assert first.action == "HOLD" and first.confidence == pytest.approx(0.41)
    # A different market gives a different answer: the mirrored series is in a downtrend.
    mirrored = frame.copy()
    for c in ("open", "high", "low", "close"):
        mirrored[c] = 600.0 - frame[c]
    mirrored["high"], mirrored["low"] = 600.0 - frame["low"], 600.0 - frame["high"]
    other = snapshot_from(compute_indicators(mirrored, SPECS), symbol="SPY", bar_size=BarSize.DAY_1)
    assert "downtrend" in offline_analysis(other, SPECS).reasoning
