"""Replay a strategy over historical bars with its own step functions, then fill, book and measure.

At every decision point (a bar between ``start`` and ``end``, every ``decide_every`` bars) the engine sees the
bars up to and including that bar only, and runs the strategy's steps: validation flags (computed on the bars up
to ``end``; the rules are per row or look back, never forward), indicators, the chart only for the LLM analyst,
the analysis, :func:`services.signals.generate_signal` and the order plan
(:func:`services.orders.planning.plan_order`: position rule, sizing and the risk checks that need no account).
Orders fill on later bars by the market model (:mod:`services.market`).

**No look-ahead, computed once.** TA-Lib indicators are causal: the value at bar ``t`` depends only on bars
``<= t`` (with the same first bar). So the indicators are computed ONCE over the bars up to ``end`` and each
decision reads row ``t``; ``tests/test_replay.py`` proves this equals recomputing on the truncated frame, and that
changing bars after a decision point never changes that decision.

**Offline analyst.** The deterministic offline analyst (the strategy's rules, ``services/decision.py``) reads only the
market snapshot (newest usable bar and its indicator values), so for it the engine builds the snapshot directly from
the precomputed rows (the same values :func:`services.llm.context.snapshot_from` gives on the truncated frame, also
proven in the tests) and renders no prompt and no chart.

**Passing over the bars where nothing can happen.** The rules are voted over every bar at once
(:meth:`services.rules.RuleSet.directions`, the one evaluator). A decision is made while the replay runs only where
it can place an order (a BUY vote while flat or short, a SELL vote while long, or flat with ``allow_short``:
:func:`services.orders.planning.order_possible`; a time exit coming due; every decision of an LLM replay); the loop
jumps from one bar that can change something to the next (that decision, a touch of the position's stop or target,
every bar while an order is pending or a stop trails), marking the bars in between to close exactly. The other
decisions (HOLD votes give HOLD or ABSTAIN, a BUY while long is pyramiding) are made when first read
(:class:`Decisions`, the same function on the book as it was on their bar). ``tests/test_replay_events.py`` shows
the results are the same exactly as with every decision made on its bar (``MAKE_EVERY_DECISION``). 20 years of
daily bars replay in about 0.06 s of CPU, one-minute bars at about 115,000 a second (``benchmarks/bench_replay.py``).

**LLM analyst.** Each decision builds the real request (:func:`services.llm.analyst.build_request` over the
strategy's lookback window), renders the chart, and calls :func:`services.llm.analyst.analyze`, so responses
are cached (sha256 of model, prompt and image): a replay that ran once reruns at zero cost with identical
results. Before the first call the engine counts the calls that are NOT cached, estimates their cost and
refuses (``InputError``) when it exceeds what is left of today's budget. Decisions dated before the model's
training cutoff (:mod:`services.replay.cutoffs`) are marked ``possibly_contaminated``.

**Positions and orders** follow THE order decision, :func:`services.orders.planning.plan_order` (the one live
and dry-run call too): one position at a time, no pyramiding; a BUY when flat opens a long, a SELL when flat opens
a short only with ``risk.allow_short``; a BUY while long (SELL while short) places nothing; a signal against the
position closes it whole and opens nothing (the other side opens on a later signal, from flat). Limits, stops and
targets are rounded to ``min_tick`` (default ``PRICE_Q``). Equity is ``cash + position * close`` at each bar's
close. Money that is booked (fills, commissions, cash) is ``Decimal``.

**Fills** (the rules of :mod:`services.market.matching`, re-implemented independently in the tests):

* A decision is made on the CLOSE of bar ``i``; its order can fill from bar ``i + 1`` on.
* **Market** orders fill at the next bar's open, worsened by ``slippage_bps`` (a BUY pays
  ``open * (1 + bps / 10_000)``, a SELL receives ``open * (1 - bps / 10_000)``).
* **Limit** orders fill when a bar crosses the limit: a BUY when ``low <= limit`` at ``min(open, limit)``, a SELL
  when ``high >= limit`` at ``max(open, limit)``, without slippage. A DAY limit lives for the next bar only; a
  GTC limit until it fills or the next decision replaces it.
* **Stops and targets** of an open position are checked on every bar after the entry fill, the entry bar
  included (a market entry fills at the open, the rest of the bar comes after it), as a stop / limit bracket
  (:func:`services.market.matching.bracket_exit`): a long exits at ``min(open, stop)`` when ``low <= stop``
  (slipped like a market order), else at ``max(open, target)`` when ``high >= target``; a short mirrors; when
  both are touched the stop wins. A trailing stop (``risk.trailing_stop``) is checked at its level before the bar,
  then follows the bar's high (a long; a short its low) on the ``min_tick`` grid.
* **Order within a bar** (the bar's time order, as the simulator matches): a pending market order fills at the
  open first; then the position's stop / target; then a pending limit (a limit that closes the position is
  dropped if the stop or target closed it first); a position a limit opened is then checked against the rest of
  its entry bar.
* **Time exit** (``risk.max_holding_bars``, :func:`services.orders.planning.plan_time_exit`): a decision that finds
  the position held that many bars (its entry's bar included) places a market close instead of the signal's
  order; it fills at the next bar's open (exit kind ``time``).
* **Commissions** follow IB's fixed schedule (:func:`services.market.commission.ib_fixed_commission`), per order.
* Prices are ``Decimal`` with 4 places (``PRICE_Q``: adjusted historical prices are not on the exchange's tick
  grid).

**Prices.** With ``adjust=True`` (default) and an ``adj_close`` column, open/high/low/close are scaled by
``adj_close / close`` (dividend- and split-adjusted prices, so returns include dividends and splits are not
crashes); volume is divided by the same factor.
"""

from __future__ import annotations

import datetime as dt
import gc
import math
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from functools import partial
from typing import Any, Final, Literal, overload

import numpy as np
import pandas as pd

