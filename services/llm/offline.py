"""The OFFLINE analyst: deterministic rules over the latest indicator values, no LLM, no I/O.

It is one rule set of :mod:`services.rules` (the strategy's ``decision.rules`` replace it when given): the rules
below are written in the rule language for the indicators the strategy has, and voted like any other rules.
Used when no API key is configured, and as the rules side of a combined decision (``services/decision.py``).
It returns the same :class:`~services.llm.schema.Analysis` as the LLM, and its reasoning starts with
:data:`OFFLINE_LABEL` so nobody mistakes it for a model's view.

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

from collections.abc import Sequence
from decimal import Decimal
from functools import lru_cache
from typing import Final

from models.rule_expr import PREVIOUS_PREFIX
from models.strategy import DEFAULT_RULES_THRESHOLD, IndicatorSpec, Rule
from services.indicators import IndicatorColumn
from services.llm.context import MarketSnapshot
from services.llm.schema import MAX_REASONING_CHARS, Analysis
from services.rules import RulesVerdict, evaluate_rules

__all__ = [
    "OFFLINE_LABEL",
    "OFFLINE_MODEL",
    "default_rules",
    "default_rules_for",
    "offline_analysis",
    "rule_values",
    "rules_analysis",
]

OFFLINE_LABEL: Final = "offline analyst (deterministic rules, no LLM)"
OFFLINE_MODEL: Final = "offline-rules-v1"
MOVING_AVERAGES: Final = frozenset({"SMA", "EMA", "WMA", "DEMA", "TEMA", "TRIMA", "KAMA", "T3"})
RSI_LOW: Final = 30.0
RSI_HIGH: Final = 70.0
THRESHOLD: Final = DEFAULT_RULES_THRESHOLD
ATR_STOP: Final = Decimal(2)
ATR_TARGET: Final = Decimal(3)
DEFAULT_HORIZON_BARS: Final = 5


def _period_of(prefix: str, specs: dict[str, IndicatorSpec]) -> float:
    spec = specs.get(prefix)
    if spec is not None:
        return float(spec.params.get("timeperiod", 30))
    digits = "".join(ch for ch in prefix.rsplit("_", 1)[-1] if ch.isdigit())
    return float(digits) if digits else 30.0


def _rule(when: str, action: str, weight: float, name: str, group: str) -> Rule:
    return Rule.model_validate({"when": when, "action": action, "weight": weight, "name": name, "group": group})


@lru_cache(maxsize=256)
def _rules_for(
    mas: tuple[str, ...], rsi: str | None, bands: tuple[str, str] | None, macd: tuple[str, ...] | None
) -> tuple[Rule, ...]:
    rules: list[Rule] = []
    if len(mas) == 1:
        (ma,) = mas
        rules += [
            _rule(f"close > {ma}", "BUY", 1, f"close above {ma}", "trend"),
            _rule(f"close < {ma}", "SELL", 1, f"close below {ma}", "trend"),
        ]
    elif mas:
        fast, slow = mas[0], mas[-1]
        rules += [
            _rule(f"{fast} > {slow} and close > {slow}", "BUY", 2, "uptrend", "trend"),
            _rule(f"{fast} < {slow} and close < {slow}", "SELL", 2, "downtrend", "trend"),
        ]
    if rsi is not None:
        rules += [
            _rule(f"{rsi} < {RSI_LOW:g}", "BUY", 1, f"{rsi} oversold", "rsi"),
            _rule(f"{rsi} > {RSI_HIGH:g}", "SELL", 1, f"{rsi} overbought", "rsi"),
        ]
    if bands is not None:
        upper, lower = bands
        rules += [
            _rule(f"close < {lower}", "BUY", 1, "close below the lower Bollinger band", "bollinger"),
            _rule(f"close > {upper}", "SELL", 1, "close above the upper Bollinger band", "bollinger"),
        ]
    if macd is not None:
        up, down = (f"{macd[0]} > 0", f"{macd[0]} < 0") if len(macd) == 1 else (
            f"{macd[0]} > {macd[1]}", f"{macd[0]} < {macd[1]}")  # fmt: skip
        rules += [
            _rule(up, "BUY", 1, "MACD histogram positive", "macd"),
            _rule(down, "SELL", 1, "MACD histogram negative", "macd"),
        ]
    return tuple(rules)


def default_rules(snap: MarketSnapshot, specs: Sequence[IndicatorSpec] = ()) -> tuple[Rule, ...]:
    """The offline analyst's rules for the indicators of ``snap`` that have a value (see the module docstring)."""
    return default_rules_for(snap.columns, frozenset(n for n, v in snap.latest.items() if v is not None), specs)


