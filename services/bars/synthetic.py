"""A deterministic synthetic daily bar series, for tests, benchmarks and demos that need decades of bars.

No shipped real series is long enough (and licensed) for 20-year replays, so :func:`synthetic_daily` builds one:
one bar per NYSE session (``services.calendar``), OHLC-consistent, in the Yahoo daily layout
(``Date,Open,High,Low,Close,Adj Close,Volume``) that ``load_bars`` reads with no options.

The model, per session: a trend regime (drift up, down or flat, lasting 40-250 sessions; bear trends likelier when
the price is far above a long-run path growing 7.8 % a year, bull trends when far below) and a volatility regime
(1.2-3.6 % a day, lasting 20-200 sessions); an overnight gap and an intraday move drawn around them; a rare
"earnings" jump (about one session in 63, 4-36 % either way), so the series has the large moves a real stock has; high
and low outside the open/close range by a half-normal amount; volume around a slowly growing base, higher on large
moves, in lots of 100. From ``DIVIDENDS_FROM`` a quarterly cash dividend (0.5 % of the close) is paid; ``Adj Close``
is the close back-adjusted for those dividends the way Yahoo does it, so ``adj_close / close`` steps at each
ex-date and stays 1 after the last one.

Reproducible bit for bit on any platform and Python: the only randomness is ``random.Random(seed).random()``
(whose sequence Python guarantees), normals are Irwin-Hall sums of twelve uniforms, and the arithmetic is plain
IEEE ``+ - * /`` (no ``exp`` or ``log`` from the platform's libm). Prices are written with 6 decimals.

The file ``data/samples/synthetic/SYNTH-1995-2014.csv`` is ``synthetic_daily_csv()`` with the defaults; rebuild it with
``uv run python -m services.bars.synthetic data/samples/synthetic/SYNTH-1995-2014.csv``.
"""

from __future__ import annotations

import random
import sys
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Final

import numpy as np
import pandas as pd

from models.bars import TIMESTAMP
from services import calendar

DEFAULT_SEED: Final = 13
DEFAULT_START: Final = date(1995, 1, 1)
DEFAULT_END: Final = date(2014, 12, 31)
DIVIDENDS_FROM: Final = date(2009, 4, 1)
HEADER: Final = "Date,Open,High,Low,Close,Adj Close,Volume\n"
_UP, _DOWN, _FLAT = 0.0025, -0.0022, 0.0004  # mean daily drift of a bull, bear and flat trend regime
_EVEN: Final = (_UP, _DOWN, _FLAT)
_UP_SKEW: Final = (_UP, _UP, _UP, _FLAT, _DOWN)
_DOWN_SKEW: Final = (_DOWN, _DOWN, _DOWN, _FLAT, _UP)


@dataclass(frozen=True)
class SyntheticBar:
    day: date
    open: float
    high: float
    low: float
    close: float
    adj_close: float
    volume: int


def _normal(rng: random.Random) -> float:
    """An approximately standard normal draw (Irwin-Hall: twelve uniforms minus 6), libm-free."""
    total = 0.0
    for _ in range(12):
        total += rng.random()
    return total - 6.0


def _round6(value: float) -> float:
    return float(f"{value:.6f}")