from models.bars import FLAGGED, TIMESTAMP
from models.enums import (
    AnalystKind,
    DecisionPolicy,
    ExitKind,
    LlmProvider,
    OrderSide,
    OrderType,
    RunMode,
    SignalAction,
    TimeInForce,
)
from models.rule_expr import PREVIOUS_PREFIX
from models.strategy import BAR_SECONDS, StrategyDefinition, duration_seconds
from services.bars.validation import ValidatedHistory, validate_bars
from services.decision import rules_decision
from services.errors import InputError, Problem
from services.indicators import IndicatorResult, compute_indicators
from services.llm.analyst import AnalysisRequest, ChatBackend, analyze, build_request, cache_key, image_for
from services.llm.context import MarketSnapshot
from services.llm.offline import OFFLINE_MODEL, default_rules_for
from services.llm.outcome import AnalysisOutcome
from services.llm.pricing import call_cost
from services.llm.prompts import RenderedPrompt, load_template
from services.llm.store import LlmCallStore, budgets_today
from services.market import (
    Bar,
    Slippage,
    Trail,
    bar_price,
    bracket_exit,
    ib_fixed_commission,
    price_ticks,
    to_price,
    trail_stop,
)
from services.orders.planning import OrderPlan, order_possible, plan_order, plan_time_exit, sizing_atr
from services.replay.cutoffs import possibly_contaminated
from services.replay.metrics import Metrics, compute_metrics
from services.rules import rule_set
from services.settings import Settings
from services.signals import Signal, generate_signal

__all__ = [
    "PRICE_Q",
    "Decision",
    "FillRecord",
    "PendingOrder",
    "PlacedOrder",
    "ReplayResult",
    "Trade",
    "adjust_prices",
    "exit_kind",
    "prepare_bars",
    "replay",
]

AnalystChoice = Literal["offline", "llm"]
Progress = Callable[[int, int], None]

SIZE_INCREMENT: Final = Decimal(1)
# Estimated completion tokens of one analysis (JSON answer) for the budget pre-check.
EST_COMPLETION_TOKENS: Final = 400
EST_IMAGE_TOKENS: Final = 1_500
_PLACEHOLDER_PROMPT: Final = RenderedPrompt(text="(offline replay: no prompt rendered)", sha256="0" * 64)
PRICE_Q: Final = Decimal("0.0001")
# Tests set this to make every decision while the replay runs (no bar passed over) and compare: the results must
# be the same exactly (tests/test_replay_events.py).
MAKE_EVERY_DECISION = False


def price(value: float) -> Decimal:
    """A float bar price as a 4-place ``Decimal``."""
    return to_price(value, PRICE_Q)


@dataclass(frozen=True)
class PendingOrder:
    """An order decided on bar ``decided_at`` (index), waiting for a later bar."""

    side: OrderSide
    quantity: Decimal
    order_type: OrderType
    tif: TimeInForce
    limit: Decimal | None
    decided_at: int
    closing: Decimal  # the part of ``quantity`` that closes the current position
    stop: Decimal | None  # stop / target for the position the opening part creates
    target: Decimal | None
    reason: str
    trail: Trail | None = None  # the stop trails the price (risk.trailing_stop)


@dataclass(frozen=True)
class Decision:
    """One decision point: the signal and what became of it."""

    bar_time: dt.datetime
    action: SignalAction
    reason: str
    confidence: float | None
    entry: Decimal | None
    stop: Decimal | None
    target: Decimal | None
    order: str | None  # what was placed, or why nothing was
    possibly_contaminated: bool = False
    cached: bool = False
    cost_usd: Decimal = Decimal(0)


@dataclass(frozen=True)
class PlacedOrder:
    """An order a decision placed (on the close of ``bar_time``'s bar): the entry and its bracket's prices."""

    bar_time: dt.datetime
    side: OrderSide
    quantity: Decimal
    order_type: OrderType
    limit: Decimal | None
    stop: Decimal | None
    target: Decimal | None


@dataclass(frozen=True)
class FillRecord:
    bar_time: dt.datetime
    side: OrderSide
    quantity: Decimal
    price: Decimal
    commission: Decimal
    reason: str


@dataclass(frozen=True)
class Trade:
    """One round trip. ``pnl`` is net of both commissions; ``exit_*`` is None for the position open at the end."""

    direction: Literal["long", "short"]
    quantity: Decimal
    entry_time: dt.datetime
    entry_price: Decimal
    exit_time: dt.datetime | None
    exit_price: Decimal | None
    commission: Decimal
    pnl: Decimal | None
    exit_reason: str | None

    @property
    def exit_kind(self) -> ExitKind | None:
        """``stop`` / ``target`` (the bracket), ``signal`` (an opposite signal closed it), ``time``; None: open."""
        return exit_kind(self.exit_reason)


_EXIT_KINDS: Final = frozenset(k.value for k in ExitKind)


def exit_kind(reason: str | None) -> ExitKind | None:
    """The kind of exit a fill reason stands for (``"stop"``, ``"target"``, ``"signal SELL"``, ``"time ..."``)."""
    if reason is None:
        return None
    head = reason.split(" ", 1)[0]
    return ExitKind(head) if head in _EXIT_KINDS else None


@dataclass
class ReplayResult:
    strategy: str
    params: dict[str, Any]
    decisions: Sequence[Decision]  # a Decisions in a replay's result (made when read; see Decisions)
    fills: list[FillRecord]
    trades: list[Trade]  # closed round trips
    open_trade: Trade | None
    equity: pd.Series  # float, indexed by bar time (UTC), marked to close
    positions: np.ndarray[Any, np.dtype[np.float64]]
    metrics: Metrics
    orders: list[PlacedOrder] = field(default_factory=list)
    llm_requests: int = 0  # uncached model calls made
    llm_cached: int = 0
    contaminated: int = 0
    warnings: list[str] = field(default_factory=list)

    def exit_counts(self) -> dict[str, int]:
        """Closed trades by exit kind: every kind of :class:`ExitKind`, zero included."""
        counts = {kind.value: 0 for kind in ExitKind}
        for t in self.trades:
            kind = t.exit_kind
            if kind is not None:
                counts[kind.value] += 1
        return counts

    def trades_json(self) -> list[dict[str, Any]]:
        rows = list(self.trades) + ([self.open_trade] if self.open_trade else [])
        return [_jsonable(asdict(t) | {"exit_kind": t.exit_kind}) for t in rows]

    def signal_counts(self, *, made_only: bool = False) -> dict[str, int]:
        """Decisions by signal action. ``made_only``: only the decisions made while the replay ran (those that
        could place an order; see :class:`Decisions`), which costs nothing; else every decision, made now where
        needed (about 0.1 ms each)."""
        chosen = self.decisions.made() if made_only and isinstance(self.decisions, Decisions) else self.decisions
        counts: dict[str, int] = {}
        for d in chosen:
            counts[d.action.value] = counts.get(d.action.value, 0) + 1
        return counts

    def to_json(self, *, equity_points: bool = True, all_signals: bool = False) -> dict[str, Any]:
        """The result as JSON data. ``signals`` counts every decision's signal only with ``all_signals`` (or when
        every decision was made while the replay ran, as with the LLM); ``signals_made`` always counts those."""
        made = self.decisions.made() if isinstance(self.decisions, Decisions) else list(self.decisions)
        data: dict[str, Any] = {
            "strategy": self.strategy,
            "params": _jsonable(self.params),
            "metrics": self.metrics.to_json(),
            "decisions": len(self.decisions),
            "decisions_made": len(made),
            "signals_made": self.signal_counts(made_only=True),
            "llm_requests": self.llm_requests,
            "llm_cached": self.llm_cached,
            "possibly_contaminated": self.contaminated,
            "exits": self.exit_counts(),
            "trades": self.trades_json(),
            "warnings": self.warnings,
        }
        if all_signals or len(made) == len(self.decisions):
            data["signals"] = self.signal_counts()
        if equity_points:
            data["equity"] = [[t.strftime("%Y-%m-%d %H:%M:%S"), round(float(v), 4)] for t, v in self.equity.items()]
        return data


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.datetime | dt.date | pd.Timestamp):
        return value.isoformat()
    if hasattr(value, "value") and isinstance(getattr(value, "value", None), str):
        return value.value
    return value


