"""Why the replay and backtrader closed different numbers of trades on "the same" SMA(20)/SMA(50) rules.

The benchmark (``benchmarks/bench_replay.py``) runs ``examples/replay/orcl-sma-cross.yaml`` through the replay
and a backtrader strategy (``benchmarks/backtrader_sma.py``). Written the natural backtrader way (its defaults:
``BACKTRADER``) it closed 97 trades on the shipped synthetic 20 years against the replay's 100 (96 vs 93 on the
ORCL file before). Each test below states one convention by which they differed, on a few constructed bars where
the two readings give different trades: the replay's exact trades, backtrader's with that one convention left at
its default (every other one aligned), and backtrader's with it aligned (then equal to the replay's). The replay
is the reference (``tests/test_parity.py``: it trades like paper trading against the simulator).

Shared without any setting (no test needed, nothing differs): a decision on bar i's close fills a market order at
bar i + 1's open (backtrader's default, no ``cheat_on_open`` / ``set_coc``); a STP sells at ``min(open, stop)``
and a LMT at ``max(open, target)`` (backtrader's ``_try_exec_stop`` / ``_try_exec_limit``); SMAs start at bar 20 /
50 (TA-Lib's running sum and backtrader's ``fsum`` agree to ~1e-13, no comparison flips on the series); no
slippage; long only, one position.

The last test runs both engines on identical conventions over 1995-2000 of the synthetic series and asserts the
identical closed-trade list.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from benchmarks.backtrader_sma import BACKTRADER, REPLAY, ClosedTrade, Conventions, replay_trades, run
from services.bars.loader import load_bars
from services.llm.store import InMemoryLlmCallStore
from services.replay.engine import adjust_prices, replay
from services.settings import load_settings
from services.strategies import load_strategy_file

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "samples" / "synthetic" / "SYNTH-1995-2014.csv"
STRATEGY = ROOT / "examples" / "replay" / "orcl-sma-cross.yaml"


@pytest.fixture(scope="module")
def synthetic() -> pd.DataFrame:
    return load_bars(DATA).frame


@pytest.fixture(scope="module")
def sessions(synthetic: pd.DataFrame) -> list[pd.Timestamp]:
    """Real session dates (the validation flags bars on non-sessions)."""
    return list(synthetic["timestamp"].iloc[:80])


def rising(
    sessions: list[pd.Timestamp], n: int, *, base: float = 100.0, step: float = 0.5, **bars: tuple[float, ...]
) -> pd.DataFrame:
    """``n`` daily bars closing ``base + step * i``, each opening at the previous close, high / low 0.1 %
    beyond; ``bars`` (``b25=(open, high, low, close)``) replaces whole bars."""
    rows = []
    prev = base
    for i in range(n):
        close = round(base + step * i, 6)
        o, c = prev, close
        h, lo = max(o, c) * 1.001, min(o, c) * 0.999
        if f"b{i}" in bars:
            o, h, lo, c = bars[f"b{i}"]
        rows.append({"timestamp": sessions[i], "open": o, "high": h, "low": lo, "close": c, "volume": 1e6})
        prev = c
    return pd.DataFrame(rows)


def replay_side(frame: pd.DataFrame) -> tuple[list[ClosedTrade], Any]:
    first, last = frame["timestamp"].iloc[0], frame["timestamp"].iloc[-1]
    result = replay(
        load_strategy_file(STRATEGY),
        frame,
        start=first.date(),
        end=last.date(),
        settings=load_settings({}),
        store=InMemoryLlmCallStore(),
        slippage_bps=Decimal(0),
    )
    return replay_trades(result), result


def d(sessions: list[pd.Timestamp], i: int) -> dt.date:
    date: dt.date = sessions[i].date()
    return date


def keys(trades: list[ClosedTrade]) -> list[tuple[Any, ...]]:
    return [t.key() for t in trades]


def check(frame: pd.DataFrame, default: Conventions) -> tuple[list[ClosedTrade], list[ClosedTrade]]:
    """Replay's trades and backtrader's under ``default``; asserts backtrader on REPLAY equals the replay."""
    ours, _ = replay_side(frame)
    aligned = run(frame, REPLAY)
    assert keys(aligned.trades) == keys(ours)
    for a, b in zip(aligned.trades, ours, strict=True):
        assert abs(a.pnl - b.pnl) < 1e-6
    return ours, run(frame, default).trades


def test_warmup_decides_on_sma20_alone_before_sma50_exists(sessions: list[pd.Timestamp]) -> None:
    """SMA warm-up. The replay decides from bar 20 on: while SMA50 is still NaN the offline analyst votes with
    the one moving average it has (close above SMA20: BUY). Backtrader calls ``next`` only once every indicator
    has its minimum period (bar 50; before, ``prenext``, which does nothing by default), so nothing trades
    before. Aligned: ``prenext`` calls ``next``."""
    frame = rising(sessions, 60, b30=(114.5, 114.6, 98.0, 114.6))
    ours, theirs = check(frame, REPLAY.but(warmup=False))
    # bought on bar 19's close (109.5 > SMA20), filled at bar 20's open; stopped on bar 30 at 109.5 * 0.9
    assert keys(ours) == [("long", 91, d(sessions, 20), 109.5, d(sessions, 30), 98.55, "stop")]
    assert ours[0].pnl == pytest.approx(-998.45)
    # backtrader first decides on bar 49 and is still long at the end: no closed trade
    assert theirs == []
    assert run(frame, REPLAY.but(warmup=False)).open_position == 80  # 10,000 / bar 49's close 124.5


def stop_then_target(sessions: list[pd.Timestamp]) -> pd.DataFrame:
    """Long from bar 20's open (109.5, stop 98.55, target 136.875); bar 25 reaches down to 98; bar 40 up to 150."""
    return rising(sessions, 60, b25=(112.0, 112.6, 98.0, 112.5), b40=(119.5, 150.0, 119.4, 120.0))


