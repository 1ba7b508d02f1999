from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import talib

from models.strategy import IndicatorSpec
from services.bars.loader import load_bars
from services.errors import InputError
from services.indicators import compute_indicators

SPY = Path(__file__).resolve().parents[1] / "data" / "samples" / "yahoofinance-SPY-20080101-20180101.csv"


@pytest.fixture(scope="module")
def spy() -> pd.DataFrame:
    return load_bars(SPY).frame.tail(250).reset_index(drop=True)


def spec(function: str, alias: str | None = None, **params: float) -> IndicatorSpec:
    return IndicatorSpec(function=function, params=params, alias=alias)


def test_single_output_columns_named_by_prefix_and_match_an_independent_sma(spy: pd.DataFrame) -> None:
    result = compute_indicators(spy, [spec("SMA", "sma_fast", timeperiod=20), spec("RSI", timeperiod=14)])
    assert result.column_names() == ["sma_fast", "rsi_14"]
    expected = spy["close"].rolling(20).mean().to_numpy()
    np.testing.assert_allclose(result.frame["sma_fast"].to_numpy()[19:], expected[19:], rtol=1e-10)
    assert result.frame["sma_fast"].iloc[:19].isna().all()
    assert result.latest["sma_fast"] == pytest.approx(expected[-1])
    assert 0 < result.latest["rsi_14"] < 100  # type: ignore[operator]
    assert result.latest_timestamp == spy["timestamp"].iloc[-1]


def test_multi_output_columns_and_multi_input_functions(spy: pd.DataFrame) -> None:
    result = compute_indicators(
        spy,
        [spec("BBANDS", "bb", timeperiod=20), spec("MACD"), spec("ATR", timeperiod=14), spec("STOCH"), spec("OBV")],
    )
    names = result.column_names()
    assert names[:3] == ["bb_upperband", "bb_middleband", "bb_lowerband"]
    assert {"macd_macd", "macd_macdsignal", "macd_macdhist", "atr_14", "stoch_slowk", "stoch_slowd", "obv"} <= set(
        names
    )
    high, low, close = (spy[c].to_numpy() for c in ("high", "low", "close"))
    np.testing.assert_allclose(result.frame["atr_14"].to_numpy(), talib.ATR(high, low, close, 14), equal_nan=True)
    up, mid, lowb = (result.latest[f"bb_{n}"] for n in ("upperband", "middleband", "lowerband"))
    assert up is not None and mid is not None and lowb is not None and lowb < mid < up
    groups = {c.name: c.is_overlay for c in result.columns}
    assert groups["bb_upperband"] and not groups["atr_14"] and not groups["macd_macd"]


def test_flagged_rows_are_left_out_of_the_computation(spy: pd.DataFrame) -> None:
    frame = spy.copy()
    frame["flagged"] = False
    frame.loc[200, "flagged"] = True
    frame.loc[200, "close"] = 10_000.0  # a bad print that must not leak into the average
    specs = [spec("SMA", timeperiod=10)]
    with_flag = compute_indicators(frame, specs).frame
    without_row = compute_indicators(spy.drop(index=200).reset_index(drop=True), specs).frame
    assert np.isnan(with_flag.loc[200, "sma_10"])
    np.testing.assert_allclose(
        with_flag["sma_10"].drop(index=200).to_numpy(), without_row["sma_10"].to_numpy(), equal_nan=True
    )


def test_latest_is_the_newest_non_flagged_bar(spy: pd.DataFrame) -> None:
    frame = spy.copy()
    frame["flagged"] = False
    frame.loc[len(frame) - 1, "flagged"] = True
    result = compute_indicators(frame, [spec("SMA", timeperiod=5)])
    assert result.latest_timestamp == frame["timestamp"].iloc[-2]
    assert result.latest["sma_5"] == pytest.approx(frame["close"].iloc[-6:-1].mean())


def test_warming_up_values_are_none_and_all_flagged_gives_no_latest(spy: pd.DataFrame) -> None:
    short = spy.head(10)
    assert compute_indicators(short, [spec("SMA", timeperiod=50)]).latest == {"sma_50": None}
    flagged = short.assign(flagged=True)
    result = compute_indicators(flagged, [spec("SMA", timeperiod=5)])
    assert result.latest == {"sma_5": None} and result.latest_timestamp is None


def test_missing_input_column_and_unsorted_bars_are_reported_together(spy: pd.DataFrame) -> None:
    bad = spy.drop(columns=["volume"]).iloc[::-1]
    with pytest.raises(InputError) as err:
        compute_indicators(bad, [spec("OBV"), spec("SMA", timeperiod=5)])
    text = str(err.value)
    assert "OBV needs column 'volume'" in text and "not sorted" in text


def test_input_frame_is_not_modified(spy: pd.DataFrame) -> None:
    # Speed (goal < 50 ms per call) is measured by benchmarks/bench_analysis.py, not asserted here.
    before = spy.copy()
    specs = [spec("SMA", "a", timeperiod=20), spec("SMA", "b", timeperiod=50), spec("RSI"), spec("MACD")]
    for _ in range(3):
        compute_indicators(spy, specs)
    pd.testing.assert_frame_equal(spy, before)
