"""services.bars.synthetic: the shipped generated series is the generator's output, and it is a sane daily series."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from services import calendar
from services.bars import load_bars, parse_bars, validate_bars
from services.bars.synthetic import (
    DIVIDENDS_FROM,
    MINUTES_PER_SESSION,
    synthetic_daily,
    synthetic_daily_csv,
    synthetic_minutes,
)

SHIPPED = Path(__file__).resolve().parents[1] / "data" / "samples" / "synthetic" / "SYNTH-1995-2014.csv"


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return load_bars(SHIPPED).frame


def test_shipped_file_is_the_generator_output_byte_for_byte() -> None:
    assert SHIPPED.read_bytes() == synthetic_daily_csv().encode("ascii")


def test_same_seed_same_series_other_seed_other_series() -> None:
    short = (date(2020, 1, 1), date(2020, 3, 31))
    assert synthetic_daily(*short, seed=7) == synthetic_daily(*short, seed=7)
    assert [b.close for b in synthetic_daily(*short, seed=7)] != [b.close for b in synthetic_daily(*short, seed=8)]


def test_one_bar_per_nyse_session(frame: pd.DataFrame) -> None:
    days = [ts.date() for ts in frame["timestamp"]]
    assert days == calendar.sessions_between(date(1995, 1, 1), date(2014, 12, 31))
    assert date(2001, 9, 11) not in days and date(2012, 10, 29) not in days  # closures are skipped


def test_ohlc_consistent_positive_and_validation_passes(frame: pd.DataFrame) -> None:
    o, h, lo, c = (frame[k].to_numpy() for k in ("open", "high", "low", "close"))
    assert (lo > 0).all()
    assert (h >= np.maximum(o, c)).all() and (lo <= np.minimum(o, c)).all()
    assert (h > lo).mean() > 0.99  # real ranges, not flat bars
    result = validate_bars(frame)
    assert result.passed, [str(i) for i in result.issues[:5]]


def test_volume_and_returns_look_like_a_stock(frame: pd.DataFrame) -> None:
    volume = frame["volume"].to_numpy()
    assert (volume > 0).all() and (volume % 100 == 0).all()  # lots of 100
    assert 1e7 < float(np.median(volume)) < 1e8
    returns = frame["close"].pct_change().dropna()
    assert 0.01 < float(returns.std()) < 0.05  # a volatile single stock, not an index and not noise
    # volume is higher on large moves than on quiet days
    big = returns.abs() > returns.abs().quantile(0.9)
    assert frame["volume"].iloc[1:][big.to_numpy()].mean() > 1.5 * frame["volume"].iloc[1:][~big.to_numpy()].mean()


def test_adj_close_steps_down_the_past_at_each_quarterly_ex_date(frame: pd.DataFrame) -> None:
    ratio = (frame["adj_close"] / frame["close"]).to_numpy()
    days = [ts.date() for ts in frame["timestamp"]]
    ex_dates = sorted({min(d for d in days if (d.year, (d.month - 1) // 3) == q) for q in _quarters(days)})
    assert ex_dates[0] == date(2009, 4, 1) and ex_dates[-1] == date(2014, 10, 1) and len(ex_dates) == 23
    assert ratio[-1] == pytest.approx(1.0)
    # before the first ex-date the ratio is 0.995 ** 23 (rounded to 6 decimals of adj_close), after the last one 1
    first = days.index(ex_dates[0])
    assert ratio[:first] == pytest.approx(0.995**23, abs=1e-5)
    assert ratio[days.index(ex_dates[-1]) :] == pytest.approx(1.0, abs=1e-6)


def _quarters(days: list[date]) -> set[tuple[int, int]]:
    return {(d.year, (d.month - 1) // 3) for d in days if d >= DIVIDENDS_FROM}


def test_csv_text_parses_to_the_same_bars() -> None:
    bars = synthetic_daily(date(2014, 12, 1), date(2014, 12, 31))
    parsed = parse_bars(synthetic_daily_csv(date(2014, 12, 1), date(2014, 12, 31))).frame
    assert len(parsed) == len(bars) == 22
    assert list(parsed["close"]) == [b.close for b in bars]
    assert list(parsed["volume"]) == [float(b.volume) for b in bars]


def test_minutes_cut_each_session_of_the_daily_series() -> None:
    start, end = date(2014, 3, 3), date(2014, 3, 14)  # daylight saving time starts on 2014-03-09 in New York
    days = synthetic_daily(start, end)
    frame = synthetic_minutes(start, end)
    assert len(frame) == len(days) * MINUTES_PER_SESSION
    assert validate_bars(frame).passed  # OHLC-consistent, positive, strictly increasing
    for i, day in enumerate(days):
        session = frame.iloc[i * MINUTES_PER_SESSION : (i + 1) * MINUTES_PER_SESSION]
        assert session["open"].iloc[0] == day.open and session["close"].iloc[-1] == day.close
        assert session["high"].max() <= day.high and session["low"].min() >= day.low
        first = session["timestamp"].iloc[0].tz_convert("America/New_York")
        assert (first.date(), first.hour, first.minute) == (day.day, 9, 30)
    assert frame.equals(synthetic_minutes(start, end))  # the same for the same arguments
