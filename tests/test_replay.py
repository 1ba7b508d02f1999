"""Replay engine: 20 years of ORCL against an independent hand loop, determinism, no look-ahead."""

from __future__ import annotations

import datetime as dt
import json
import math
from decimal import ROUND_FLOOR, ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.enums import AnalystKind, SignalAction
from models.strategy import StrategyDefinition
from services.bars.loader import load_bars
from services.bars.validation import validate_bars
from services.errors import InputError
from services.indicators import compute_indicators
from services.llm.context import snapshot_from
from services.llm.offline import OFFLINE_MODEL, offline_analysis
from services.llm.outcome import AnalysisOutcome
from services.llm.prompts import RenderedPrompt
from services.llm.store import InMemoryLlmCallStore
from services.replay.engine import ReplayResult, adjust_prices, replay
from services.settings import Settings, load_settings
from services.signals import generate_signal
from services.strategies import load_strategy_file

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
ORCL = SHARED / "orcl-1995-2014.txt"
STRATEGY = ROOT / "examples" / "replay" / "orcl-sma-cross.yaml"
SLIPPAGE = Decimal(5)
Q4 = Decimal("0.0001")


@pytest.fixture(scope="module")
def definition() -> StrategyDefinition:
    return load_strategy_file(STRATEGY)


@pytest.fixture(scope="module")
def orcl() -> pd.DataFrame:
    return load_bars(ORCL).frame


@pytest.fixture(scope="module")
def settings() -> Settings:
    return load_settings({})


@pytest.fixture(scope="module")
def full_run(definition: StrategyDefinition, orcl: pd.DataFrame, settings: Settings) -> ReplayResult:
    return replay(
        definition,
        orcl,
        start="1995-01-01",
        end="2014-12-31",
        settings=settings,
        store=InMemoryLlmCallStore(),
        slippage_bps=SLIPPAGE,
    )


def d4(value: float) -> Decimal:
    return Decimal(repr(float(value))).quantize(Q4, rounding=ROUND_HALF_EVEN)


def commission(qty: Decimal, px: Decimal) -> Decimal:
    # IB fixed (US stocks): 0.005 USD/share, min 1.00 USD, max 1 % of the trade value.
    return min(max(qty * Decimal("0.005"), Decimal(1)), (qty * px * Decimal("0.01")).quantize(Q4))


def hand_loop(frame: pd.DataFrame) -> tuple[list[tuple[object, ...]], Decimal, Decimal, tuple[object, ...]]:
    """An independent SMA(20)/SMA(50) long-only loop with the documented fill conventions.

    Rules (the offline analyst on two moving averages, then the example's risk settings): BUY when
    SMA20 > SMA50 and close > SMA50, SELL when SMA20 < SMA50 and close < SMA50; while SMA50 is still warming up,
    BUY/SELL on close above/below SMA20. 10,000 USD per entry (floor shares), market orders at the next open
    +-5 bps, 10 % stop / 25 % target off the decision close, checked from the entry bar on (stop first),
    IB fixed commissions. Returns (trades, final cash, final equity, (open qty, its entry time and price)).
    """
    adj = frame["adj_close"] / frame["close"]
    o, h, lo, c = ((frame[k] * adj).to_numpy() for k in ("open", "high", "low", "close"))
    fast = pd.Series(c).rolling(20).mean().to_numpy()
    slow = pd.Series(c).rolling(50).mean().to_numpy()
    times = list(frame["timestamp"])
    slip = SLIPPAGE / Decimal(10_000)
    cash, qty = Decimal(100_000), Decimal(0)
    entry_px = entry_comm = Decimal(0)
    stop = target = Decimal(0)
    entry_time = None
    pending: str | None = None
    pending_qty = Decimal(0)
    pending_stop = pending_target = Decimal(0)
    trades: list[tuple[object, ...]] = []

    def close_trade(t: object, px: Decimal, why: str) -> None:
        nonlocal cash, qty
        comm = commission(qty, px)
        cash += qty * px - comm
        trades.append((entry_time, entry_px, t, px, qty, (px - entry_px) * qty - entry_comm - comm, why))
        qty = Decimal(0)

    for i in range(len(c)):
        op, hp, lp = d4(o[i]), d4(h[i]), d4(lo[i])
        if pending == "buy":
            px = (op * (1 + slip)).quantize(Q4, rounding=ROUND_HALF_EVEN)
            entry_comm = commission(pending_qty, px)
            qty, entry_px, entry_time = pending_qty, px, times[i]
            cash -= qty * px + entry_comm
            stop, target = pending_stop, pending_target
        elif pending == "sell" and qty:
            close_trade(times[i], (op * (1 - slip)).quantize(Q4, rounding=ROUND_HALF_EVEN), "signal")
        pending = None
        if qty:
            if lp <= stop:
                close_trade(times[i], (min(op, stop) * (1 - slip)).quantize(Q4, rounding=ROUND_HALF_EVEN), "stop")
            elif hp >= target:
                close_trade(times[i], max(op, target), "target")
        close = float(Decimal(repr(round(float(c[i]), 4))))
        if math.isnan(fast[i]):
            continue
        if math.isnan(slow[i]):
            up, down = close > fast[i], close < fast[i]
        else:
            up = fast[i] > slow[i] and close > slow[i]
            down = fast[i] < slow[i] and close < slow[i]
        entry = Decimal(repr(round(float(c[i]), 4)))
        if up and not qty:
            pending, pending_qty = "buy", (Decimal(10_000) / entry).to_integral_value(rounding=ROUND_FLOOR)
            pending_stop = (entry * Decimal("0.9")).quantize(Q4, rounding=ROUND_HALF_UP)
            pending_target = (entry * Decimal("1.25")).quantize(Q4, rounding=ROUND_HALF_UP)
        elif down and qty:
            pending = "sell"
    equity = cash + qty * d4(c[-1])
    return trades, cash, equity, (qty, entry_time, entry_px)


