"""Replay metrics: hand-computed small cases, and empyrical as the independent published reference.

Reference: empyrical-reloaded (the maintained fork of Quantopian's empyrical, the statistics library behind
pyfolio; https://github.com/stefan-jansen/empyrical-reloaded), installed as a DEV dependency only. Its documented
formulas (``sharpe_ratio``, ``sortino_ratio``, ``max_drawdown``, ``annual_return``, ``cum_returns_final``) are
applied to a published series: SPY's daily adjusted closes of 2010-2017 (Yahoo Finance, the shipped
``data/samples/yahoofinance-SPY-20080101-20180101.csv``; its two OHLC-inconsistent rows do not touch the closes).
"""

from __future__ import annotations

import math
import statistics
from datetime import date
from decimal import Decimal
from pathlib import Path

import empyrical  # type: ignore[import-untyped]
import numpy as np
import pytest

from services import calendar
from services.bars.loader import load_bars
from services.replay.metrics import (
    annualized_return,
    compute_metrics,
    max_drawdown,
    returns_from_equity,
    sharpe_ratio,
    sortino_ratio,
)

SPY = Path(__file__).resolve().parents[1] / "data" / "samples" / "yahoofinance-SPY-20080101-20180101.csv"


def test_small_curve_by_hand() -> None:
    equity = [100.0, 110.0, 99.0, 121.0]
    r = returns_from_equity(equity)
    assert r.tolist() == pytest.approx([0.10, -0.10, 0.2222222222222222])
    m = compute_metrics(equity, trade_pnls=[Decimal("5"), Decimal("-2"), Decimal("0")], positions=[0, 1, 1, 0])
    assert m.total_return == pytest.approx(0.21)
    assert m.annualized_return == pytest.approx(1.21 ** (252 / 3) - 1)
    mean = (0.1 - 0.1 + 2 / 9) / 3
    assert m.sharpe == pytest.approx(mean / statistics.stdev([0.1, -0.1, 2 / 9]) * math.sqrt(252))
    assert m.sortino == pytest.approx(mean / math.sqrt(0.01 / 3) * math.sqrt(252))
    assert m.max_drawdown == pytest.approx(-0.1)  # 110 -> 99
    assert m.max_drawdown_duration == 1
    assert m.trades == 3 and m.win_rate == pytest.approx(1 / 3)  # a zero P&L is not a win
    assert m.exposure == 0.5


def test_drawdown_duration_counts_the_longest_spell_under_water() -> None:
    # peak 10, under water for 4 periods (9, 8, 9, 9.5), new high 11, then 3 periods down to the end
    mdd, duration = max_drawdown([10, 9, 8, 9, 9.5, 11, 10, 10.5, 7])
    assert mdd == pytest.approx(7 / 11 - 1)
    assert duration == 4


def test_undefined_ratios_are_none_not_nan() -> None:
    flat = compute_metrics([100.0, 100.0, 100.0])
    assert flat.sharpe is None and flat.sortino is None and flat.win_rate is None
    assert flat.total_return == 0 and flat.max_drawdown == 0 and flat.max_drawdown_duration == 0
    assert sortino_ratio(np.array([0.01, 0.02])) is None  # no downside
    assert annualized_return(np.empty(0)) is None
    assert compute_metrics([5.0]).periods == 0


def test_against_empyrical_on_published_spy_returns() -> None:
    frame = load_bars(SPY).frame
    closes = frame.loc[frame["timestamp"].dt.year >= 2010, "adj_close"].to_numpy(dtype=np.float64)
    r = returns_from_equity(closes)
    # one close per NYSE session of 2010-2017 in the file, one return fewer
    assert r.size == len(calendar.sessions_between(date(2010, 1, 1), date(2017, 12, 31))) - 1
    for annual_rf in (0.0, 0.03):
        rf_p = (1 + annual_rf) ** (1 / 252) - 1
        assert sharpe_ratio(r, annual_rf) == pytest.approx(empyrical.sharpe_ratio(r, risk_free=rf_p), rel=1e-12)
        assert sortino_ratio(r, annual_rf) == pytest.approx(empyrical.sortino_ratio(r, required_return=rf_p), rel=1e-12)
    m = compute_metrics(closes)
    assert m.max_drawdown == pytest.approx(empyrical.max_drawdown(r), rel=1e-12)
    assert m.annualized_return == pytest.approx(empyrical.annual_return(r), rel=1e-12)
    assert m.total_return == pytest.approx(empyrical.cum_returns_final(r), rel=1e-12)