def default_rules_for(
    columns: Sequence[IndicatorColumn], available: frozenset[str], specs: Sequence[IndicatorSpec] = ()
) -> tuple[Rule, ...]:
    """The offline analyst's rules when the indicator columns named in ``available`` have a value."""
    by_prefix = {s.column_prefix: s for s in specs}
    mas = sorted(
        (_period_of(c.prefix, by_prefix), c.name)
        for c in columns
        if c.function in MOVING_AVERAGES and c.name in available
    )
    ma_names = (mas[0][1],) if len(mas) == 1 else (mas[0][1], mas[-1][1]) if mas else ()
    rsi = [c.name for c in columns if c.function == "RSI" and c.name in available]
    bands = {c.output: c.name for c in columns if c.function == "BBANDS" and c.name in available}
    macd = {c.output: c.name for c in columns if c.function == "MACD" and c.name in available}
    macd_names: tuple[str, ...] | None = None
    if "macdhist" in macd:
        macd_names = (macd["macdhist"],)
    elif "macd" in macd and "macdsignal" in macd:
        macd_names = (macd["macd"], macd["macdsignal"])
    return _rules_for(
        ma_names,
        rsi[0] if rsi else None,
        (bands["upperband"], bands["lowerband"]) if "upperband" in bands and "lowerband" in bands else None,
        macd_names,
    )


def rule_values(snap: MarketSnapshot) -> dict[str, float | None]:
    """What a rule reads: the newest usable bar's indicator values and its ``close``, and the bar's before it
    under ``prev:<name>`` (for ``crosses_above`` / ``crosses_below``)."""
    values = {**snap.latest, "close": float(snap.last_close)}
    values.update((PREVIOUS_PREFIX + name, value) for name, value in snap.previous.items())
    return values


def _atr(snap: MarketSnapshot) -> Decimal | None:
    values = snap.values_of("ATR") or snap.values_of("NATR")
    if not values or values[0][1] <= 0:
        return None
    col, value = values[0]
    if col.function == "NATR":  # percent of close
        return Decimal(repr(round(value, 6))) / 100 * snap.last_close
    return Decimal(repr(round(value, 6)))


def rules_analysis(
    snap: MarketSnapshot,
    specs: Sequence[IndicatorSpec] = (),
    rules: Sequence[Rule] = (),
    *,
    threshold: float = THRESHOLD,
) -> tuple[RulesVerdict, Analysis]:
    """The vote of ``rules`` (none: :func:`default_rules`) on ``snap``, and the analysis it makes.

    ``specs`` give the moving-average periods when aliased.
    """
    chosen = tuple(rules) or default_rules(snap, specs)
    verdict = evaluate_rules(chosen, rule_values(snap), threshold=threshold)
    if not verdict.votes:
        return verdict, Analysis(
            action="HOLD",
            confidence=0.0,
            reasoning=f"{OFFLINE_LABEL}: no usable indicator values (none present or all still warming up)",
            entry=snap.last_close,
            horizon_bars=DEFAULT_HORIZON_BARS,
        )
    action, stop, target, atr = verdict.action, None, None, _atr(snap)
    if atr is not None and action != "HOLD":
        sign = 1 if action == "BUY" else -1
        stop = (snap.last_close - sign * ATR_STOP * atr).quantize(Decimal("0.0001"))
        target = (snap.last_close + sign * ATR_TARGET * atr).quantize(Decimal("0.0001"))
        if stop <= 0:
            stop = None
    return verdict, Analysis(
        action=action,
        confidence=verdict.confidence,
        reasoning=(
            f"{OFFLINE_LABEL}: score {verdict.score:+.2f} -> {action}. {verdict.text}"
            + (f"; stop/target at {ATR_STOP}/{ATR_TARGET} ATR ({atr:.4f})" if stop is not None else "")
        )[:MAX_REASONING_CHARS],
        entry=snap.last_close,
        stop=stop,
        target=target,
        horizon_bars=DEFAULT_HORIZON_BARS,
    )


def offline_analysis(
    snap: MarketSnapshot,
    specs: Sequence[IndicatorSpec] = (),
    rules: Sequence[Rule] = (),
    *,
    threshold: float = THRESHOLD,
) -> Analysis:
    """Return the deterministic analysis of ``snap``: the vote of ``rules`` (none: the default rules)."""
    return rules_analysis(snap, specs, rules, threshold=threshold)[1]
