"""Step 6: turn an analysis outcome into a signal: BUY / SELL / HOLD / ABSTAIN, always with a reason.

Checks, in order (the first that applies decides):

1. the newest bar is flagged invalid -> ABSTAIN;
2. the data is stale (see :func:`data_age_bars`) or from the future -> ABSTAIN;
3. the analysis failed (malformed, off-schema, refusal, timeout, HTTP error after retries, budget stop) ->
   ABSTAIN with the failure's kind and reason;
4. the analyst said HOLD -> HOLD with its reasoning;
5. BUY/SELL: entry = the analysis' entry or the newest usable close (an entry more than 10 % away from that
   close -> ABSTAIN: not a price for this bar); missing stop/target are filled from
   ``risk.stop_loss_pct`` / ``risk.take_profit_pct``; still missing -> ABSTAIN (no risk/reward without them);
6. stop/target on the wrong side of entry (BUY needs stop < entry < target, SELL the mirror) -> ABSTAIN;
7. confidence below ``rules.min_confidence`` -> **HOLD** with ``"confidence x < min y"``: the analysis is
   valid, just not convincing enough to act on, so the strategy holds (not ABSTAIN, which means "no usable
   view");
8. risk/reward = |target - entry| / |entry - stop| (``Decimal``) below ``rules.min_risk_reward`` -> HOLD
   with ``"risk/reward x < min y"``.

Otherwise the analyst's action stands.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Final

import pandas as pd

from models.enums import AnalystKind, BarSize, SignalAction
from models.strategy import BAR_SECONDS, StrategyDefinition
from services.events import EventKind, TraderEvent, strategy_resource
from services.llm.outcome import AnalysisOutcome

__all__ = ["Signal", "abstain_streak_event", "data_age_bars", "generate_signal"]

_HUNDRED: Final = Decimal(100)
_PRICE_Q: Final = Decimal("0.0001")
_RR_Q: Final = Decimal("0.01")
# An entry further than this from the newest close is not a price for this bar (a hallucinated or stale level).
MAX_ENTRY_DEVIATION: Final = Decimal("0.10")
# A bar stamped slightly after "now" is clock skew; more than this is bad data.
FUTURE_TOLERANCE: Final = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class Signal:
    """One strategy run's decision. Prices in the instrument's currency; ``bar_time`` is the UTC bar start."""

    action: SignalAction
    reason: str
    analyst: AnalystKind
    bar_time: dt.datetime
    confidence: float | None = None
    entry: Decimal | None = None
    stop: Decimal | None = None
    target: Decimal | None = None
    risk_reward: Decimal | None = None

    def __post_init__(self) -> None:
        if not self.reason.strip():
            raise ValueError("a signal always carries a reason")


def _utc(value: dt.datetime | pd.Timestamp, name: str) -> dt.datetime:
    if type(value) is dt.datetime and value.tzinfo is dt.UTC:
        return value  # already a UTC datetime (the replay's case: no pandas round trip per decision)
    ts = pd.Timestamp(value)
    if ts.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware (UTC), got naive {value!r}")
    utc: dt.datetime = ts.tz_convert("UTC").to_pydatetime()
    return utc


def data_age_bars(last_bar_time: dt.datetime, now: dt.datetime, bar_size: BarSize) -> int:
    """Return how many bars old the newest bar is (0: it started in the current bar/session).

    Daily bars are counted in **weekday sessions**: the number of weekdays from the bar's session date up to
    (not including) today's date, so Friday's bar seen on Monday is 1 bar old, not 3. Exchange holidays are
    counted as sessions, which makes data look at most one bar older around a holiday (conservative).
    Session dates are UTC dates: daily bars are labelled with their session date at 00:00 UTC
    (``services/bars/formats.py``), and a US close (16:00 New York) is still the same UTC date.
    Other sizes: elapsed time since the bar start divided by the bar length (weekly = 7 days, monthly = 30).
    """
    if bar_size is BarSize.DAY_1:
        start, today = last_bar_time.date(), now.date()
        if today <= start:
            return 0
        weeks, rest = divmod((today - start).days, 7)  # what np.busday_count(start, today) counts, in pure Python
        first = start.weekday()
        return weeks * 5 + sum(1 for i in range(rest) if (first + i) % 7 < 5)
    elapsed = (now - last_bar_time).total_seconds()
    return max(0, int(elapsed // BAR_SECONDS[bar_size]))


def _fmt(value: Decimal) -> str:
    return f"{value.quantize(_PRICE_Q).normalize():f}"


def _from_pct(entry: Decimal, pct: Decimal | None, sign: int) -> Decimal | None:
    if pct is None:
        return None
    return (entry * (1 + sign * pct / _HUNDRED)).quantize(_PRICE_Q, rounding=ROUND_HALF_UP)


def generate_signal(
    outcome: AnalysisOutcome,
    definition: StrategyDefinition,
    *,
    last_bar_time: dt.datetime | pd.Timestamp,
    now: dt.datetime,
    bar_size: BarSize | None = None,
    flagged_latest: bool,
) -> Signal:
    """Apply the strategy's rules to ``outcome``; see the module docstring for the order of checks."""
    bar_time = _utc(last_bar_time, "last_bar_time")
    now_utc = _utc(now, "now")
    size = bar_size or definition.bar_size
    rules = definition.rules

    def abstain(reason: str) -> Signal:
        return Signal(SignalAction.ABSTAIN, reason, outcome.analyst, bar_time)

    if flagged_latest:
        return abstain("newest bar is flagged invalid by validation; no decision on bad data")
    if bar_time > now_utc + FUTURE_TOLERANCE:
        return abstain(f"newest bar {bar_time.isoformat()} is in the future (now {now_utc.isoformat()})")
    age = data_age_bars(bar_time, now_utc, size)
    if age > rules.max_data_age_bars:
        return abstain(
            f"stale data: newest bar {bar_time.isoformat()} is {age} bars old (max {rules.max_data_age_bars})"
        )
    if outcome.failure is not None or outcome.analysis is None:
        return abstain(f"analysis failed: {outcome.failure}")
    analysis = outcome.analysis
    confidence = analysis.confidence
    if analysis.action == "HOLD":
        return Signal(
            SignalAction.HOLD,
            f"analyst says HOLD: {analysis.reasoning}",
            outcome.analyst,
            bar_time,
            confidence=confidence,
            entry=analysis.entry or outcome.reference_price,
        )

    action = SignalAction(analysis.action)
    sign = 1 if action is SignalAction.BUY else -1
    entry = analysis.entry or outcome.reference_price
    stop = analysis.stop or _from_pct(entry, definition.risk.stop_loss_pct, -sign)
    target = analysis.target or _from_pct(entry, definition.risk.take_profit_pct, sign)
    deviation = abs(entry - outcome.reference_price) / outcome.reference_price
    if deviation > MAX_ENTRY_DEVIATION:
        return abstain(
            f"{action.value} entry {_fmt(entry)} is {deviation * 100:.1f} % away from the last close "
            f"{_fmt(outcome.reference_price)} (max {MAX_ENTRY_DEVIATION * 100:.0f} %): not a price for this bar"
        )
    if stop is None or target is None:
        missing = " and ".join(n for n, v in (("stop", stop), ("target", target)) if v is None)
        return abstain(
            f"{action.value} without {missing}: the analysis gave none and risk.stop_loss_pct / "
            "risk.take_profit_pct are not set, so risk/reward cannot be computed"
        )
    wrong = []
    if sign * (entry - stop) <= 0:
        wrong.append(f"stop {_fmt(stop)} is not {'below' if sign > 0 else 'above'} entry {_fmt(entry)}")
    if sign * (target - entry) <= 0:
        wrong.append(f"target {_fmt(target)} is not {'above' if sign > 0 else 'below'} entry {_fmt(entry)}")
    if wrong:
        return abstain(f"{action.value} with inconsistent levels: {'; '.join(wrong)}")

    risk_reward = (abs(target - entry) / abs(entry - stop)).quantize(_RR_Q, rounding=ROUND_HALF_UP)

    def decided(act: SignalAction, reason: str) -> Signal:
        return Signal(act, reason, outcome.analyst, bar_time, confidence, entry, stop, target, risk_reward)

    if Decimal(repr(confidence)) < rules.min_confidence:
        return decided(
            SignalAction.HOLD, f"{action.value} not taken: confidence {confidence:.2f} < min {rules.min_confidence}"
        )
    if risk_reward < rules.min_risk_reward:
        return decided(
            SignalAction.HOLD, f"{action.value} not taken: risk/reward {risk_reward} < min {rules.min_risk_reward}"
        )
    return decided(action, f"{action.value}: {analysis.reasoning}")


def abstain_streak_event(
    strategy_name: str, symbol: str, recent: Sequence[SignalAction], streak: int, reason: str
) -> TraderEvent | None:
    """The ABSTAIN_STREAK event when the newest ``streak`` of ``recent`` (the strategy's signals, newest first,
    this run's included) are ABSTAIN and the one before is not: told once per streak, on its ``streak``-th run;
    ``streak`` 0 is off."""
    newest = list(recent[: streak + 1])
    if streak < 1 or len(newest) < streak or any(a is not SignalAction.ABSTAIN for a in newest[:streak]):
        return None
    if len(newest) > streak and newest[streak] is SignalAction.ABSTAIN:
        return None  # the streak is longer: already told
    told = f"{strategy_name} ({symbol}): {streak} ABSTAIN signals in a row; last: {reason}"
    payload = {"strategy": strategy_name, "symbol": symbol, "streak": streak, "reason": reason}
    return TraderEvent(EventKind.ABSTAIN_STREAK, strategy_resource(strategy_name), told, payload)