def test_stop_fills_on_the_bar_that_touches_it_at_the_stop(sessions: list[pd.Timestamp]) -> None:
    """Stop / target as orders working within the bar. The replay's stop (a STP) fills on the bar whose low
    reaches it, at ``min(open, stop)`` (``services.market.matching.bracket_exit``). The natural backtrader
    rule (compare the bar's low with the level in ``next`` and ``close()``) sells at the NEXT bar's open.
    Aligned: a STP and a LMT order (one-cancels-other) submitted with the entry."""
    ours, theirs = check(stop_then_target(sessions), REPLAY.but(exits="next_open"))
    assert keys(ours)[0] == ("long", 91, d(sessions, 20), 109.5, d(sessions, 25), 98.55, "stop")
    assert keys(theirs)[0] == ("long", 91, d(sessions, 20), 109.5, d(sessions, 26), 112.5, "stop")


def test_exit_and_re_entry_decision_on_the_same_bar(sessions: list[pd.Timestamp]) -> None:
    """Exit and re-entry. In the replay a stop that fills during bar j leaves the position flat at bar j's
    close, so that close's BUY re-enters at bar j + 1's open. With the exit sent as a market order from
    ``next`` the position is still open at bar j's close (no BUY while long), closes at bar j + 1's open, and
    the re-entry is decided on bar j + 1 and fills at bar j + 2's: one bar later, at another price and size."""
    ours, theirs = check(stop_then_target(sessions), REPLAY.but(exits="next_open"))
    # re-entry on bar 26 at 112.5 (88 shares, target 140.625): bar 40's high 150 takes the target
    assert keys(ours) == [
        ("long", 91, d(sessions, 20), 109.5, d(sessions, 25), 98.55, "stop"),
        ("long", 88, d(sessions, 26), 112.5, d(sessions, 40), 140.625, "target"),
    ]
    # exited at bar 26's open, re-entered at bar 27's (113.0, 88 shares, target 141.25), out at bar 41's open
    assert keys(theirs) == [
        ("long", 91, d(sessions, 20), 109.5, d(sessions, 26), 112.5, "stop"),
        ("long", 88, d(sessions, 27), 113.0, d(sessions, 41), 120.0, "target"),
    ]


def test_gap_through_the_stop_fills_at_the_open(sessions: list[pd.Timestamp]) -> None:
    """Gap through the stop. Bar 25 opens at 95, below the 98.55 stop: the replay's stop fills at that open
    (``min(open, stop)``, not at the stop: nobody sold at 98.55); backtrader's STP order does the same
    (``_try_exec_stop``: open through the stop, fill at the open). The level check in ``next`` sells at the
    next bar's open instead, here after a rebound to 113."""
    frame = rising(sessions, 60, b25=(95.0, 95.2, 94.8, 95.1), b26=(113.0, 113.2, 112.9, 113.0))
    ours, theirs = check(frame, REPLAY.but(exits="next_open"))
    assert keys(ours) == [("long", 91, d(sessions, 20), 109.5, d(sessions, 25), 95.0, "stop")]
    assert keys(theirs) == [("long", 91, d(sessions, 20), 109.5, d(sessions, 26), 113.0, "stop")]