def test_orcl_twenty_years_match_an_independent_hand_loop(full_run: ReplayResult, orcl: pd.DataFrame) -> None:
    trades, _cash, equity, (open_qty, open_time, open_px) = hand_loop(orcl)
    assert len(full_run.trades) > 50  # 20 years of crossovers
    assert len(full_run.trades) == len(trades)
    for mine, ref in zip(full_run.trades, trades, strict=True):
        entry_time, entry_px, exit_time, exit_px, qty, pnl, why = ref
        assert (mine.entry_time, mine.entry_price, mine.exit_time, mine.exit_price, mine.quantity) == (
            pd.Timestamp(entry_time).to_pydatetime(),
            entry_px,
            pd.Timestamp(exit_time).to_pydatetime(),
            exit_px,
            qty,
        )
        assert mine.pnl == pnl
        assert (mine.exit_reason or "").startswith(why)
    assert {t.exit_reason for t in full_run.trades} >= {"stop", "target"}
    if open_qty:
        assert full_run.open_trade is not None
        assert (full_run.open_trade.quantity, full_run.open_trade.entry_price) == (open_qty, open_px)
        assert full_run.open_trade.entry_time == pd.Timestamp(open_time).to_pydatetime()
    else:
        assert full_run.open_trade is None
    m = full_run.metrics
    assert Decimal(repr(m.end_equity)).quantize(Decimal("0.01")) == equity.quantize(Decimal("0.01"))
    assert m.total_return == pytest.approx(float(equity) / 100_000 - 1, abs=1e-12)
    assert m.trades == len(trades)
    assert m.win_rate == pytest.approx(sum(1 for t in trades if t[5] > 0) / len(trades))  # type: ignore[operator]
    assert m.commissions > 0
    assert len(full_run.equity) == len(orcl)


def test_replay_twice_gives_identical_output(
    full_run: ReplayResult, definition: StrategyDefinition, orcl: pd.DataFrame, settings: Settings
) -> None:
    again = replay(
        definition,
        orcl,
        start="1995-01-01",
        end="2014-12-31",
        settings=settings,
        store=InMemoryLlmCallStore(),
        slippage_bps=SLIPPAGE,
    )
    assert json.dumps(again.to_json(), sort_keys=True) == json.dumps(full_run.to_json(), sort_keys=True)
    assert again.decisions == full_run.decisions


