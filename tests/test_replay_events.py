"""The replay passes over the bars where nothing can happen, and that changes no result.

The engine makes a decision while it runs only where one can place an order (the rules' vote over every bar at once
says which; :class:`services.replay.engine.Decisions` makes the others when read), and skips the bars with no order
pending and no stop or target in reach. Here randomized strategies (rules, order types, shorting, stops and targets
by percent or ATR, time exits, trailing stops, decide_every, flagged bars) replay the real synthetic bars twice:
as shipped, and with ``MAKE_EVERY_DECISION`` (every decision made on its bar, as the engine did before). Fills,
trades, orders, the equity curve (bit for bit), metrics and every decision must be the same; reading the passed-over
decisions also checks that none of them places an order.
"""

from __future__ import annotations

import math
import random
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import services.replay.engine as engine
from models.strategy import Rule
from services.bars.loader import load_bars
from services.llm.store import InMemoryLlmCallStore
from services.replay.engine import ReplayResult, replay
from services.rules import RuleSet
from services.settings import load_settings
from services.strategies import load_strategy_file, parse_strategy

ROOT = Path(__file__).resolve().parents[1]
DAILY = ROOT / "data" / "samples" / "synthetic" / "SYNTH-1995-2014.csv"  # generated: services.bars.synthetic
BASE = ROOT / "examples" / "replay" / "orcl-sma-cross.yaml"

CONDITIONS = [
    "sma_fast > sma_slow and close > sma_slow",
    "sma_fast < sma_slow and close < sma_slow",
    "sma_fast crosses_above sma_slow",
    "sma_fast crosses_below sma_slow",
    "rsi_14 < 35 or close < bb_lowerband * 1.01",
    "rsi_14 > 65 or close > bb_upperband * 0.99",
    "not (macd_macdhist > 0)",
    "macd_macdhist > 0",
    "close / (sma_slow - sma_slow) > 1",  # always a division by zero: never applies
    "(close - sma_fast) / atr_14 > 0.5",
    "(close - sma_fast) / atr_14 < -0.5",
]


def _strategy(rng: random.Random) -> Any:
    doc = load_strategy_file(BASE).model_dump(mode="json")
    doc["indicators"] = [
        {"function": "SMA", "params": {"timeperiod": rng.choice([5, 10, 20])}, "alias": "sma_fast"},
        {"function": "SMA", "params": {"timeperiod": rng.choice([30, 50])}, "alias": "sma_slow"},
        {"function": "RSI", "params": {"timeperiod": 14}, "alias": "rsi_14"},
        {"function": "BBANDS", "params": {"timeperiod": 20}, "alias": "bb"},
        {"function": "MACD", "params": {}, "alias": "macd"},
        *([{"function": "ATR", "params": {"timeperiod": 14}, "alias": "atr_14"}] if rng.random() < 0.6 else []),
    ]
    risk = doc["risk"]
    risk["order_type"] = rng.choice(["MKT", "LMT"])
    risk["tif"] = rng.choice(["DAY", "GTC"])
    risk["allow_short"] = rng.random() < 0.5
    risk["stop_loss_pct"] = rng.choice([None, "3", "10"])
    risk["take_profit_pct"] = rng.choice([None, "5", "25"])
    risk["max_holding_bars"] = rng.choice([None, None, 4, 15])
    risk["trailing_stop"] = rng.choice([None, None, {"percent": "2"}])
    doc["rules"]["min_risk_reward"] = rng.choice(["0.5", "1.5", "2.4"])
    doc["rules"]["min_confidence"] = rng.choice(["0.55", "0.8"])
    has_atr = any(i["function"] == "ATR" for i in doc["indicators"])
    if rng.random() < 0.6:
        usable = [c for c in CONDITIONS if has_atr or "atr_14" not in c]
        doc["decision"] = {
            "policy": "rules_only",
            "rules": [
                {
                    "when": rng.choice(usable),
                    "action": rng.choice(["BUY", "SELL"]),
                    "weight": rng.choice([0.5, 1, 2]),
                    **({"group": rng.choice(["a", "b"])} if rng.random() < 0.5 else {}),
                }
                for _ in range(rng.randint(1, 5))
            ],
            "rules_threshold": rng.choice([0.2, 0.34, 0.6]),
        }
    return parse_strategy(doc)