def adjust_prices(frame: pd.DataFrame) -> pd.DataFrame:
    """Scale open/high/low/close by ``adj_close / close`` (volume by the inverse); unchanged without adj_close."""
    if "adj_close" not in frame.columns:
        return frame
    factor = frame["adj_close"].to_numpy(dtype=np.float64) / frame["close"].to_numpy(dtype=np.float64)
    out = frame.copy()
    for col in ("open", "high", "low", "close"):
        out[col] = out[col].to_numpy(dtype=np.float64) * factor
    out["volume"] = out["volume"].to_numpy(dtype=np.float64) / factor
    return out


def _utc_ts(value: dt.date | dt.datetime | str | pd.Timestamp, name: str) -> pd.Timestamp:
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise InputError(name, f"{value!r} is not a date: {exc}") from None
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def prepare_bars(
    definition: StrategyDefinition,
    bars: pd.DataFrame,
    *,
    end: pd.Timestamp,
    settings: Settings,
    adjust: bool,
    validated: ValidatedHistory | None = None,
) -> pd.DataFrame:
    """Bars up to ``end`` (inclusive), price-adjusted if asked, validated with the ``flagged`` column set.

    With ``validated``, Great Expectations checks only the rows it has not seen under this strategy's symbol and
    bar size (:class:`~services.bars.validation.ValidatedHistory`: a replay of the same bars again validates none).
    """
    frame = bars.loc[bars[TIMESTAMP] <= end].reset_index(drop=True)
    if adjust:
        frame = adjust_prices(frame)
    result = validate_bars(
        frame,
        bar_size=definition.bar_size,
        policy=settings.trading.bad_row_policy,
        history=validated,
        history_key=f"replay:{definition.symbol}:{definition.bar_size.value}:{'adjusted' if adjust else 'raw'}",
    )
    out = result.frame
    if FLAGGED not in out.columns:
        out = out.assign(**{FLAGGED: False})
    return out


@dataclass
class _Book:
    """Cash, the position and the open round trip (all Decimal)."""

    cash: Decimal
    tick: Decimal = PRICE_Q  # a trailing stop moves on this grid
    position: Decimal = Decimal(0)
    entry_time: dt.datetime | None = None
    entry_price: Decimal = Decimal(0)
    entry_commission: Decimal = Decimal(0)
    stop: Decimal | None = None
    target: Decimal | None = None
    trail: Trail | None = None
    commissions: Decimal = Decimal(0)
    fills: list[FillRecord] = field(default_factory=list)
    trades: list[Trade] = field(default_factory=list)

    def _close(self, when: dt.datetime, fill_price: Decimal, commission: Decimal, reason: str) -> None:
        qty = abs(self.position)
        long = self.position > 0
        gross = (fill_price - self.entry_price) * qty if long else (self.entry_price - fill_price) * qty
        total_commission = self.entry_commission + commission
        assert self.entry_time is not None
        self.trades.append(
            Trade(
                "long" if long else "short",
                qty,
                self.entry_time,
                self.entry_price,
                when,
                fill_price,
                total_commission,
                gross - total_commission,
                reason,
            )
        )
        self.position = Decimal(0)
        self.entry_time, self.stop, self.target, self.trail = None, None, None, None
        self.entry_price = self.entry_commission = Decimal(0)

    def fill(
        self,
        when: dt.datetime,
        side: OrderSide,
        qty: Decimal,
        fill_price: Decimal,
        commission: Decimal,
        reason: str,
        *,
        closing: Decimal,
        stop: Decimal | None = None,
        target: Decimal | None = None,
        trail: Trail | None = None,
    ) -> None:
        sign = 1 if side is OrderSide.BUY else -1
        self.cash -= sign * qty * fill_price + commission
        self.commissions += commission
        self.fills.append(FillRecord(when, side, qty, fill_price, commission, reason))
        opening = qty - closing
        if closing > 0:
            share = (commission * closing / qty).quantize(Decimal("0.0001")) if opening > 0 else commission
            self._close(when, fill_price, share, reason)
            commission -= share
        if opening > 0:
            self.position = sign * opening
            self.entry_time, self.entry_price, self.entry_commission = when, fill_price, commission
            self.stop, self.target, self.trail = stop, target, trail


def _bar(when: dt.datetime, open_: float, high: float, low: float, close: float) -> Bar:
    return Bar.from_floats(when, when, (open_, high, low, close, 0.0), quantum=PRICE_Q)


def _commission(quantity: Decimal, fill_price: Decimal) -> Decimal:
    return ib_fixed_commission(quantity, quantity * fill_price)


_MARGIN: Final = 0.001  # far more than the 0.00005 a 4-place rounding can move a price


def _touch_levels(book: _Book) -> tuple[list[float], list[float]]:
    """The position's stop and target as float levels with :data:`_MARGIN`: ``(below, above)``, a bar may touch one
    when its low is at or below a ``below`` level or its high at or above an ``above`` one (a long's stop and a
    short's target are below; the others above)."""
    long = book.position > 0
    below = [float(x) + _MARGIN for x, hit in ((book.stop, long), (book.target, not long)) if x is not None and hit]
    above = [float(x) - _MARGIN for x, hit in ((book.stop, not long), (book.target, long)) if x is not None and hit]
    return below, above


