"""Warm timings of steps 3-6 on the 250 latest SPY daily bars (p50 / p90 / min over N runs, milliseconds).

Run: ``uv run python benchmarks/bench_analysis.py [--runs 20]``. The chart step needs headless Chromium; its
cold start (first render, browser launch) is printed separately. Uses the example strategy spy-sma-cross
(SMA 20, SMA 50, RSI 14, ATR 14: a 4-pane chart: price, volume, RSI, ATR) and a 3-pane variant (price,
volume, RSI) for the PNG goal.

Goals (checked here, no longer timed in tests): indicators < 50 ms per call for the four specs of
``tests/test_indicators.py`` (baseline: the same four TA-Lib functions called directly on numpy arrays, same run);
a warm 3-pane chart < 1.5 s p50 (baseline: the cold start of the same run).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import talib  # noqa: E402

from models.strategy import IndicatorSpec  # noqa: E402
from services.bars.loader import load_bars  # noqa: E402
from services.charts import render_chart, stop_renderer  # noqa: E402
from services.indicators import compute_indicators  # noqa: E402
from services.llm.analyst import analyze, build_request  # noqa: E402
from services.llm.context import build_prompt_context  # noqa: E402
from services.llm.prompts import load_template, render_prompt  # noqa: E402
from services.llm.store import InMemoryLlmCallStore  # noqa: E402
from services.settings import LLMSettings  # noqa: E402
from services.signals import generate_signal  # noqa: E402
from services.strategies import load_strategy_file  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "data" / "samples" / "yahoofinance-SPY-20080101-20180101.csv"


def timed(fn: Callable[[], object], runs: int) -> tuple[float, float, float]:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(0.9 * (len(samples) - 1))], samples[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--no-chart", action="store_true", help="skip the Chromium-based PNG step")
    args = parser.parse_args()

    definition = load_strategy_file(ROOT / "examples" / "strategies" / "spy-sma-cross.yaml")
    frame = load_bars(DATA).frame.tail(250).reset_index(drop=True)
    frame["flagged"] = False
    name, body = load_template(ROOT / "examples" / "prompts", definition.prompt)
    indicators = compute_indicators(frame, definition.indicators)
    three_pane = [s for s in definition.indicators if s.function != "ATR"]
    indicators3 = compute_indicators(frame, three_pane)
    request = build_request(definition, indicators, body, template_name=name)
    settings = LLMSettings(api_key=None)
    store = InMemoryLlmCallStore()
    now = dt.datetime(2017, 12, 29, 21, 10, tzinfo=dt.UTC)
    outcome = analyze(request, settings=settings, store=store, chart_png=None, now=now)

    rows: list[tuple[str, tuple[float, float, float]]] = []
    test_specs = [
        IndicatorSpec(function="SMA", alias="a", params={"timeperiod": 20}),
        IndicatorSpec(function="SMA", alias="b", params={"timeperiod": 50}),
        IndicatorSpec(function="RSI"),
        IndicatorSpec(function="MACD"),
    ]
    close = frame["close"].to_numpy(dtype="float64")

    def raw_talib() -> None:
        talib.SMA(close, timeperiod=20)
        talib.SMA(close, timeperiod=50)
        talib.RSI(close)
        talib.MACD(close)

    baseline = timed(raw_talib, args.runs)
    measured = timed(lambda: compute_indicators(frame, test_specs), args.runs)
    rows.append(("baseline: raw TA-Lib x4", baseline))
    rows.append(("indicators (test's 4 specs)", measured))
    goals = [
        f"indicators p50 {measured[0]:.2f} ms < 50 ms: {'met' if measured[0] < 50 else 'MISSED'}"
        f" ({measured[0] / max(baseline[0], 1e-6):.0f}x raw TA-Lib)"
    ]
    rows.append(("indicators (4 specs)", timed(lambda: compute_indicators(frame, definition.indicators), args.runs)))
    rows.append(
        (
            "indicators (8 specs)",
            timed(
                lambda: compute_indicators(
                    frame,
                    [*definition.indicators, *(IndicatorSpec(function=f) for f in ("MACD", "BBANDS", "STOCH", "OBV"))],
                ),
                args.runs,
            ),
        )
    )
    if not args.no_chart:
        started = time.perf_counter()
        first = render_chart(frame, indicators3, title="SPY 1 day")
        cold = (time.perf_counter() - started) * 1000
        print(f"chart cold start (browser launch + first PNG): {cold:.0f} ms, PNG {len(first.png) / 1024:.0f} KB")
        warm = timed(lambda: render_chart(frame, indicators3, title="SPY"), args.runs)
        rows.append(("chart PNG+HTML, 3 panes", warm))
        goals.append(
            f"warm chart p50 {warm[0]:.0f} ms < 1500 ms: {'met' if warm[0] < 1500 else 'MISSED'}"
            f" (cold start {cold:.0f} ms, {cold / max(warm[0], 1e-6):.1f}x warm)"
        )
        rows.append(("chart PNG+HTML, 4 panes", timed(lambda: render_chart(frame, indicators, title="SPY"), args.runs)))
    context = build_prompt_context(definition, indicators)
    rows.append(("prompt context", timed(lambda: build_prompt_context(definition, indicators), args.runs)))
    rows.append(("prompt render", timed(lambda: render_prompt(body, context, name=name), args.runs)))
    rows.append(
        (
            "offline analyst (analyze)",
            timed(lambda: analyze(request, settings=settings, store=store, chart_png=None, now=now), args.runs),
        )
    )
    rows.append(
        (
            "signal",
            timed(
                lambda: generate_signal(
                    outcome, definition, last_bar_time=request.snapshot.last_bar_time, now=now, flagged_latest=False
                ),
                args.runs,
            ),
        )
    )
    load = os.getloadavg()[0]
    print(f"{args.runs} runs each, 250 SPY daily bars, load average {load:.1f} on {os.cpu_count()} CPUs")
    print(f"{'step':<28}{'p50 ms':>10}{'p90 ms':>10}{'min ms':>10}")
    for label, (p50, p90, low) in rows:
        print(f"{label:<28}{p50:>10.2f}{p90:>10.2f}{low:>10.2f}")
    sig = generate_signal(
        outcome, definition, last_bar_time=request.snapshot.last_bar_time, now=now, flagged_latest=False
    )
    for goal in goals:
        print(f"goal: {goal}")
    print(f"signal: {sig.action.value} ({sig.analyst.value}): {sig.reason[:100]}")
    stop_renderer()


if __name__ == "__main__":
    main()
