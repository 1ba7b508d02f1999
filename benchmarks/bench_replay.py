"""Benchmark: replay speed (bars per second) vs backtrader on 20 years of ORCL daily bars, in one run.

    uv run python benchmarks/bench_replay.py [--repeat 3]

* **replay**: ``services.replay.engine.replay`` of ``examples/replay/orcl-sma-cross.yaml`` with the offline
  analyst over every bar (decide_every=1): the full pipeline minus charts (validation, indicators, analysis,
  signal, sizing, risk checks, fills, commissions, metrics). Great Expectations' one-time import/suite build is
  warmed up first (it is paid once per process, not per replay).
* **backtrader**: the same SMA(20)/SMA(50) rules (BUY when SMA20 > SMA50 and close > SMA50, SELL on the mirror,
  close-vs-SMA20 while SMA50 warms up; 10,000 USD per entry, 10 % stop, 25 % target, market orders at the next
  open, IB fixed commission 0.005/share min 1) on the same adjusted bars, ``cerebro.run()`` timed (data feed
  creation included).

Times are CPU seconds of this process (``time.process_time``), median of ``--repeat`` interleaved runs: on a
shared 2-core box wall time mostly measures the neighbours.

Goals: replay faster than backtrader; 20 years under 20 s. Figures go to the issue notes.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd

from services.bars.loader import load_bars
from services.bars.validation import validate_bars
from services.llm.store import InMemoryLlmCallStore
from services.replay.engine import adjust_prices, replay
from services.settings import load_settings
from services.strategies import load_strategy_file

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "orcl-1995-2014.txt"
STRATEGY = ROOT / "examples" / "replay" / "orcl-sma-cross.yaml"


def run_replay(frame: pd.DataFrame) -> tuple[float, Any]:
    definition = load_strategy_file(STRATEGY)
    settings = load_settings({})
    started = time.process_time()
    result = replay(
        definition,
        frame,
        start="1995-01-01",
        end="2014-12-31",
        settings=settings,
        store=InMemoryLlmCallStore(),
        slippage_bps=Decimal(0),
    )
    return time.process_time() - started, result


def run_backtrader(frame: pd.DataFrame) -> tuple[float, int, float]:
    import backtrader as bt  # type: ignore[import-untyped]

    class IBFixed(bt.CommInfoBase):  # type: ignore[misc]
        params = (("stocklike", True), ("commtype", bt.CommInfoBase.COMM_FIXED))

        def _getcommission(self, size: float, price: float, pseudoexec: bool) -> float:
            shares = abs(size)
            return float(min(max(shares * 0.005, 1.0), shares * price * 0.01))

    class SmaCross(bt.Strategy):  # type: ignore[misc]
        def __init__(self) -> None:
            self.fast = bt.indicators.SMA(self.data.close, period=20)
            self.slow = bt.indicators.SMA(self.data.close, period=50)
            self.stop_level = self.target_level = 0.0
            self.trades = 0

        def notify_trade(self, trade: Any) -> None:
            if trade.isclosed:
                self.trades += 1

        def next(self) -> None:
            close = self.data.close[0]
            fast = self.fast[0] if len(self) >= 20 else math.nan
            slow = self.slow[0] if len(self) >= 50 else math.nan
            if math.isnan(fast):
                return
            if math.isnan(slow):
                up, down = close > fast, close < fast
            else:
                up = fast > slow and close > slow
                down = fast < slow and close < slow
            if self.position:
                if self.data.low[0] <= self.stop_level or self.data.high[0] >= self.target_level or down:
                    self.close()
            elif up:
                self.buy(size=math.floor(10_000 / close))
                self.stop_level, self.target_level = close * 0.9, close * 1.25

    data = frame.set_index(pd.DatetimeIndex(frame["timestamp"]).tz_localize(None))[
        ["open", "high", "low", "close", "volume"]
    ]
    started = time.process_time()
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(bt.feeds.PandasData(dataname=data))
    cerebro.addstrategy(SmaCross)
    cerebro.broker.setcash(100_000.0)
    cerebro.broker.addcommissioninfo(IBFixed())
    strategy = cerebro.run()[0]
    elapsed = time.process_time() - started
    return elapsed, int(strategy.trades), float(cerebro.broker.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    frame = load_bars(DATA).frame
    bars = len(frame)
    validate_bars(frame.iloc[:50])  # warm Great Expectations (one-time per process)
    replay_times, bt_times = [], []
    result: Any = None
    bt_trades, bt_value = 0, 0.0
    for _ in range(args.repeat):
        elapsed, result = run_replay(frame)
        replay_times.append(elapsed)
        elapsed_bt, bt_trades, bt_value = run_backtrader(adjust_prices(frame))
        bt_times.append(elapsed_bt)
    replay_s, bt_s = statistics.median(replay_times), statistics.median(bt_times)
    m = result.metrics
    first, last = frame["timestamp"].iloc[0].date(), frame["timestamp"].iloc[-1].date()
    print(f"bars: {bars} ({first} .. {last}), repeat {args.repeat}")
    print(
        f"replay (offline analyst, every bar): {replay_s:.3f} s CPU median = {bars / replay_s:,.0f} bars/s; "
        f"{len(result.decisions)} decisions, {m.trades} closed trades, end equity {m.end_equity:,.2f}"
    )
    print(
        f"backtrader 1.9.78 (same rules):      {bt_s:.3f} s CPU median = {bars / bt_s:,.0f} bars/s; "
        f"{bt_trades} closed trades, end value {bt_value:,.2f}"
    )
    goal = "met" if replay_s < 20 else "MISSED"
    print(f"replay / backtrader speed: {bt_s / replay_s:.2f}x; goal 20 years < 20 s: {goal}")


if __name__ == "__main__":
    main()