def synthetic_daily(
    start: date = DEFAULT_START, end: date = DEFAULT_END, *, seed: int = DEFAULT_SEED, first_close: float = 20.0
) -> list[SyntheticBar]:
    """Return one bar per NYSE session from ``start`` to ``end`` (inclusive), the same for the same arguments."""
    rng = random.Random(seed)
    sessions = calendar.sessions_between(start, end)
    drift = 0.0
    trend_left = 0
    vol = 0.02
    vol_left = 0
    base_volume = 30_000_000.0
    close = anchor = first_close
    raw: list[tuple[date, float, float, float, float, int]] = []
    for day in sessions:
        anchor *= 1.0003  # the long-run path, about +7.8 % a year
        if trend_left <= 0:
            # far above the long-run path, bear trends are likelier; far below it, bull trends
            ratio = close / anchor
            regimes = _UP_SKEW if ratio < 0.7 else _DOWN_SKEW if ratio > 1.4 else _EVEN
            drift = regimes[int(rng.random() * len(regimes))] * (0.5 + rng.random())
            trend_left = 40 + int(rng.random() * 211)
        if vol_left <= 0:
            vol = 0.012 + 0.024 * rng.random()
            vol_left = 20 + int(rng.random() * 181)
        trend_left -= 1
        vol_left -= 1
        gap = drift * 0.3 + vol * 0.35 * _normal(rng)
        if rng.random() < 1 / 63:  # an earnings-like jump at the open: 4 % to 36 %, either way
            size = rng.random()
            gap += (0.04 + 0.32 * size * size * size) * (1 if rng.random() < 0.55 else -1)
        intraday = drift * 0.7 + vol * 0.9 * _normal(rng)
        gap = max(gap, -0.5)
        intraday = max(min(intraday, 0.3), -0.3)
        open_ = close * (1 + gap)
        new_close = open_ * (1 + intraday)
        top, bottom = max(open_, new_close), min(open_, new_close)
        high = top * (1 + vol * 0.5 * abs(_normal(rng)))
        low = bottom * (1 - min(vol * 0.5 * abs(_normal(rng)), 0.5))
        move = abs(new_close / close - 1)
        base_volume *= 1.0 + 0.0002 * (rng.random() - 0.4)
        shares = base_volume * (0.6 + 0.8 * rng.random() + 12.0 * move)
        o, c = _round6(open_), _round6(new_close)
        h, lo = max(_round6(high), o, c), min(_round6(low), o, c)
        raw.append((day, o, h, lo, c, int(shares / 100) * 100))
        close = c
    # Back-adjust for quarterly dividends (ex-date: the first session of each quarter from DIVIDENDS_FROM on).
    factors = [1.0] * len(raw)
    quarters_paid: set[tuple[int, int]] = set()
    for i in range(1, len(raw)):
        day = raw[i][0]
        quarter = (day.year, (day.month - 1) // 3)
        if day >= DIVIDENDS_FROM and quarter not in quarters_paid:
            quarters_paid.add(quarter)
            for j in range(i):  # Yahoo's factor 1 - dividend / previous close, the dividend being 0.5 % of it
                factors[j] *= 0.995
    return [SyntheticBar(day, o, h, lo, c, _round6(c * factors[i]), v) for i, (day, o, h, lo, c, v) in enumerate(raw)]


def synthetic_daily_csv(
    start: date = DEFAULT_START, end: date = DEFAULT_END, *, seed: int = DEFAULT_SEED, first_close: float = 20.0
) -> str:
    """The series of :func:`synthetic_daily` as Yahoo-layout CSV text (LF line ends)."""
    lines = [HEADER]
    for bar in synthetic_daily(start, end, seed=seed, first_close=first_close):
        lines.append(
            f"{bar.day.isoformat()},{bar.open:.6f},{bar.high:.6f},{bar.low:.6f},{bar.close:.6f},"
            f"{bar.adj_close:.6f},{bar.volume}\n"
        )
    return "".join(lines)


MINUTES_PER_SESSION: Final = 390  # 09:30-16:00 New York


def synthetic_minutes(
    start: date = DEFAULT_START, end: date = DEFAULT_END, *, seed: int = DEFAULT_SEED, first_close: float = 20.0
) -> pd.DataFrame:
    """The daily series of :func:`synthetic_daily`, each session cut into 390 one-minute bars (a canonical frame).

    Per session a Brownian bridge from the day's open to its close (so the minutes' first open and last close are the
    day's), each minute's high and low a little outside its open/close range, everything inside the day's high and
    low; volume split evenly in lots of 100. Bars are stamped at their UTC start (09:30 New York onwards, daylight
    saving time included). For benchmarks: the noise is numpy's PCG64 (the same for the same numpy), not the
    daily series' pure-Python generator. 20 years: about 1.96 million bars in a few seconds.
    """
    days = synthetic_daily(start, end, seed=seed, first_close=first_close)
    n, m = len(days), MINUTES_PER_SESSION
    rng = np.random.Generator(np.random.PCG64(seed))
    o = np.array([d.open for d in days])[:, None]
    c = np.array([d.close for d in days])[:, None]
    hi = np.array([d.high for d in days])[:, None]
    lo = np.array([d.low for d in days])[:, None]
    steps = np.cumsum(rng.normal(0.0, 1.0, (n, m)), axis=1)
    t = np.arange(1, m + 1) / m
    bridge = steps - t * steps[:, -1:]  # 0 at both ends
    scale = (hi - lo) / 4 / np.maximum(np.abs(bridge).max(axis=1, keepdims=True), 1e-9)
    close = np.clip(o + (c - o) * t + bridge * scale, lo, hi)
    close[:, -1] = c[:, 0]
    opens = np.concatenate([o, close[:, :-1]], axis=1)
    wiggle = np.abs(rng.normal(0.0, 1.0, (2, n, m))) * (hi - lo) / 200
    high = np.minimum(np.maximum(opens, close) + wiggle[0], hi)
    low = np.maximum(np.minimum(opens, close) - wiggle[1], lo)
    volume = np.repeat(np.array([d.volume // 100 // m * 100 for d in days], dtype=np.float64), m)
    session_open = (
        (pd.DatetimeIndex([pd.Timestamp(d.day) for d in days]) + pd.Timedelta(hours=9, minutes=30))
        .tz_localize("America/New_York")
        .tz_convert("UTC")
    )
    stamps = (session_open.as_unit("ns").asi8[:, None] + np.arange(m)[None, :] * 60_000_000_000).ravel()
    return pd.DataFrame(
        {
            TIMESTAMP: pd.to_datetime(stamps, unit="ns", utc=True),
            "open": np.round(opens.ravel(), 6),
            "high": np.round(high.ravel(), 6),
            "low": np.round(low.ravel(), 6),
            "close": np.round(close.ravel(), 6),
            "volume": volume,
        }
    )


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m services.bars.synthetic OUT.csv", file=sys.stderr)
        return 2
    Path(argv[0]).write_text(synthetic_daily_csv(), encoding="ascii", newline="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
