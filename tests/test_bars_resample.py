"""resample_bars against hand-computed aggregates and against the real files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.enums import BarSize
from services.bars import load_bars, resample_bars
from services.errors import InputError

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples"


def sample(name: str) -> Path:
    path = SAMPLES / name
    assert path.is_file(), f"sample file missing: {path}"
    return path


def utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def bars(rows: list[tuple]) -> pd.DataFrame:
    columns = ["timestamp", "open", "high", "low", "close", "volume", "wap", "trade_count"]
    frame = pd.DataFrame(rows, columns=columns[: len(rows[0])])
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True).astype("datetime64[ns, UTC]")
    return frame.astype({c: "float64" for c in frame.columns if c != "timestamp"})


def test_one_minute_to_five_minutes_by_hand():
    frame = bars(
        [
            ("2024-01-02 14:30", 10.0, 11.0, 9.5, 10.5, 100, 10.2, 3),
            ("2024-01-02 14:31", 10.5, 12.0, 10.4, 11.8, 300, 11.5, 5),
            ("2024-01-02 14:34", 11.8, 11.9, 9.0, 9.2, 0, 11.0, 0),  # gap at :32-:33
            ("2024-01-02 14:35", 9.2, 9.4, 9.1, 9.3, 50, 9.25, 1),
            ("2024-01-02 14:39", 9.3, 9.6, 9.3, 9.5, 150, 9.45, 2),
            ("2024-01-02 14:45", 9.5, 9.5, 9.5, 9.5, 0, 9.5, 0),  # bar with no volume at all
        ]
    )
    out = resample_bars(frame, BarSize.MIN_5)
    assert list(out["timestamp"]) == [utc("2024-01-02 14:30"), utc("2024-01-02 14:35"), utc("2024-01-02 14:45")]
    first = out.iloc[0]
    assert (first["open"], first["high"], first["low"], first["close"]) == (10.0, 12.0, 9.0, 9.2)
    assert first["volume"] == 400
    assert first["wap"] == pytest.approx((10.2 * 100 + 11.5 * 300) / 400)
    assert first["trade_count"] == 8
    second = out.iloc[1]
    assert (second["open"], second["high"], second["low"], second["close"], second["volume"]) == (
        9.2,
        9.6,
        9.1,
        9.5,
        200,
    )
    assert second["wap"] == pytest.approx((9.25 * 50 + 9.45 * 150) / 200)
    assert out.iloc[2]["wap"] == 9.5  # no volume: plain mean of the WAPs
    assert str(out["timestamp"].dtype) == "datetime64[ns, UTC]"


def test_daily_groups_by_new_york_session_date():
    frame = bars(
        [
            ("2024-01-02 13:00", 1.0, 2.0, 0.5, 1.5, 10),  # 08:00 ET pre-market, Jan 2
            ("2024-01-02 20:59", 1.5, 3.0, 1.4, 2.5, 20),  # 15:59 ET
            ("2024-01-03 00:30", 2.5, 2.6, 2.4, 2.45, 5),  # 19:30 ET on Jan 2 (after hours)
            ("2024-01-03 14:30", 2.4, 2.8, 2.2, 2.7, 7),  # Jan 3
        ]
    )
    out = resample_bars(frame, BarSize.DAY_1)
    assert list(out["timestamp"]) == [utc("2024-01-02"), utc("2024-01-03")]
    assert tuple(out.iloc[0][["open", "high", "low", "close", "volume"]]) == (1.0, 3.0, 0.5, 2.45, 35)
    assert tuple(out.iloc[1][["open", "high", "low", "close", "volume"]]) == (2.4, 2.8, 2.2, 2.7, 7)


def test_four_hour_bars_align_to_new_york_clock():
    frame = bars(
        [
            ("2024-07-01 12:00", 1, 1, 1, 1, 1),  # 08:00 EDT -> 08:00 ET bar = 12:00Z
            ("2024-07-01 15:59", 2, 2, 2, 2, 1),  # 11:59 EDT -> same bar
            ("2024-07-01 16:00", 3, 3, 3, 3, 1),  # 12:00 EDT -> next bar
        ]
    )
    out = resample_bars(frame, BarSize.HOUR_4)
    assert list(out["timestamp"]) == [utc("2024-07-01 12:00"), utc("2024-07-01 16:00")]
    assert list(out["volume"]) == [2, 1]


def test_unsorted_input_is_sorted_first():
    frame = bars([("2024-01-02 14:31", 2, 2, 2, 2, 1), ("2024-01-02 14:30", 1, 1, 1, 1, 1)])
    out = resample_bars(frame, BarSize.MIN_5)
    assert (out.iloc[0]["open"], out.iloc[0]["close"]) == (1, 2)


def test_week_and_month_labels_are_first_session():
    spy = load_bars(sample("yahoofinance-SPY-20080101-20180101.csv")).frame
    weeks = resample_bars(spy, BarSize.WEEK_1)
    # 2007-12-31 (Mon) .. 2008-01-04 (Fri, 2008-01-01 holiday) is one week.
    first_week = spy.iloc[:4]
    assert weeks.iloc[0]["timestamp"] == utc("2007-12-31")
    assert weeks.iloc[0]["high"] == first_week["high"].max()
    assert weeks.iloc[0]["close"] == first_week["close"].iloc[-1]
    assert weeks.iloc[1]["timestamp"] == utc("2008-01-07")
    months = resample_bars(spy, BarSize.MONTH_1)
    assert list(months["timestamp"][:3]) == [utc("2007-12-31"), utc("2008-01-02"), utc("2008-02-01")]
    assert len(months) == 121
    assert months["volume"].sum() == spy["volume"].sum()
    assert months.iloc[-1]["adj_close"] == spy.iloc[-1]["adj_close"]


def test_ninjatrader_five_minutes_matches_independent_pandas_resample():
    nt = load_bars(sample("nt-spy-minute-2011.csv")).frame
    expected = (
        nt.set_index("timestamp")
        .resample("5min")
        .agg({"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"})
        .dropna(subset=["open"])
        .reset_index()
    )
    pd.testing.assert_frame_equal(resample_bars(nt, BarSize.MIN_5), expected, check_dtype=False)


def test_ib_regular_session_daily_bar_matches_yahoo():
    ib = load_bars(sample("ib-spy-5min-20120627.csv")).frame
    regular = ib[(ib["timestamp"] >= utc("2012-06-27 13:30")) & (ib["timestamp"] <= utc("2012-06-27 20:00"))]
    day = resample_bars(regular, BarSize.DAY_1).iloc[0]
    spy = load_bars(sample("yahoofinance-SPY-20080101-20180101.csv")).frame.set_index("timestamp")
    yahoo = spy.loc[utc("2012-06-27")]
    assert day["timestamp"] == utc("2012-06-27")
    assert [day[c] for c in ("open", "high", "low", "close")] == pytest.approx(
        [yahoo[c] for c in ("open", "high", "low", "close")], abs=0.006
    )


def test_finer_or_misaligned_target_is_refused():
    spy = load_bars(sample("yahoofinance-SPY-20080101-20180101.csv")).frame
    with pytest.raises(InputError, match="finer"):
        resample_bars(spy, BarSize.HOUR_1)
    two_minute = bars([(f"2024-01-02 14:{m}", 1, 1, 1, 1, 1) for m in range(30, 40, 2)])
    with pytest.raises(InputError, match="multiple"):
        resample_bars(two_minute, BarSize.MIN_5)
    ib = load_bars(sample("ib-spy-5min-20120627.csv")).frame
    with pytest.raises(InputError, match="lacks"):
        resample_bars(ib.drop(columns=["volume"]), BarSize.MIN_10)


def test_same_size_is_identity_and_empty_stays_empty():
    ib = load_bars(sample("ib-spy-5min-20120627.csv")).frame
    same = resample_bars(ib, BarSize.MIN_5)
    pd.testing.assert_frame_equal(same, ib)
    assert resample_bars(ib.iloc[:0], BarSize.HOUR_1).empty
    assert np.all(resample_bars(ib, BarSize.HOUR_1)["volume"].sum() == ib["volume"].sum())