def test_stop_and_target_work_on_the_entry_bar(sessions: list[pd.Timestamp]) -> None:
    """The entry bar. A market entry fills at the open and the rest of that bar comes after it, so the replay
    checks the stop and target on the entry bar too. Backtrader's ``buy_bracket`` activates the children only
    on the bar after the parent fills (``BackBroker._bracketize`` queues them in ``_toactivate``), so an entry
    bar that falls through the stop is not stopped. Aligned: stop and target submitted as plain orders right
    after the market entry; the broker tries pending orders in submission order, so the entry fills first and
    both then work on the rest of its bar."""
    frame = rising(sessions, 60, b20=(109.5, 109.7, 98.0, 109.6), b30=(114.5, 140.0, 114.4, 114.6))
    ours, theirs = check(frame, REPLAY.but(exits="bracket"))
    assert keys(ours) == [
        ("long", 91, d(sessions, 20), 109.5, d(sessions, 20), 98.55, "stop"),
        ("long", 91, d(sessions, 21), 109.6, d(sessions, 30), 137.0, "target"),
    ]
    assert keys(theirs) == [("long", 91, d(sessions, 20), 109.5, d(sessions, 30), 136.875, "target")]


def test_stop_wins_a_bar_that_touches_stop_and_target(sessions: list[pd.Timestamp]) -> None:
    """Stop vs target on one bar. A daily bar does not say whether its low or its high came first; the replay
    takes the stop (``bracket_exit``: the conservative reading). Backtrader has no rule: it tries pending
    orders in the order they were submitted, so whichever exit was sent first fills (``buy_bracket`` sends the
    stop first). Here the target was sent first: backtrader books a 25 % gain where the replay books the 10 %
    loss. Aligned: the stop is submitted before the target."""
    frame = rising(sessions, 60, b25=(112.0, 140.0, 98.0, 112.5))
    ours, theirs = check(frame, REPLAY.but(stop_first=False))
    assert keys(ours) == [("long", 91, d(sessions, 20), 109.5, d(sessions, 25), 98.55, "stop")]
    assert keys(theirs) == [("long", 91, d(sessions, 20), 109.5, d(sessions, 25), 136.875, "target")]


def test_a_signal_exit_drops_the_bracket(sessions: list[pd.Timestamp]) -> None:
    """A SELL signal closes the position and its bracket. In the replay the SELL's market order fills at the
    next open first, and the stop and target go with the position. In backtrader the stop and target are
    independent orders: left working, the stop (earlier in the queue) fills on that bar too and the market
    SELL then opens a short. Aligned: cancel both when the SELL is sent."""
    frame = rising(sessions, 60, b25=(112.0, 112.1, 106.9, 107.0), b26=(107.0, 107.1, 98.0, 107.05))
    ours, theirs = check(frame, REPLAY.but(cancel_on_close=False))
    # bar 25 closes at 107 < SMA20 (107.75): SELL at bar 26's open
    assert keys(ours) == [("long", 91, d(sessions, 20), 109.5, d(sessions, 26), 107.0, "signal SELL")]
    assert keys(theirs) == [
        ("long", 91, d(sessions, 20), 109.5, d(sessions, 26), 98.55, "stop"),
        ("short", 91, d(sessions, 26), 107.0, d(sessions, 27), 107.05, "signal SELL"),
    ]


def test_prices_sizes_and_levels_at_four_places(sessions: list[pd.Timestamp]) -> None:
    """Prices at 4 places. The replay's bars are ``Decimal`` at 4 places (``PRICE_Q``, half-even; adjusted prices
    are off the tick grid anyway), the signal's entry is the close at 4 places, the size is
    ``floor(10,000 / entry)`` and the stop / target are rounded half-up. Backtrader computes in raw floats: on a
    close of 25.00004 it buys 399 shares at 25.00004 where the replay buys 400 at 25.0000, and its stop is
    22.500036, not 22.5. Aligned: the feed's prices at 4 places, sizing and levels in ``Decimal`` on them."""
    frame = rising(sessions, 60, base=23.10004, step=0.1, b25=(25.50004, 25.6, 22.0, 25.6))
    ours, theirs = check(frame, REPLAY.but(tick=False))
    assert keys(ours) == [("long", 400, d(sessions, 20), 25.0, d(sessions, 25), 22.5, "stop")]
    assert keys(theirs) == [("long", 399, d(sessions, 20), 25.00004, d(sessions, 25), 22.500036, "stop")]


