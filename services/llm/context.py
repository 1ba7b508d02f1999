"""What the analysts see: a :class:`MarketSnapshot` (for the offline rules) and the prompt context.

Both are built from the newest NON-flagged bars only. The prompt context is plain data (strings,
numbers, lists, dicts) so a sandboxed template can use it; it carries market data, indicator values and
the strategy's risk settings, never a setting, key or endpoint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final

import numpy as np
import pandas as pd

from models.bars import FLAGGED, TIMESTAMP
from models.enums import BarSize
from models.strategy import StrategyDefinition
from services.errors import InputError
from services.indicators import IndicatorColumn, IndicatorResult

__all__ = ["MarketSnapshot", "build_prompt_context", "snapshot_from"]

DEFAULT_LAST_N: Final = 10
DEFAULT_TIMEFRAME_LAST_N: Final = 5


@dataclass(frozen=True)
class MarketSnapshot:
    """The newest usable bar and indicator values. ``last_close`` is a price in the instrument's currency."""

    symbol: str
    bar_size: BarSize
    last_bar_time: pd.Timestamp
    last_close: Decimal
    latest: dict[str, float | None]
    columns: tuple[IndicatorColumn, ...]
    flagged_latest: bool  # the newest bar in the frame (not the snapshot's) is flagged
    # the usable bar before it: indicator values and "close" (rules' crosses_above / crosses_below read them)
    previous: dict[str, float | None] = field(default_factory=dict)

    def values_of(self, function: str) -> list[tuple[IndicatorColumn, float]]:
        """Return (column, value) pairs of every output of ``function`` with a value."""
        pairs = []
        for col in self.columns:
            value = self.latest.get(col.name)
            if col.function == function and value is not None:
                pairs.append((col, value))
        return pairs


def _price(value: float) -> Decimal:
    # 4 decimals keeps sub-cent FX/penny prices; tick rounding happens at order time.
    return Decimal(repr(round(value, 4)))


def _good(frame: pd.DataFrame) -> pd.DataFrame:
    if FLAGGED in frame.columns:
        return frame.loc[~frame[FLAGGED].fillna(False).astype(bool)]
    return frame


def snapshot_from(indicators: IndicatorResult, *, symbol: str, bar_size: BarSize) -> MarketSnapshot:
    """Build the snapshot of the newest non-flagged bar; raise ``InputError`` when there is none."""
    frame = indicators.frame
    good = _good(frame)
    if good.empty:
        raise InputError("bars", "no usable (non-flagged) bars")
    last = good.iloc[-1]
    close = float(last["close"])
    if not math.isfinite(close) or close <= 0:
        raise InputError("bars", f"newest usable close is {close!r}")
    flagged_latest = bool(frame[FLAGGED].iloc[-1]) if FLAGGED in frame.columns else False
    previous: dict[str, float | None] = {}
    if len(good) >= 2:
        before = good.iloc[-2]
        for name in (*indicators.latest, "close"):
            value = float(before[name])
            previous[name] = None if math.isnan(value) else value
    return MarketSnapshot(
        symbol=symbol,
        bar_size=bar_size,
        last_bar_time=pd.Timestamp(last[TIMESTAMP]),
        last_close=_price(close),
        latest=dict(indicators.latest),
        columns=indicators.columns,
        flagged_latest=flagged_latest,
        previous=previous,
    )


def _pct(now: float, then: float) -> float | None:
    if then == 0 or not math.isfinite(now) or not math.isfinite(then):
        return None
    return round((now / then - 1) * 100, 2)


def _fmt_time(ts: pd.Timestamp, bar_size: BarSize) -> str:
    if bar_size in (BarSize.DAY_1, BarSize.WEEK_1, BarSize.MONTH_1):
        return str(ts.strftime("%Y-%m-%d"))
    return str(ts.strftime("%Y-%m-%d %H:%M UTC"))


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def _market(good: pd.DataFrame, bar_size: BarSize, last_n: int) -> dict[str, Any]:
    """as_of, last close, the last ``last_n`` bars, returns and range of non-flagged bars (not empty)."""
    close = good["close"].to_numpy(dtype=np.float64)
    tail = good.tail(last_n)
    bars = [
        {
            "time": _fmt_time(pd.Timestamp(row[TIMESTAMP]), bar_size),
            "open": round(float(row["open"]), 4),
            "high": round(float(row["high"]), 4),
            "low": round(float(row["low"]), 4),
            "close": round(float(row["close"]), 4),
            "volume": int(row["volume"]) if math.isfinite(float(row["volume"])) else None,
        }
        for _, row in tail.iterrows()
    ]
    returns = {
        f"{n}_bars_pct": _pct(float(close[-1]), float(close[-1 - n])) if len(close) > n else None for n in (1, 5, 20)
    }
    high, low = float(good["high"].max()), float(good["low"].min())
    position = round((float(close[-1]) - low) / (high - low) * 100, 1) if high > low else None
    return {
        "as_of": _fmt_time(pd.Timestamp(good[TIMESTAMP].iloc[-1]), bar_size),
        "last_close": round(float(close[-1]), 4),
        "bars": bars,
        "bar_count": len(good),
        "returns": returns,
        "range": {"high": round(high, 4), "low": round(low, 4), "position_pct": position, "bars": len(good)},
    }


def _timeframes(indicators: IndicatorResult, last_n: int) -> list[dict[str, Any]]:
    """One entry per higher timeframe: its bar size, market block and indicator values (same keys as the main)."""
    out: list[dict[str, Any]] = []
    for tf in indicators.timeframes:
        good = _good(tf.result.frame)
        if good.empty:
            raise InputError(f"{tf.bar_size.value} bars", "no usable (non-flagged) bars")
        out.append(
            {
                "bar_size": tf.bar_size.value,
                **_market(good, tf.bar_size, last_n),
                "flagged_count": len(tf.result.frame) - len(good),
                "indicators": {name: _round(value) for name, value in tf.result.latest.items()},
            }
        )
    return out


def build_prompt_context(
    definition: StrategyDefinition,
    indicators: IndicatorResult,
    *,
    last_n: int = DEFAULT_LAST_N,
    timeframe_last_n: int = DEFAULT_TIMEFRAME_LAST_N,
) -> dict[str, Any]:
    """Return the template context: symbol, bar size, last ``last_n`` bars, returns, range, indicators, risk, and
    ``timeframes`` (one entry per higher timeframe, its last ``timeframe_last_n`` bars; empty without any)."""
    good = _good(indicators.frame)
    if good.empty:
        raise InputError("bars", "no usable (non-flagged) bars")
    market = _market(good, definition.bar_size, last_n)
    risk = definition.risk
    rules = definition.rules
    return {
        "strategy": definition.name,
        "description": definition.description,
        "symbol": definition.symbol,
        "currency": definition.currency,
        "bar_size": definition.bar_size.value,
        "as_of": market["as_of"],
        "last_close": market["last_close"],
        "bars": market["bars"],
        "bar_count": market["bar_count"],
        "flagged_count": len(indicators.frame) - len(good),
        "returns": market["returns"],
        "range": market["range"],
        "indicators": {name: _round(value) for name, value in indicators.latest.items()},
        "timeframes": _timeframes(indicators, timeframe_last_n),
        "risk": {
            "stop_loss_pct": None if risk.stop_loss_pct is None else str(risk.stop_loss_pct),
            "take_profit_pct": None if risk.take_profit_pct is None else str(risk.take_profit_pct),
            "allow_short": risk.allow_short,
            "min_confidence": str(rules.min_confidence),
            "min_risk_reward": str(rules.min_risk_reward),
        },
    }