def _may_touch(book: _Book, high: float, low: float) -> bool:
    """A cheap float pre-check: False only when the bar is clearly away from the stop and the target."""
    below, above = _touch_levels(book)
    return any(low <= level for level in below) or any(high >= level for level in above)


def _work_pending(
    book: _Book, pending: PendingOrder, when: dt.datetime, o: float, h: float, lo: float, c: float, slippage: Slippage
) -> PendingOrder | None:
    """Fill ``pending`` on this bar if it trades; return what is still pending (None: filled, or a DAY expired)."""
    fill_price, _ = bar_price(
        pending.order_type,
        pending.side,
        _bar(when, o, h, lo, c),
        limit=pending.limit,
        stop=None,
        triggered=False,
        slippage=slippage,
    )
    if fill_price is not None:
        book.fill(
            when,
            pending.side,
            pending.quantity,
            fill_price,
            _commission(pending.quantity, fill_price),
            pending.reason,
            closing=pending.closing,
            stop=pending.stop,
            target=pending.target,
            trail=pending.trail,
        )
        return None
    return None if pending.tif is TimeInForce.DAY else pending


def _exit_on_bar(book: _Book, when: dt.datetime, o: float, h: float, lo: float, c: float, slippage: Slippage) -> bool:
    """Exit the position at its stop or target if this bar reaches one (the stop wins); True when it exited. A
    trailing stop the bar did not reach then follows it (:func:`services.market.matching.trail_stop`)."""
    if book.position == 0 or (book.stop is None and book.target is None):
        return False
    side = OrderSide.SELL if book.position > 0 else OrderSide.BUY
    if not _may_touch(book, h, lo):
        hit = None
    else:
        hit = bracket_exit(side, _bar(when, o, h, lo, c), stop=book.stop, target=book.target, slippage=slippage)
    if hit is None:
        if book.trail is not None and book.stop is not None:
            book.stop = trail_stop(side, book.stop, book.trail, _bar(when, o, h, lo, c), book.tick)
        return False
    exit_price, why = hit
    qty = abs(book.position)
    book.fill(when, side, qty, exit_price, _commission(qty, exit_price), why, closing=qty)
    return True


class Decisions(Sequence[Decision]):
    """The decisions of a replay, in bar order. Those that could place an order were made during the replay; the
    others (a HOLD vote, a BUY while long, ...) are made by the same function when first read, on the book as it
    was then, and kept. Compares equal to a list of the same decisions."""

    def __init__(self, points: list[int], made: dict[int, Decision], make: Callable[[int], Decision]) -> None:
        self._points, self._made, self._make = points, made, make
        self._during = frozenset(made)  # the bars whose decision the replay made while it ran

    def __len__(self) -> int:
        return len(self._points)

    @overload
    def __getitem__(self, index: int) -> Decision: ...

    @overload
    def __getitem__(self, index: slice) -> list[Decision]: ...

    def __getitem__(self, index: int | slice) -> Decision | list[Decision]:
        if isinstance(index, slice):
            return [self._at(j) for j in self._points[index]]
        return self._at(self._points[index])

    def _at(self, j: int) -> Decision:
        made = self._made.get(j)
        if made is None:
            made = self._made[j] = self._make(j)
        return made

    def __iter__(self) -> Iterator[Decision]:
        return (self._at(j) for j in self._points)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Decisions | list | tuple):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Decisions({len(self)} decisions, {len(self._made)} made)"

    def made(self) -> list[Decision]:
        """The decisions the replay made while it ran (those that could place an order), in bar order."""
        return [self._made[j] for j in self._points if j in self._during]


class _History:
    """The book's cash, position and entry time after each bar that changed them (a decision made later reads the
    book as it was on its bar)."""

    def __init__(self, before: int, book: _Book) -> None:
        self.bars = [before]
        self.states = [(book.cash, book.position, book.entry_time)]

    def note(self, j: int, book: _Book) -> None:
        state = (book.cash, book.position, book.entry_time)
        if state != self.states[-1]:
            self.bars.append(j)
            self.states.append(state)

    def at(self, j: int) -> tuple[Decimal, Decimal, dt.datetime | None]:
        return self.states[bisect_right(self.bars, j) - 1]


class _Decider:
    """One decision on bar ``j``: the analysis (offline rules, or the LLM), the signal, and the order plan (a time
    exit first). The replay's loop and :class:`Decisions` (for the decisions it did not need) call it."""

    def __init__(
        self,
        definition: StrategyDefinition,
        ind: IndicatorResult,
        columns: dict[str, list[float]],
        close: list[float],
        times: pd.DatetimeIndex,
        py_times: list[dt.datetime],
        bar_length: dt.timedelta,
        flagged: list[bool],
        last_good: list[int],
        frame: pd.DataFrame,
        min_tick: Decimal,
        *,
        llm: bool,
        model: str,
        requests: dict[int, tuple[AnalysisRequest, bytes | None]],
        settings: Settings,
        store: LlmCallStore,
        backend: ChatBackend | None,
        wall: Callable[[], dt.datetime],
    ) -> None:
        self.definition, self.ind, self.columns, self.close = definition, ind, columns, close
        self.times, self.py_times, self.bar_length = times, py_times, bar_length
        self.flagged, self.last_good, self.frame, self.min_tick = flagged, last_good, frame, min_tick
        self.llm, self.model, self.requests = llm, model, requests
        self.settings, self.store, self.backend, self.wall = settings, store, backend, wall
        self.llm_requests = self.llm_cached = self.contaminated = 0

    def _analysed(self, j: int) -> _Analysed:
        if self.llm:
            request, png = self.requests[j]
            outcome = analyze(
                request, settings=self.settings.llm, store=self.store, chart_png=png, now=self.wall(),
                backend=self.backend,
            )  # fmt: skip
            self.llm_cached += int(outcome.cached)
            self.llm_requests += int(not outcome.cached and outcome.attempts > 0)
            return _Analysed(outcome)
        lg = self.last_good[j]
        if lg < 0:
            return _Analysed(None, "no usable (non-flagged) bar yet")
        before = self.last_good[lg - 1] if lg > 0 else -1
        definition = self.definition
        snap = _snapshot(definition, self.ind, self.columns, self.close, self.py_times, lg, self.flagged[j], before)
        analysis = rules_decision(snap, definition.indicators, definition.decision)  # the live path's rules
        return _Analysed(
            AnalysisOutcome(
                analyst=AnalystKind.OFFLINE,
                model=OFFLINE_MODEL,
                prompt=_PLACEHOLDER_PROMPT,
                reference_price=snap.last_close,
                analysis=analysis,
            )
        )

    def decide(
        self, j: int, cash: Decimal, position: Decimal, entry_time: dt.datetime | None
    ) -> tuple[Decision, OrderPlan | None, str]:
        """The decision on bar ``j`` for a book holding ``cash`` and ``position`` (opened at ``entry_time``), the
        plan it makes (None: no order considered), and the placed order's reason."""
        definition, risk, when = self.definition, self.definition.risk, self.py_times[j]
        analysed = self._analysed(j)
        if analysed.outcome is None:
            signal = Signal(SignalAction.ABSTAIN, analysed.abstain or "no analysis", AnalystKind.OFFLINE, when)
        else:
            signal = generate_signal(
                analysed.outcome, definition, last_bar_time=when, now=when + self.bar_length,
                flagged_latest=self.flagged[j],
            )  # fmt: skip
        tainted = self.llm and possibly_contaminated(self.model, when.date())
        self.contaminated += int(tainted)
        plan: OrderPlan | None = None
        reason = f"signal {signal.action.value}"
        close = price(self.close[j])
        if risk.max_holding_bars is not None and position and entry_time is not None:
            held = j - bisect_left(self.py_times, entry_time) + 1  # the entry's bar included
            plan = plan_time_exit(risk, position=position, held=held, reference=close)
            reason = f"time exit after {held} bars"  # decided before (and instead of) the signal's order
        if plan is None and signal.action in (SignalAction.BUY, SignalAction.SELL):
            reason = f"signal {signal.action.value}"
            plan = plan_order(
                signal,
                risk,
                symbol=definition.symbol,
                position=position,
                equity=cash + position * close,
                atr=partial(_atr_upto, self.frame, j, risk.sizing.atr_period),
                size_increment=SIZE_INCREMENT,
                min_tick=self.min_tick,
            )
        out = analysed.outcome
        decision = Decision(
            when,
            signal.action,
            signal.reason,
            signal.confidence,
            signal.entry,
            signal.stop,
            signal.target,
            plan.note if plan is not None else None,
            tainted,
            bool(out and out.cached),
            out.cost_usd if out is not None else Decimal(0),
        )
        return decision, plan, reason