def _bars(rng: random.Random) -> tuple[pd.DataFrame, str, str]:
    frame = load_bars(DAILY).frame
    start = rng.randrange(0, len(frame) - 900)
    window = frame.iloc[start : start + rng.randint(300, 800)].reset_index(drop=True)
    for _ in range(rng.randint(0, 4)):  # a few bad rows: high below low (validation flags them)
        i = rng.randrange(60, len(window))
        window.loc[i, "high"] = window.loc[i, "low"] * 0.9
    times = window["timestamp"]
    return window, str(times.iloc[rng.randint(30, 80)].date()), str(times.iloc[-1].date())


def _run(definition: Any, frame: pd.DataFrame, start: str, end: str, every: int, bps: int) -> ReplayResult:
    return replay(
        definition,
        frame,
        start=start,
        end=end,
        decide_every=every,
        settings=load_settings({}),
        store=InMemoryLlmCallStore(),
        slippage_bps=Decimal(bps),
    )


@pytest.mark.parametrize("seed", range(24))
def test_passing_over_bars_changes_no_result(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(seed)
    definition = _strategy(rng)
    frame, start, end = _bars(rng)
    every, bps = rng.choice([1, 1, 2, 3]), rng.choice([0, 5])
    fast = _run(definition, frame, start, end, every, bps)
    monkeypatch.setattr(engine, "MAKE_EVERY_DECISION", True)
    full = _run(definition, frame, start, end, every, bps)

    assert fast.fills == full.fills
    assert fast.trades == full.trades and fast.open_trade == full.open_trade
    assert fast.orders == full.orders
    assert fast.warnings == full.warnings
    np.testing.assert_array_equal(fast.positions, full.positions)
    assert fast.equity.to_numpy().tobytes() == full.equity.to_numpy().tobytes()  # bit for bit
    assert fast.metrics == full.metrics
    assert len(full.decisions.made()) == len(full.decisions)  # type: ignore[attr-defined]
    assert list(fast.decisions) == list(full.decisions)  # reads (makes) the passed-over ones: none places an order
    assert fast.signal_counts() == full.signal_counts()


def test_the_random_strategies_trade() -> None:
    """The equivalence above is not vacuous: the random strategies fill orders and pass over most decisions."""
    fills = passed = total = 0
    kinds: set[str] = set()
    for seed in range(24):
        rng = random.Random(seed)
        definition = _strategy(rng)
        frame, start, end = _bars(rng)
        every, bps = rng.choice([1, 1, 2, 3]), rng.choice([0, 5])
        result = _run(definition, frame, start, end, every, bps)
        fills += len(result.fills)
        total += len(result.decisions)
        passed += len(result.decisions) - len(result.decisions.made())  # type: ignore[attr-defined]
        kinds |= {k for k, n in result.exit_counts().items() if n}
    assert fills > 200
    assert passed > total // 2
    assert kinds == {"stop", "target", "signal", "time"}


def test_rule_directions_are_the_votes_bar_by_bar() -> None:
    """RuleSet.directions (every bar at once) gives each bar the direction RuleSet.vote gives on its values."""
    rng = random.Random(5)
    names = ["sma_fast", "sma_slow", "rsi_14", "bb_lowerband", "bb_upperband", "macd_macdhist", "atr_14", "close"]
    size = 3000
    values: dict[str, Any] = {}
    for name in names:
        column = np.array([rng.choice([rng.uniform(-2, 2), rng.uniform(20, 80), 0.0]) for _ in range(size)])
        column[rng.sample(range(size), size // 10)] = math.nan  # warming up
        values[name] = column
        values["prev:" + name] = np.roll(column, 1)
    for trial in range(30):
        rules = [
            Rule.model_validate(
                {
                    "when": rng.choice(CONDITIONS),
                    "action": rng.choice(["BUY", "SELL"]),
                    "weight": rng.choice([0.5, 1, 3]),
                    "group": rng.choice([None, "g"]),
                }
            )
            for _ in range(rng.randint(1, 6))
        ]
        threshold = rng.choice([0.1, 0.34, 1.0])
        rule_set = RuleSet(rules)
        vector = rule_set.directions(values, size, threshold=threshold)
        for i in range(0, size, 7):
            row = {k: (None if math.isnan(v[i]) else float(v[i])) for k, v in values.items()}
            verdict = rule_set.vote(row, threshold=threshold)
            expected = {"BUY": 1, "SELL": -1, "HOLD": 0}[verdict.action]
            assert vector[i] == expected, (trial, i, [r.when for r in rules], verdict)
