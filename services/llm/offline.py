"""The OFFLINE analyst: deterministic rules over the latest indicator values, no LLM, no I/O.

Used when no API key is configured. It returns the same :class:`~services.llm.schema.Analysis` as the LLM,
and its reasoning starts with :data:`OFFLINE_LABEL` so nobody mistakes it for a model's view.

Votes (weight, direction), each only when the indicator is present and warmed up:

* trend (weight 2): two or more moving averages (SMA, EMA, WMA, DEMA, TEMA, TRIMA, KAMA, T3): the
  fastest above the slowest and the close above the slowest -> up; the mirror -> down. One moving
  average: close above / below it (weight 1).
* RSI (weight 1): below 30 oversold -> up; above 70 overbought -> down.
* Bollinger Bands (weight 1): close below the lower band -> up; above the upper band -> down.
* MACD (weight 1): histogram (macd - signal) above 0 -> up; below 0 -> down.

``score = sum(weight * direction) / sum(weight)`` in [-1, 1]. BUY when score >= 1/3, SELL when
score <= -1/3, else HOLD. Confidence (2 places): BUY/SELL 0.5 + 0.45 * |score| (0.65 .. 0.95); HOLD
0.5 - 0.45 * |score| (a lean towards one side lowers the confidence in "hold").
Entry is the last close; with an ATR the stop is 2 ATR and the target 3 ATR away
(risk/reward 1.5), otherwise both are None and the strategy's percentages apply.
Same input -> same output.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Final

from models.strategy import IndicatorSpec
from services.llm.context import MarketSnapshot
from services.llm.schema import Analysis

__all__ = ["OFFLINE_LABEL", "OFFLINE_MODEL", "offline_analysis"]

OFFLINE_LABEL: Final = "offline analyst (deterministic rules, no LLM)"
OFFLINE_MODEL: Final = "offline-rules-v1"
MOVING_AVERAGES: Final = frozenset({"SMA", "EMA", "WMA", "DEMA", "TEMA", "TRIMA", "KAMA", "T3"})
RSI_LOW: Final = 30.0
RSI_HIGH: Final = 70.0
THRESHOLD: Final = 1 / 3
ATR_STOP: Final = Decimal(2)
ATR_TARGET: Final = Decimal(3)
DEFAULT_HORIZON_BARS: Final = 5


@dataclass(frozen=True)
class _Vote:
    weight: int
    direction: int  # +1 up, -1 down, 0 neutral
    text: str


def _period_of(prefix: str, specs: dict[str, IndicatorSpec]) -> float:
    spec = specs.get(prefix)
    if spec is not None:
        return float(spec.params.get("timeperiod", 30))
    digits = "".join(ch for ch in prefix.rsplit("_", 1)[-1] if ch.isdigit())
    return float(digits) if digits else 30.0


def _trend(snap: MarketSnapshot, close: float, specs: dict[str, IndicatorSpec]) -> _Vote | None:
    mas = sorted(
        (
            (_period_of(c.prefix, specs), c.name, v)
            for c in snap.columns
            if c.function in MOVING_AVERAGES
            for v in [snap.latest.get(c.name)]
            if v is not None
        ),
    )
    if not mas:
        return None
    if len(mas) == 1:
        _, name, value = mas[0]
        direction = 1 if close > value else -1 if close < value else 0
        return _Vote(
            1,
            direction,
            f"close {close:.2f} {'above' if direction > 0 else 'below' if direction < 0 else 'at'} {name} {value:.2f}",
        )
    (_, fast_name, fast), (_, slow_name, slow) = mas[0], mas[-1]
    if fast > slow and close > slow:
        return _Vote(2, 1, f"uptrend: {fast_name} {fast:.2f} > {slow_name} {slow:.2f}, close above")
    if fast < slow and close < slow:
        return _Vote(2, -1, f"downtrend: {fast_name} {fast:.2f} < {slow_name} {slow:.2f}, close below")
    return _Vote(2, 0, f"no clear trend: {fast_name} {fast:.2f}, {slow_name} {slow:.2f}, close {close:.2f}")


def _rsi(snap: MarketSnapshot) -> _Vote | None:
    values = snap.values_of("RSI")
    if not values:
        return None
    col, rsi = values[0]
    if rsi < RSI_LOW:
        return _Vote(1, 1, f"{col.name} {rsi:.1f} oversold (< {RSI_LOW:.0f})")
    if rsi > RSI_HIGH:
        return _Vote(1, -1, f"{col.name} {rsi:.1f} overbought (> {RSI_HIGH:.0f})")
    return _Vote(1, 0, f"{col.name} {rsi:.1f} neutral")


def _bollinger(snap: MarketSnapshot, close: float) -> _Vote | None:
    bands = {col.output: value for col, value in snap.values_of("BBANDS")}
    if "upperband" not in bands or "lowerband" not in bands:
        return None
    upper, lower = bands["upperband"], bands["lowerband"]
    if close < lower:
        return _Vote(1, 1, f"close below lower Bollinger band {lower:.2f}")
    if close > upper:
        return _Vote(1, -1, f"close above upper Bollinger band {upper:.2f}")
    width = upper - lower
    pct_b = (close - lower) / width if width > 0 else 0.5
    return _Vote(1, 0, f"close inside Bollinger bands (%b {pct_b:.2f})")


def _macd(snap: MarketSnapshot) -> _Vote | None:
    parts = {col.output: value for col, value in snap.values_of("MACD")}
    if "macdhist" in parts:
        hist = parts["macdhist"]
    elif "macd" in parts and "macdsignal" in parts:
        hist = parts["macd"] - parts["macdsignal"]
    else:
        return None
    direction = 1 if hist > 0 else -1 if hist < 0 else 0
    return _Vote(1, direction, f"MACD histogram {hist:+.3f}")


def _atr(snap: MarketSnapshot) -> Decimal | None:
    values = snap.values_of("ATR") or snap.values_of("NATR")
    if not values or values[0][1] <= 0:
        return None
    col, value = values[0]
    if col.function == "NATR":  # percent of close
        return Decimal(repr(round(value, 6))) / 100 * snap.last_close
    return Decimal(repr(round(value, 6)))


def offline_analysis(snap: MarketSnapshot, specs: list[IndicatorSpec] | tuple[IndicatorSpec, ...] = ()) -> Analysis:
    """Return the deterministic analysis of ``snap`` (``specs`` give the moving-average periods when aliased)."""
    close = float(snap.last_close)
    by_prefix = {s.column_prefix: s for s in specs}
    votes = [v for v in (_trend(snap, close, by_prefix), _rsi(snap), _bollinger(snap, close), _macd(snap)) if v]
    if not votes:
        return Analysis(
            action="HOLD",
            confidence=0.0,
            reasoning=f"{OFFLINE_LABEL}: no usable indicator values (none present or all still warming up)",
            entry=snap.last_close,
            horizon_bars=DEFAULT_HORIZON_BARS,
        )
    total = sum(v.weight for v in votes)
    score = sum(v.weight * v.direction for v in votes) / total
    action = "BUY" if score >= THRESHOLD else "SELL" if score <= -THRESHOLD else "HOLD"
    confidence = round(0.5 + 0.45 * abs(score), 2) if action != "HOLD" else round(0.5 - 0.45 * abs(score), 2)
    stop = target = None
    atr = _atr(snap)
    if atr is not None and action != "HOLD":
        sign = 1 if action == "BUY" else -1
        stop = (snap.last_close - sign * ATR_STOP * atr).quantize(Decimal("0.0001"))
        target = (snap.last_close + sign * ATR_TARGET * atr).quantize(Decimal("0.0001"))
        if stop <= 0:
            stop = None
    reasons = "; ".join(v.text for v in votes)
    return Analysis(
        action=action,
        confidence=confidence,
        reasoning=f"{OFFLINE_LABEL}: score {score:+.2f} -> {action}. {reasons}"
        + (f"; stop/target at {ATR_STOP}/{ATR_TARGET} ATR ({atr:.4f})" if stop is not None else ""),
        entry=snap.last_close,
        stop=stop,
        target=target,
        horizon_bars=DEFAULT_HORIZON_BARS,
    )