def _decide_later(decider: _Decider, history: _History, j: int) -> Decision:
    """A decision the replay did not need while it ran (see :class:`Decisions`); it places nothing by the vote."""
    decision, plan, _ = decider.decide(j, *history.at(j))
    if plan is not None and plan.placed:  # the vote said it could not: a bug, never a silent difference
        raise RuntimeError(f"replay: the decision on bar {j} ({decision.bar_time}) places {plan.note}")
    return decision


def _first_touch(j: int, highs: np.ndarray[Any, Any], lows: np.ndarray[Any, Any], book: _Book, end: int) -> int:
    """The first bar from ``j`` (before ``end``) that :func:`_may_touch` the position's stop or target, else ``end``."""
    below, above = _touch_levels(book)
    step = 64
    while j < end:
        k = min(end, j + step)
        mask = np.zeros(k - j, dtype=bool)
        for level in below:
            mask |= lows[j:k] <= level
        for level in above:
            mask |= highs[j:k] >= level
        hit = np.flatnonzero(mask)
        if hit.size:
            return j + int(hit[0])
        j, step = k, min(step * 4, 1 << 16)
    return end


def _rule_votes(
    definition: StrategyDefinition,
    ind: IndicatorResult,
    close: list[float],
    flagged: np.ndarray[Any, Any],
    last_good_upto: np.ndarray[Any, Any],
) -> np.ndarray[Any, Any]:
    """Per bar ``j``, the direction (+1 BUY, -1 SELL, 0 HOLD or no decision) the offline rules vote on the
    snapshot of bar ``j`` (its newest usable bar and the one before): :meth:`services.rules.RuleSet.directions`
    over every bar at once, with each bar's rule set (the strategy's, or the default rules for the indicators
    that have a value there)."""
    n = len(close)
    raw = np.asarray(close, dtype=np.float64)
    values: dict[str, Any] = {c.name: ind.frame[c.name].to_numpy(np.float64) for c in ind.columns}
    values["close"] = np.array([round(x, 4) for x in close], dtype=np.float64)  # snapshot: 4-place last close
    prev_idx = np.concatenate(([-1], last_good_upto[:-1])) if n else np.empty(0, dtype=np.int64)
    has_prev = prev_idx >= 0
    safe = np.where(has_prev, prev_idx, 0)
    for name in list(values):  # the indicator columns and close (raw: _snapshot's previous close is not rounded)
        source = raw if name == "close" else values[name]
        values[PREVIOUS_PREFIX + name] = np.where(has_prev, source[safe], np.nan)
    decision = definition.decision
    names = [c.name for c in ind.columns]
    votes = np.zeros(n, dtype=np.int8)
    if decision.rules:
        votes[:] = rule_set(tuple(decision.rules)).directions(values, n, threshold=decision.rules_threshold)
    elif names:
        present = np.column_stack([~np.isnan(values[name]) for name in names])
        patterns, inverse = np.unique(present, axis=0, return_inverse=True)
        for p, pattern in enumerate(patterns):
            rows = np.flatnonzero(inverse.reshape(-1) == p)
            rules = default_rules_for(
                ind.columns, frozenset(nm for nm, ok in zip(names, pattern, strict=True) if ok), definition.indicators
            )
            if rules:
                sub = {k: v[rows] for k, v in values.items()}
                votes[rows] = rule_set(rules).directions(sub, rows.size, threshold=decision.rules_threshold)
    lg = np.maximum(last_good_upto, 0)
    out: np.ndarray[Any, Any] = np.where((last_good_upto >= 0) & ~flagged, votes[lg], 0).astype(np.int8)
    return out


@dataclass(frozen=True)
class _Analysed:
    outcome: AnalysisOutcome | None
    abstain: str | None = None


