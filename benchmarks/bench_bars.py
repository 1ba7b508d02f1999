"""Benchmark: load + validate of real bar files, warm, and the share spent in Great Expectations.

Run: ``uv run python benchmarks/bench_bars.py [--repeat N]``. Reads the shipped ``data/samples`` files.
Goal: load + validate under 300 ms each, warm (after one warm-up run that pays the GE import).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from models.enums import BarSize  # noqa: E402
from services.bars import load_bars, resample_bars  # noqa: E402
from services.bars.validation import validate_bars  # noqa: E402

SAMPLES = REPO / "data" / "samples"
FILES = ("nt-spy-minute-2011.csv", "synthetic/SYNTH-1995-2014.csv")
EXTRA = ("yahoofinance-SPY-20080101-20180101.csv",)  # two failing rows: pays the COMPLETE pass too
GOAL_MS = 300.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=15, help="timed runs per file (after one warm-up)")
    args = parser.parse_args()
    missing = [name for name in FILES if not (SAMPLES / name).is_file()]
    if missing:
        print(f"missing sample data: {', '.join(missing)} in {SAMPLES}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    validate_bars(load_bars(SAMPLES / FILES[1]).frame)
    print(f"cold first run (GE import, context, suite): {(time.perf_counter() - started) * 1000:,.0f} ms")
    load1 = os.getloadavg()[0]
    print(f"load average {load1:.1f} on {os.cpu_count()} CPUs (wall times inflate under contention; see cpu ms)")
    header = f"{'file':<40} {'rows':>6} {'load ms':>8} {'valid ms':>9} {'GE ms':>7} {'total ms':>9} {'cpu ms':>7}"
    print(f"{header} {'GE share':>9}")
    worst = 0.0
    for name in FILES + EXTRA:
        path = SAMPLES / name
        validate_bars(load_bars(path).frame)  # warm-up
        loads, validations, ge, totals, cpu = [], [], [], [], []
        for _ in range(args.repeat):
            c0 = time.process_time()
            t0 = time.perf_counter()
            loaded = load_bars(path)
            t1 = time.perf_counter()
            result = validate_bars(loaded.frame, bar_size=loaded.bar_size)
            t2 = time.perf_counter()
            cpu.append(time.process_time() - c0)
            loads.append(t1 - t0)
            validations.append(t2 - t1)
            ge.append(result.ge_seconds)
            totals.append(t2 - t0)
        total = statistics.median(totals) * 1000
        worst = max(worst, total) if name in FILES else worst
        print(
            f"{name:<40} {len(loaded.frame):>6,} {statistics.median(loads) * 1000:>8.1f} "
            f"{statistics.median(validations) * 1000:>9.1f} {statistics.median(ge) * 1000:>7.1f} "
            f"{total:>9.1f} {statistics.median(cpu) * 1000:>7.1f} "
            f"{statistics.median(ge) / statistics.median(totals):>9.0%}"
        )
    minute = load_bars(SAMPLES / FILES[0]).frame
    for size in (BarSize.MIN_5, BarSize.HOUR_1, BarSize.DAY_1):
        runs = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            resample_bars(minute, size)
            runs.append(time.perf_counter() - t0)
        print(f"resample 14,180 x 1 min -> {size.value:<8} {statistics.median(runs) * 1000:>6.1f} ms")
    print(f"medians of {args.repeat} warm runs; goal {GOAL_MS:.0f} ms: {'met' if worst < GOAL_MS else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
