"""Prompt performance: how good were the signals each prompt template version produced?

For every stored prompt template version (plus any version named by a signal but missing from the store),
:func:`score_prompts` reads the signals up to the end of ``day`` and computes:

* ``signals``, counts ``by_action`` and ``abstain_rate`` (ABSTAIN / all signals);
* per horizon (1, 5, 20 bars by default) over the directional signals (BUY, SELL): ``scored``, ``pending``,
  ``hits``, ``hit_rate`` and ``mean_return``. The forward return at horizon ``h`` is
  ``close[h] / close[0] - 1`` where ``close[0]`` is the close of the signal's bar; a SELL counts short
  (its return is negated). A hit is a signed return > 0. HOLD and ABSTAIN never enter hit rate or return.
  A signal whose ``h`` later bars do not exist yet is PENDING at that horizon, never a loss; one without prices
  (its strategy's bar size unknown, the source raised a ``SkipError``) is ``unscorable``;
* ``calibration``: confidence buckets (0.0-0.5, 0.5-0.6, ..., 0.9-1.0) of the directional signals resolved at
  the calibration horizon (the first horizon unless given): count, mean confidence, hit rate; ``pending`` per bucket;
* LLM cost: the distinct ``llm_calls`` linked by ``signals.llm_call_id``: ``llm_calls``, ``cached_calls``,
  ``llm_cost_usd`` and ``cost_per_signal`` (over all the version's signals), as decimal strings.

Forward prices are injected (:data:`ForwardBars`): :class:`BrokerForwardBars` asks the broker's history (one
request per symbol and bar size, then sliced), :class:`FrameForwardBars` reads canonical bar frames (files, tests).
Each version's result is stored in ``prompt_scores`` (one row per day, name and version; recomputing replaces it).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final, Protocol
from zoneinfo import ZoneInfo

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from models.bars import TIMESTAMP
from models.enums import BarSize, SecType, SignalAction
from models.tables import LlmCall, PromptTemplate, Signal, Strategy
from models.tables import PromptScore as PromptScoreRow
from services.broker.types import BarRequest, ContractInfo, ContractSpec
from services.errors import InputError, Problem, SkipError

__all__ = [
    "CALIBRATION_EDGES",
    "DEFAULT_HORIZONS",
    "BrokerForwardBars",
    "ForwardBars",
    "FrameForwardBars",
    "HistorySource",
    "PromptScore",
    "closes_from",
    "market_day",
    "parse_day",
    "score_prompts",
    "stored_scores",
]

DEFAULT_HORIZONS: Final[tuple[int, ...]] = (1, 5, 20)
CALIBRATION_EDGES: Final[tuple[float, ...]] = (0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
_DIRECTION: Final[dict[SignalAction, int]] = {SignalAction.BUY: 1, SignalAction.SELL: -1}

ForwardBars = Callable[[str, BarSize, dt.datetime, int], Sequence[float]]
"""``(symbol, bar_size, after, n) -> closes``: the close of the bar starting at ``after`` (the signal's bar)
followed by the closes of up to ``n`` later bars, oldest first; shorter when those bars do not exist yet."""

_SOURCE: Final = "prompt scores"
_NEW_YORK: Final = ZoneInfo("America/New_York")


@dataclass(frozen=True)
class PromptScore:
    """The metrics of one template version on one day (``metrics`` is what ``prompt_scores`` stores)."""

    day: dt.date
    template_name: str
    template_version: int
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def signals(self) -> int:
        return int(self.metrics.get("signals", 0))


def market_day(now: dt.datetime | None = None) -> dt.date:
    """The date in New York at ``now`` (default: the current time): the day a scoring run at 18:00 ET covers."""
    return (now or dt.datetime.now(dt.UTC)).astimezone(_NEW_YORK).date()


def parse_day(text: str | None, *, today: dt.date | None = None) -> dt.date:
    """Return the ISO date ``text`` (``today``, else :func:`market_day`, when ``None``); InputError when malformed."""
    if text is None:
        return today or market_day()
    try:
        return dt.date.fromisoformat(text.strip())
    except ValueError:
        raise InputError(_SOURCE, [Problem("day", f"{text!r} is not a date (YYYY-MM-DD)")]) from None


def closes_from(frame: pd.DataFrame, after: dt.datetime, n: int) -> list[float]:
    """Closes of the bars of ``frame`` starting at or after ``after``, at most ``n + 1`` (see :data:`ForwardBars`)."""
    if frame.empty:
        return []
    start = pd.Timestamp(after).tz_convert("UTC") if after.tzinfo else pd.Timestamp(after, tz="UTC")
    stamps = frame[TIMESTAMP]
    position = int(stamps.searchsorted(start, side="left"))
    return [float(c) for c in frame["close"].iloc[position : position + n + 1]]


class FrameForwardBars:
    """Forward closes from canonical bar frames keyed by symbol (the bar size must match, when known)."""

    def __init__(self, frames: Mapping[str, pd.DataFrame], bar_size: BarSize | None = None):
        self._frames = {
            symbol.upper(): frame.sort_values(TIMESTAMP, ignore_index=True) for symbol, frame in frames.items()
        }
        self._bar_size = bar_size

    def __call__(self, symbol: str, bar_size: BarSize, after: dt.datetime, n: int) -> list[float]:
        frame = self._frames.get(symbol.upper())
        if frame is None or (self._bar_size is not None and bar_size != self._bar_size):
            return []
        return closes_from(frame, after, n)


class HistorySource(Protocol):
    """What :class:`BrokerForwardBars` needs of a broker (the synchronous ``SyncBroker`` has it)."""

    def qualify(self, spec: ContractSpec) -> ContractInfo: ...

    def historical_bars(self, contract: ContractInfo, request: BarRequest) -> pd.DataFrame: ...


def ib_duration(start: dt.datetime, now: dt.datetime) -> str:
    """IB duration string covering ``start`` .. ``now`` with a few days' margin (days up to a year, then years)."""
    days = max(1, math.ceil((now - start).total_seconds() / 86_400) + 3)
    return f"{days} D" if days <= 365 else f"{math.ceil(days / 365)} Y"


class BrokerForwardBars:
    """Forward closes from the broker's history: one request per (symbol, bar size), reused for later signals.

    ``score_prompts`` asks in bar-time order, so the first request per symbol covers the earliest signal.
    """

    def __init__(self, broker: HistorySource, clock: Callable[[], dt.datetime] | None = None):
        self._broker = broker
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self._frames: dict[tuple[str, BarSize], tuple[dt.datetime, pd.DataFrame]] = {}
        self._contracts: dict[str, ContractInfo] = {}
        self._failed: dict[str, SkipError] = {}

    def __call__(self, symbol: str, bar_size: BarSize, after: dt.datetime, n: int) -> list[float]:
        key = (symbol.upper(), bar_size)
        failed = self._failed.get(key[0])
        if failed is not None:  # e.g. no such contract: asked once, not once per signal
            raise failed
        cached = self._frames.get(key)
        if cached is None or after < cached[0]:
            try:
                contract = self._contracts.get(key[0])
                if contract is None:
                    contract = self._contracts[key[0]] = self._broker.qualify(ContractSpec(key[0], SecType.STK))
            except SkipError as exc:
                self._failed[key[0]] = exc
                raise
            request = BarRequest(bar_size=bar_size, duration=ib_duration(after, self._clock()), use_rth=True)
            frame = self._broker.historical_bars(contract, request)
            cached = self._frames[key] = (after, frame.sort_values(TIMESTAMP, ignore_index=True))
        return closes_from(cached[1], after, n)


# ---------------------------------------------------------------------------------------------------------------------
# Scoring


@dataclass
class _Outcome:
    action: SignalAction
    confidence: float | None
    signed: dict[int, float | None]  # horizon -> signed forward return, None = pending
    scorable: bool = True  # False: no prices at all (unknown bar size, unknown contract): neither scored nor pending


def _bucket_label(low: float, high: float) -> str:
    return f"{low:.1f}-{high:.1f}"


def _bucket(confidence: float) -> int:
    for index in range(len(CALIBRATION_EDGES) - 1):
        if confidence < CALIBRATION_EDGES[index + 1]:
            return index
    return len(CALIBRATION_EDGES) - 2  # 1.0 belongs to the last bucket


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _mean(values: Sequence[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None


def _bar_sizes(session: Session) -> dict[str, BarSize]:
    return {name: BarSize(size) for name, size in session.execute(select(Strategy.name, Strategy.bar_size)).all()}


def _bar_size_of(signal: Signal, known: Mapping[str, BarSize]) -> BarSize | None:
    if signal.strategy_name in known:
        return known[signal.strategy_name]
    raw = (signal.details or {}).get("bar_size")
    try:
        return BarSize(raw) if raw is not None else None
    except ValueError:
        return None


def _metrics(
    outcomes: Sequence[_Outcome],
    unscorable: int,
    calls: Sequence[LlmCall],
    horizons: Sequence[int],
    calibration_horizon: int,
) -> dict[str, Any]:
    total = len(outcomes)
    by_action = {action.value: sum(1 for o in outcomes if o.action == action) for action in SignalAction}
    directional = [o for o in outcomes if o.action in _DIRECTION]
    scorable = [o for o in directional if o.scorable]
    per_horizon: dict[str, Any] = {}
    for h in horizons:
        returns = [r for r in (o.signed.get(h) for o in scorable) if r is not None]
        hits = sum(1 for r in returns if r > 0)
        per_horizon[str(h)] = {
            "scored": len(returns),
            "pending": len(scorable) - len(returns),
            "hits": hits,
            "hit_rate": _rate(hits, len(returns)),
            "mean_return": _mean(returns),
        }
    calibration: list[dict[str, Any]] = []
    for index in range(len(CALIBRATION_EDGES) - 1):
        members = [o for o in scorable if o.confidence is not None and _bucket(o.confidence) == index]
        done = [(o.confidence, o.signed.get(calibration_horizon)) for o in members]
        resolved_pairs = [(c, r) for c, r in done if c is not None and r is not None]
        hits = sum(1 for _, r in resolved_pairs if r > 0)
        calibration.append(
            {
                "bucket": _bucket_label(CALIBRATION_EDGES[index], CALIBRATION_EDGES[index + 1]),
                "count": len(resolved_pairs),
                "pending": len(members) - len(resolved_pairs),
                "mean_confidence": _mean([c for c, _ in resolved_pairs]),
                "hit_rate": _rate(hits, len(resolved_pairs)),
            }
        )
    cost = sum((Decimal(c.cost_usd) for c in calls), Decimal(0))
    return {
        "signals": total,
        "by_action": by_action,
        "abstain_rate": _rate(by_action[SignalAction.ABSTAIN.value], total),
        "directional": len(directional),
        "unscorable": unscorable,
        "horizons": per_horizon,
        "calibration_horizon": calibration_horizon,
        "calibration": calibration,
        "llm_calls": len(calls),
        "cached_calls": sum(1 for c in calls if c.cached),
        "llm_cost_usd": str(cost),
        "cost_per_signal": str((cost / total).quantize(Decimal("0.000001"))) if total else None,
    }


def score_prompts(
    session: Session,
    day: dt.date,
    forward_bars: ForwardBars,
    horizons: Sequence[int] = DEFAULT_HORIZONS,
    *,
    calibration_horizon: int | None = None,
    store: bool = True,
) -> list[PromptScore]:
    """Score every prompt template version from its signals with ``bar_time`` before the end of ``day`` (UTC).

    Returns one :class:`PromptScore` per version, sorted by name and version, and upserts them into
    ``prompt_scores`` for ``day`` (unless ``store=False``). Raises :class:`InputError` for bad horizons.
    """
    problems: list[Problem] = []
    if not horizons or any(not isinstance(h, int) or h < 1 for h in horizons):
        problems.append(Problem("horizons", f"must be positive bar counts, got {list(horizons)!r}"))
    chosen = horizons[0] if calibration_horizon is None and horizons else calibration_horizon
    if chosen not in horizons:
        problems.append(Problem("calibration_horizon", f"{calibration_horizon!r} is not one of the horizons"))
    if problems:
        raise InputError(_SOURCE, problems)
    assert chosen is not None
    ordered = sorted(set(horizons))
    longest = ordered[-1]
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)

    versions: set[tuple[str, int]] = set(session.execute(select(PromptTemplate.name, PromptTemplate.version)).tuples())
    signals = session.scalars(
        select(Signal)
        .where(Signal.prompt_template_name.is_not(None), Signal.prompt_template_version.is_not(None))
        .where(Signal.bar_time < end)
        .order_by(Signal.bar_time, Signal.id)
    ).all()
    known_sizes = _bar_sizes(session)
    grouped: dict[tuple[str, int], list[_Outcome]] = {v: [] for v in versions}
    unscorable: dict[tuple[str, int], int] = {}
    call_ids: dict[tuple[str, int], set[int]] = {}
    for signal in signals:
        assert signal.prompt_template_name is not None and signal.prompt_template_version is not None
        version = (signal.prompt_template_name, signal.prompt_template_version)
        signed: dict[int, float | None] = dict.fromkeys(ordered)
        scorable = True
        direction = _DIRECTION.get(signal.action)
        if direction is not None:
            size = _bar_size_of(signal, known_sizes)
            closes: list[float] = []
            if size is None:
                scorable = False
            else:
                try:
                    closes = list(forward_bars(signal.symbol, size, signal.bar_time, longest))
                except SkipError:  # no such contract, unusable data: not scorable, never a loss
                    scorable = False
            for h in ordered:
                if len(closes) > h and closes[0] > 0:
                    signed[h] = direction * (closes[h] / closes[0] - 1.0)
            if not scorable:
                unscorable[version] = unscorable.get(version, 0) + 1
        grouped.setdefault(version, []).append(_Outcome(signal.action, signal.confidence, signed, scorable))
        if signal.llm_call_id is not None:
            call_ids.setdefault(version, set()).add(signal.llm_call_id)
    all_ids = set().union(*call_ids.values()) if call_ids else set()
    calls = {c.id: c for c in session.scalars(select(LlmCall).where(LlmCall.id.in_(all_ids))).all()} if all_ids else {}

    scores = [
        PromptScore(
            day,
            name,
            version,
            _metrics(
                grouped[(name, version)],
                unscorable.get((name, version), 0),
                [calls[i] for i in sorted(call_ids.get((name, version), set())) if i in calls],
                ordered,
                chosen,
            ),
        )
        for name, version in sorted(grouped)
    ]
    if store:
        _upsert(session, scores)
    return scores


def _upsert(session: Session, scores: Sequence[PromptScore]) -> None:
    if not scores:
        return
    day = scores[0].day
    existing = {
        (row.template_name, row.template_version): row
        for row in session.scalars(select(PromptScoreRow).where(PromptScoreRow.day == day)).all()
    }
    for score in scores:
        row = existing.get((score.template_name, score.template_version))
        if row is None:
            session.add(
                PromptScoreRow(
                    day=score.day,
                    template_name=score.template_name,
                    template_version=score.template_version,
                    metrics=score.metrics,
                )
            )
        else:
            row.metrics = score.metrics
    session.flush()


def stored_scores(session: Session, *, day: dt.date | None = None, template: str | None = None) -> list[PromptScore]:
    """Stored scores, newest day first, then by name and version (filtered by ``day`` / ``template``)."""
    query = select(PromptScoreRow)
    if day is not None:
        query = query.where(PromptScoreRow.day == day)
    if template is not None:
        query = query.where(PromptScoreRow.template_name == template)
    query = query.order_by(PromptScoreRow.day.desc(), PromptScoreRow.template_name, PromptScoreRow.template_version)
    return [
        PromptScore(row.day, row.template_name, row.template_version, dict(row.metrics))
        for row in session.scalars(query).all()
    ]