def _snapshot(
    definition: StrategyDefinition,
    ind: IndicatorResult,
    columns: dict[str, list[float]],
    close: list[float],
    times: list[dt.datetime],
    last_good: int,
    flagged_latest: bool,
    previous_good: int = -1,
) -> MarketSnapshot:
    """The snapshot :func:`services.llm.context.snapshot_from` gives on the bars up to ``last_good``'s bar
    (``previous_good``: the usable bar before it, -1 for none)."""
    latest: dict[str, float | None] = {}
    previous: dict[str, float | None] = {}
    for name, values in columns.items():
        value = values[last_good]
        latest[name] = None if value != value else value  # NaN: still warming up
        if previous_good >= 0:
            before = values[previous_good]
            previous[name] = None if before != before else before
    if previous_good >= 0:
        previous["close"] = close[previous_good]
    return MarketSnapshot(
        symbol=definition.symbol,
        bar_size=definition.bar_size,
        last_bar_time=pd.Timestamp(times[last_good]),
        last_close=Decimal(repr(round(close[last_good], 4))),
        latest=latest,
        columns=ind.columns,
        flagged_latest=flagged_latest,
        previous=previous,
    )


def _window_result(ind: IndicatorResult, lo: int, hi: int, last_good: int) -> IndicatorResult:
    """The indicator result as the strategy run would see it for bars ``lo..hi`` (inclusive)."""
    frame = ind.frame.iloc[lo : hi + 1]
    latest: dict[str, float | None] = {}
    for c in ind.columns:
        value = float(ind.frame[c.name].iat[last_good])
        latest[c.name] = None if math.isnan(value) else value
    return IndicatorResult(frame, ind.columns, latest, pd.Timestamp(ind.frame[TIMESTAMP].iat[last_good]), ind.specs)