def test_no_decision_on_a_bar_the_validation_flags(sessions: list[pd.Timestamp]) -> None:
    """Bad bars. The replay validates its bars (``services.bars.validation``) and ABSTAINs on a flagged bar;
    backtrader takes every bar as it comes. Bar 25's high (106.5) is below its close: the SELL it would give
    (close 107 < SMA20) is not taken by the replay, which stays long until bar 40's high takes the target.
    Aligned: ``next`` skips a bar that breaks the row rules (prices > 0, high / low consistent)."""
    frame = rising(sessions, 60, b25=(112.0, 106.5, 106.9, 107.0), b40=(119.5, 150.0, 119.4, 120.0))
    ours, theirs = check(frame, REPLAY.but(skip_invalid=False))
    assert keys(ours) == [("long", 91, d(sessions, 20), 109.5, d(sessions, 40), 136.875, "target")]
    assert keys(theirs)[0] == ("long", 91, d(sessions, 20), 109.5, d(sessions, 26), 107.0, "signal SELL")


def test_commission_cap_rounded_to_four_places(sessions: list[pd.Timestamp]) -> None:
    """Commission rounding. Both charge IB's fixed schedule, 0.005 USD a share, at least 1 USD, at most 1 % of
    the value; the replay rounds that cap to 0.0001 (``ib_fixed_commission``), the float version does not. It
    binds only below 0.50 USD a share, never changes a trade, and moves P&L by less than 0.00005 USD an
    order: 29,994 shares at 0.3334 cost 100.0000 (99.999996 unrounded), at 0.3001 90.0120 (90.011994)."""
    frame = rising(sessions, 60, base=0.3144, step=0.001, b25=(0.3384, 0.3400, 0.29, 0.3394))
    ours, result = replay_side(frame)
    float_run = run(frame, REPLAY.but(commission="float"))
    assert (
        keys(ours)
        == keys(float_run.trades)
        == [("long", 29994, d(sessions, 20), 0.3334, d(sessions, 25), 0.3001, "stop")]
    )
    assert [f.commission for f in result.fills[:2]] == [Decimal("100.0000"), Decimal("90.0120")]
    assert run(frame, REPLAY).commissions[:2] == [100.0, 90.012]
    assert float_run.commissions[:2] == pytest.approx([99.999996, 90.011994], abs=1e-9)
    # (0.3001 - 0.3334) * 29,994 = -998.8002, less both commissions
    assert result.trades[0].pnl == Decimal("-1188.8122")
    assert float_run.trades[0].pnl == pytest.approx(-1188.81219, abs=1e-9)


WINDOW = ("1995-01-01", "1999-12-31")


def test_identical_conventions_identical_trades_on_the_synthetic_series(synthetic: pd.DataFrame) -> None:
    """On the replay's conventions (``REPLAY``) backtrader closes exactly the replay's trades over 1995-1999 of
    the synthetic series (from the same first bar: the window is cut before either engine sees it): entry and
    exit dates, prices within 1e-6, quantities, exit kinds, net P&L, and the end value; with backtrader's
    defaults (``BACKTRADER``) it closes 21 where the replay closes 25."""
    times = synthetic["timestamp"]
    frame = synthetic.loc[(times >= pd.Timestamp(WINDOW[0], tz="UTC")) & (times <= pd.Timestamp(WINDOW[1], tz="UTC"))]
    frame = frame.reset_index(drop=True)
    ours, result = replay_side(frame)
    adjusted = adjust_prices(frame)
    aligned = run(adjusted, REPLAY)
    assert len(frame) == 1263
    assert len(ours) == len(aligned.trades) == 25
    assert keys(aligned.trades) == keys(ours)
    for a, b in zip(aligned.trades, ours, strict=True):
        assert abs(a.pnl - b.pnl) < 1e-6
    assert {t.exit_reason for t in ours} == {"stop", "target", "signal SELL"}
    assert aligned.end_value == pytest.approx(float(result.metrics.end_equity), abs=1e-6)
    default = run(adjusted, BACKTRADER)
    assert len(default.trades) == 21
    assert keys(default.trades) != keys(ours)