def test_decide_every_and_window(definition: StrategyDefinition, orcl: pd.DataFrame, settings: Settings) -> None:
    result = replay(
        definition,
        orcl,
        start="2010-01-01",
        end="2010-12-31",
        decide_every=5,
        settings=settings,
        store=InMemoryLlmCallStore(),
    )
    days = [d.bar_time for d in result.decisions]
    assert days[0].date() == dt.date(2010, 1, 4) and days[-1].year == 2010
    assert len(days) == math.ceil(252 / 5)
    assert result.equity.index[0].date() == dt.date(2010, 1, 4) and result.equity.index[-1].date().year == 2010


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"start": "2015-06-01", "end": "2015-12-31"}, "no bars between"),
        ({"start": "2010-06-01", "end": "2010-01-01"}, "before start"),
        ({"start": "2010-01-01", "end": "2010-02-01", "decide_every": 0}, "decide_every"),
        ({"start": "2010-01-01", "end": "2010-02-01", "analyst": "llm"}, "API key"),
        ({"start": "not a date", "end": "2010-02-01"}, "not a date"),
    ],
)
def test_bad_parameters_are_input_errors(
    definition: StrategyDefinition, orcl: pd.DataFrame, settings: Settings, kwargs: dict[str, object], needle: str
) -> None:
    with pytest.raises(InputError) as err:
        replay(definition, orcl, settings=settings, store=InMemoryLlmCallStore(), **kwargs)  # type: ignore[arg-type]
    assert needle in err.value.summary()


def _key(d: object) -> tuple[object, ...]:
    return tuple(getattr(d, k) for k in ("bar_time", "action", "reason", "confidence", "entry", "stop", "target"))


def test_no_look_ahead(definition: StrategyDefinition, orcl: pd.DataFrame, settings: Settings) -> None:
    """Bars after a decision point never change it; one indicator pass equals recomputing on truncated bars."""
    frame = orcl.iloc[:1300].reset_index(drop=True)
    base = replay(
        definition, frame, start="1995-01-01", end="2000-12-31", settings=settings, store=InMemoryLlmCallStore()
    )
    adjusted = validate_bars(adjust_prices(frame), bar_size=definition.bar_size).frame
    full = compute_indicators(adjusted, definition.indicators)
    for k in (30, 60, 400, 901, 1299):
        # 1. causal indicators: the one full pass equals TA-Lib on the truncated bars, bit for bit
        truncated = compute_indicators(adjusted.iloc[: k + 1], definition.indicators)
        for col in full.column_names():
            np.testing.assert_array_equal(truncated.frame[col].to_numpy(), full.frame[col].to_numpy()[: k + 1])
        # 2. the engine's decision at k equals the strategy's own steps run on the truncated bars only
        snap = snapshot_from(truncated, symbol=definition.symbol, bar_size=definition.bar_size)
        outcome = AnalysisOutcome(
            analyst=AnalystKind.OFFLINE,
            model=OFFLINE_MODEL,
            prompt=RenderedPrompt(text="-", sha256="0" * 64),
            reference_price=snap.last_close,
            analysis=offline_analysis(snap, definition.indicators),
        )
        when = pd.Timestamp(adjusted["timestamp"].iloc[k]).to_pydatetime()
        signal = generate_signal(
            outcome, definition, last_bar_time=when, now=when + dt.timedelta(days=1), flagged_latest=False
        )
        decision = base.decisions[k]
        assert (decision.action, decision.reason, decision.entry, decision.stop, decision.target) == (
            signal.action,
            signal.reason,
            signal.entry,
            signal.stop,
            signal.target,
        )
        # 3. wreck every bar after k (prices x3 and reversed, a split-like jump): decisions up to k stay the same
        changed = frame.copy()
        after = changed.index > k
        for col in ("open", "high", "low", "close", "adj_close"):
            changed.loc[after, col] = changed.loc[after, col].to_numpy()[::-1] * 3
        other = replay(
            definition, changed, start="1995-01-01", end="2000-12-31", settings=settings, store=InMemoryLlmCallStore()
        )
        assert [_key(d) for d in other.decisions[: k + 1]] == [_key(d) for d in base.decisions[: k + 1]]
        if k < 1200:
            assert [_key(d) for d in other.decisions[k + 1 :]] != [_key(d) for d in base.decisions[k + 1 :]]
    actions = {d.action for d in base.decisions}
    assert {SignalAction.BUY, SignalAction.SELL} <= actions