def replay(
    definition: StrategyDefinition,
    bars: pd.DataFrame,
    *,
    start: dt.date | dt.datetime | str | pd.Timestamp,
    end: dt.date | dt.datetime | str | pd.Timestamp,
    decide_every: int = 1,
    analyst: AnalystChoice = "offline",
    settings: Settings,
    store: LlmCallStore,
    slippage_bps: Decimal = Decimal(0),
    initial_cash: Decimal = Decimal(100_000),
    progress: Progress | None = None,
    adjust: bool = True,
    risk_free: float = 0.0,
    template: tuple[str, str] | None = None,
    backend: ChatBackend | None = None,
    charts: bool = True,
    clock: Callable[[], dt.datetime] | None = None,
    min_tick: Decimal = PRICE_Q,
    validated: ValidatedHistory | None = None,
) -> ReplayResult:
    """Replay ``definition`` over ``bars`` (a canonical frame) between ``start`` and ``end`` (inclusive dates).

    ``validated`` remembers which bars Great Expectations has validated (a long-lived process replaying the same
    data again skips it; see :func:`prepare_bars`). ``template`` is ``(name, body)`` of the prompt (default: the
    shipped file for ``definition.prompt``); ``backend`` replaces the LLM client built from settings; ``clock``
    gives the wall time that stamps LLM records and picks the budget day. Raises ``InputError`` for bad
    parameters, no bars in the window, an LLM replay without a configured LLM endpoint, or an LLM replay whose
    uncached calls would exceed the remaining daily budget (global or the strategy's).
    """
    problems: list[Problem] = []
    start_ts, end_ts = _utc_ts(start, "start"), _utc_ts(end, "end")
    if isinstance(end, dt.date | str) and not isinstance(end, dt.datetime) and pd.Timestamp(end).time() == dt.time():
        end_ts = end_ts + pd.Timedelta(days=1) - pd.Timedelta(microseconds=1)
    if end_ts < start_ts:
        problems.append(Problem("end", f"end {end_ts.date()} is before start {start_ts.date()}"))
    if decide_every < 1:
        problems.append(Problem("decide_every", f"must be >= 1, got {decide_every}"))
    if analyst not in ("offline", "llm"):
        problems.append(Problem("analyst", f"must be offline or llm, got {analyst!r}"))
    if slippage_bps < 0:
        problems.append(Problem("slippage_bps", f"must be >= 0, got {slippage_bps}"))
    if initial_cash <= 0:
        problems.append(Problem("initial_cash", f"must be positive, got {initial_cash}"))
    rules_only = definition.decision.policy is DecisionPolicy.RULES_ONLY  # no LLM call, whatever ``analyst`` says
    if (
        analyst == "llm"
        and not rules_only
        and backend is None
        and settings.llm.resolved_provider is LlmProvider.OFFLINE
    ):
        problems.append(
            Problem(
                "analyst",
                "llm needs a configured endpoint (TRADER_LLM__API_KEY, TRADER_LLM__BASE_URL or TRADER_LLM__PROVIDER); "
                "use --analyst offline",
            )
        )
    missing = [c for c in (TIMESTAMP, "open", "high", "low", "close", "volume") if c not in bars.columns]
    if missing:
        problems.append(Problem("bars", f"missing column(s) {', '.join(missing)}"))
    if problems:
        raise InputError("replay", problems)

    frame = prepare_bars(definition, bars, end=end_ts, settings=settings, adjust=adjust, validated=validated)
    times = pd.DatetimeIndex(frame[TIMESTAMP])
    in_window = np.flatnonzero(times >= start_ts)
    if in_window.size == 0:
        first_bar = times[0].date() if len(times) else None
        raise InputError("replay", f"no bars between {start_ts.date()} and {end_ts.date()} (data starts {first_bar})")
    first = int(in_window[0])
    n = len(frame)
    ind = compute_indicators(frame, definition.indicators)
    # Python lists: indexing them per bar is several times cheaper than numpy scalars.
    columns: dict[str, list[float]] = {
        col.name: ind.frame[col.name].to_numpy(np.float64).tolist() for col in ind.columns
    }
    o: list[float] = frame["open"].to_numpy(dtype=np.float64).tolist()
    h: list[float] = frame["high"].to_numpy(dtype=np.float64).tolist()
    lo_: list[float] = frame["low"].to_numpy(dtype=np.float64).tolist()
    c: list[float] = frame["close"].to_numpy(dtype=np.float64).tolist()
    flagged = frame[FLAGGED].to_numpy(dtype=bool)
    idx = np.arange(n)
    last_good_upto = np.maximum.accumulate(np.where(flagged, -1, idx))
    decision_points = list(range(first, n, decide_every))
    bar_length = dt.timedelta(seconds=BAR_SECONDS[definition.bar_size])
    py_times: list[dt.datetime] = list(times.to_pydatetime())
    flagged_list: list[bool] = flagged.tolist()
    last_good_list: list[int] = last_good_upto.tolist()

    llm = analyst == "llm" and not rules_only
    model = OFFLINE_MODEL
    requests: dict[int, tuple[AnalysisRequest, bytes | None]] = {}
    warnings: list[str] = []
    wall = clock or (lambda: dt.datetime.now(dt.UTC))
    if llm:
        model = backend.model if backend is not None else settings.llm.model
        requests = _build_llm_requests(
            definition, ind, decision_points, last_good_upto, times, template=template, charts=charts
        )
        _check_budget(requests, model=model, settings=settings, store=store, now=wall())

    slippage = Slippage(bps=slippage_bps, quantum=PRICE_Q)
    book = _Book(cash=initial_cash, tick=min_tick)
    pending: PendingOrder | None = None
    placed: list[PlacedOrder] = []
    equity = np.empty(n - first, dtype=np.float64)
    positions = np.empty(n - first, dtype=np.float64)
    risk = definition.risk
    decider = _Decider(
        definition, ind, columns, c, times, py_times, bar_length, flagged_list, last_good_list, frame, min_tick,
        llm=llm, model=model, requests=requests, settings=settings, store=store, backend=backend, wall=wall,
    )  # fmt: skip
    # Which decision points can place an order, by the sign of the position (-1, 0, 1): with the offline analyst,
    # those whose rules vote BUY (flat or short) or SELL (flat or long), from the one rule evaluator over all bars
    # at once; an LLM's every decision. The others place nothing (a HOLD vote gives HOLD or ABSTAIN, a BUY while
    # long is pyramiding): their decisions are made when first read (the same function, the book as it was).
    points = np.asarray(decision_points, dtype=np.int64)
    is_point = np.zeros(n, dtype=bool)
    is_point[points] = True
    every = llm or MAKE_EVERY_DECISION
    if every:
        votes = np.ones(n, dtype=np.int8)
        wake = {-1: points, 0: points, 1: points}
    else:
        votes = _rule_votes(definition, ind, c, flagged, last_good_upto)
        at = votes[points]
        wake = {
            side: points[
                ((at > 0) & order_possible(True, Decimal(side), allow_short=risk.allow_short))
                | ((at < 0) & order_possible(False, Decimal(side), allow_short=risk.allow_short))
            ]
            for side in (-1, 0, 1)
        }
    vote_list: list[int] = votes.tolist()
    point_list: list[bool] = is_point.tolist()
    highs, lows, closes = (frame[col].to_numpy(dtype=np.float64) for col in ("high", "low", "close"))
    ticks: tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]] | None = None
    eager: dict[int, Decision] = {}
    history = _History(first - 1, book)

    def time_exit_from() -> int | None:
        """The first bar at which the position's time exit may be due (a bar early: ``plan_time_exit`` decides
        there), None without a position or a time rule."""
        if risk.max_holding_bars is None or not book.position or book.entry_time is None:
            return None
        return bisect_left(py_times, book.entry_time) + risk.max_holding_bars - 2

    def next_event(j: int) -> int:
        """The first bar from ``j`` on that can change something (no order is pending): a touch of the position's
        stop or target, a decision that can place an order, a time exit coming due."""
        pos = book.position
        best = n
        if pos and (book.stop is not None or book.target is not None):
            if book.trail is not None:
                return j  # a trailing stop moves on every bar
            best = _first_touch(j, highs, lows, book, best)
        arr = wake[1 if pos > 0 else -1 if pos < 0 else 0]
        i = int(np.searchsorted(arr, j))
        if i < arr.size:
            best = min(best, int(arr[i]))
        due = time_exit_from()
        if due is not None:
            i = int(np.searchsorted(points, max(j, due)))
            if i < points.size:
                best = min(best, int(points[i]))
        return best

    def quiet(j: int, k: int) -> None:
        """Mark bars ``j..k-1`` (no fill, no order) to close: ``float(cash + position * price(close))`` exactly."""
        nonlocal ticks
        seg = slice(j - first, k - first)
        positions[seg] = float(book.position)
        if not book.position:
            equity[seg] = float(book.cash)
            return
        scaled_cash, pos = book.cash / PRICE_Q, book.position
        if ticks is None:
            ticks = price_ticks(closes, PRICE_Q)
        if scaled_cash == scaled_cash.to_integral_value() and pos == pos.to_integral_value() and ticks[1][j:k].all():
            # whole ticks: int64 sums are exact, and one division of exact doubles rounds as float(Decimal) does
            equity[seg] = (int(scaled_cash) + int(pos) * ticks[0][j:k]) / float(1 / PRICE_Q)
        else:
            for i in range(j, k):
                equity[i - first] = float(book.cash + pos * price(c[i]))

    j = first
    reported = 0
    with _cyclic_gc_paused():  # see _cyclic_gc_paused: the loop makes no reference cycles
        while j < n:
            if pending is None:
                k = next_event(j)
                if k > j:
                    quiet(j, k)
                    j = k
                    if j >= n:
                        break
            when = py_times[j]
            working = pending is not None and j > pending.decided_at
            if working and pending is not None and pending.order_type is OrderType.MARKET:
                pending = _work_pending(book, pending, when, o[j], h[j], lo_[j], c[j], slippage)  # at the open
                working = False
            if _exit_on_bar(book, when, o[j], h[j], lo_[j], c[j], slippage) and pending is not None and pending.closing:
                pending = None  # its position is gone
            if working and pending is not None:
                pending = _work_pending(book, pending, when, o[j], h[j], lo_[j], c[j], slippage)  # a limit, intrabar
                if book.entry_time == when:
                    _exit_on_bar(book, when, o[j], h[j], lo_[j], c[j], slippage)  # the rest of its entry bar
            if book.position:
                equity[j - first] = float(book.cash + book.position * price(c[j]))
            else:
                equity[j - first] = float(book.cash)
            positions[j - first] = float(book.position)
            history.note(j, book)
            if point_list[j]:
                pos = book.position
                vote = vote_list[j]
                due = (from_bar := time_exit_from()) is not None and j >= from_bar
                if every or due or (vote and order_possible(vote > 0, pos, allow_short=risk.allow_short)):
                    decision, plan, reason = decider.decide(j, book.cash, pos, book.entry_time)
                    eager[j] = decision
                    if plan is not None and plan.placed:
                        placed.append(
                            PlacedOrder(
                                when, plan.side, plan.quantity, plan.order_type, plan.limit, plan.stop, plan.target
                            )
                        )
                        pending = PendingOrder(
                            side=plan.side,
                            quantity=plan.quantity,
                            order_type=plan.order_type,
                            tif=plan.tif,
                            limit=plan.limit,
                            decided_at=j,
                            closing=plan.closing,
                            stop=plan.stop,
                            target=plan.target,
                            reason=reason,
                            trail=plan.trail,
                        )
            j += 1
            if progress is not None:  # once per decision, in order (those passed over included)
                for done in range(reported + 1, bisect_left(decision_points, j) + 1):
                    progress(done, len(decision_points))
                reported = max(reported, bisect_left(decision_points, j))
    if progress is not None:
        for done in range(reported + 1, len(decision_points) + 1):
            progress(done, len(decision_points))
    decisions = Decisions(decision_points, eager, partial(_decide_later, decider, history))
    if pending is not None:
        warnings.append(f"an order decided on the last bar(s) was not filled by the end: {pending.reason}")

    open_trade = None
    if book.position != 0 and book.entry_time is not None:
        last_close = price(c[n - 1])
        qty = abs(book.position)
        long = book.position > 0
        gross = (last_close - book.entry_price) * qty if long else (book.entry_price - last_close) * qty
        open_trade = Trade(
            "long" if long else "short",
            qty,
            book.entry_time,
            book.entry_price,
            None,
            None,
            book.entry_commission,
            gross - book.entry_commission,
            None,
        )
    llm_cost = sum((d.cost_usd for d in eager.values()), Decimal(0))
    metrics = compute_metrics(
        equity,
        trade_pnls=[t.pnl for t in book.trades if t.pnl is not None],
        positions=positions,
        commissions=book.commissions,
        llm_cost_usd=llm_cost,
        risk_free=risk_free,
    )
    params = {
        "run_mode": RunMode.REPLAY.value,
        "strategy": definition.name,
        "symbol": definition.symbol,
        "start": start_ts.date().isoformat(),
        "end": end_ts.date().isoformat(),
        "first_bar": times[first].isoformat(),
        "last_bar": times[n - 1].isoformat(),
        "decide_every": decide_every,
        "analyst": "offline" if rules_only else analyst,  # rules_only: the rules decide, no LLM
        "model": model,
        "slippage_bps": str(slippage_bps),
        "initial_cash": str(initial_cash),
        "adjusted_prices": bool(adjust and "adj_close" in bars.columns),
        "order_type": risk.order_type.value,
        "tif": risk.tif.value,
    }
    return ReplayResult(
        strategy=definition.name,
        params=params,
        decisions=decisions,
        fills=book.fills,
        trades=book.trades,
        open_trade=open_trade,
        equity=pd.Series(equity, index=times[first:], name="equity"),
        positions=positions,
        metrics=metrics,
        orders=placed,
        llm_requests=decider.llm_requests,
        llm_cached=decider.llm_cached,
        contaminated=decider.contaminated,
        warnings=warnings,
    )


@contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector for the bar loop, and restore it after (even on an error).

    The loop allocates a few dozen small objects per bar (snapshot, analysis, signal, decision) and keeps the
    decisions, so the collector ran every 700 allocations: 6 % of a one-minute replay's CPU (197,340 bars: 7.9 s
    with it, 7.45 s without). The loop makes no reference cycles (reference counting frees everything it drops);
    cycles made meanwhile by other threads of the process are collected once it ends.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _atr_upto(frame: pd.DataFrame, j: int, period: int) -> Decimal | None:
    return sizing_atr(frame.iloc[: j + 1], period)


def _build_llm_requests(
    definition: StrategyDefinition,
    ind: IndicatorResult,
    points: list[int],
    last_good_upto: np.ndarray[Any, np.dtype[np.int64]],
    times: pd.DatetimeIndex,
    *,
    template: tuple[str, str] | None,
    charts: bool,
) -> dict[int, tuple[AnalysisRequest, bytes | None]]:
    from services.charts import render_chart
    from services.prompt_library import SHIPPED_DIR

    name, body = template if template is not None else load_template(SHIPPED_DIR, definition.prompt)
    lookback = pd.Timedelta(seconds=duration_seconds(definition.lookback))
    out: dict[int, tuple[AnalysisRequest, bytes | None]] = {}
    for j in points:
        lg = int(last_good_upto[j])
        if lg < 0:
            raise InputError("replay", f"no usable (non-flagged) bar up to {times[j].date()}")
        lo = int(np.searchsorted(times.asi8, (times[j] - lookback).value, side="right"))
        window = _window_result(ind, lo, j, lg)
        request = build_request(definition, window, body, template_name=name)
        png = render_chart(window.frame, window, title=f"{definition.symbol} {times[j].date()}").png if charts else None
        out[j] = (request, png)
    return out


def _check_budget(
    requests: dict[int, tuple[AnalysisRequest, bytes | None]],
    *,
    model: str,
    settings: Settings,
    store: LlmCallStore,
    now: dt.datetime,
) -> None:
    """Refuse (``InputError``) when the uncached calls' estimated cost exceeds today's remaining budget (global, or
    the strategy's ``llm.daily_budget_usd``). A local endpoint costs nothing and is not checked."""
    if settings.llm.is_local:
        return
    uncached: dict[str, Decimal] = {}
    for request, png in requests.values():
        image = image_for(request, settings.llm, png)[0]
        key = cache_key(model, request.prompt, image, endpoint=settings.llm.endpoint)
        if key in uncached or store.find_cached(key) is not None:
            continue
        chars = len(request.prompt.system) + len(request.prompt.text)
        tokens = chars // 4 + (EST_IMAGE_TOKENS if image else 0)
        uncached[key] = call_cost(settings.llm, model, tokens, EST_COMPLETION_TOKENS).usd
    if not uncached:
        return
    own = next(iter(requests.values()))[0]
    global_use, *strategy_use = budgets_today(
        store, now, daily_budget=settings.llm.daily_budget_usd, strategy_name=own.strategy_name,
        strategy_budget=own.daily_budget_usd,
    )  # fmt: skip
    remaining = global_use.limit - global_use.spent
    budget, variable = global_use.limit, "TRADER_LLM__DAILY_BUDGET_USD"
    for use in strategy_use:
        if use.limit - use.spent < remaining:
            remaining, budget, variable = use.limit - use.spent, use.limit, "the strategy's llm.daily_budget_usd"
    estimate = sum(uncached.values(), Decimal(0))
    if estimate > remaining:
        raise InputError(
            "replay",
            f"{len(uncached)} uncached LLM calls (of {len(requests)} decisions) would cost about "
            f"{estimate:.4f} USD with {model}, more than the {max(remaining, Decimal(0)):.4f} USD left of today's "
            f"budget ({budget} USD): shorten the window, raise --decide-every, or raise "
            f"{variable}",
        )
