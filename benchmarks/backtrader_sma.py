"""The backtrader side of ``orcl-sma-cross``: one strategy, its conventions switchable one by one.

Imported by ``benchmarks/bench_replay.py`` (speed) and ``tests/test_backtrader_conventions.py`` (which states
every convention by which backtrader's defaults differ from the replay and proves that with all of them set to
the replay's, both engines close the identical trades). The rules are the offline analyst's on
SMA(20)/SMA(50): BUY when SMA20 > SMA50 and close > SMA50, SELL on the mirror; while SMA50 warms up, close
above / below SMA20. Long only, one position, 10,000 USD per entry, stop 10 % below and target 25 % above the
decision bar's close, market orders at the next open, IB's fixed commission.

:class:`Conventions` holds the switches; :data:`REPLAY` is the replay's reading of every one (the reference:
``tests/test_parity.py`` shows the replay trades like paper trading against the simulator), :data:`BACKTRADER`
the pre-alignment benchmark's (backtrader's defaults, plus the natural ways to write the rules in it).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, replace
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal
from typing import Any, Final, Literal

import backtrader as bt  # type: ignore[import-untyped]
import numpy as np
import pandas as pd

__all__ = ["BACKTRADER", "REPLAY", "ClosedTrade", "Conventions", "RunResult", "replay_trades", "run"]

Q: Final = Decimal("0.0001")
FAST, SLOW = 20, 50
NOTIONAL: Final = Decimal(10_000)
STOP_PCT, TARGET_PCT = Decimal(10), Decimal(25)
Exits = Literal["next_open", "bracket", "oco"]


@dataclass(frozen=True)
class Conventions:
    """How the backtrader strategy reads each rule the replay fixes (``REPLAY``: all as the replay does).

    * ``warmup``: decide on SMA20 alone while SMA50 warms up (``prenext`` calls ``next``). Off: backtrader calls
      ``next`` only once every indicator has its minimum period (bar 50), so nothing trades before.
    * ``exits``: ``"oco"``, a STP and a LMT submitted with the entry (one-cancels-other), working from the entry
      bar on, filling on the touching bar at ``min(open, stop)`` / ``max(open, target)``; ``"bracket"``,
      ``buy_bracket``, whose children backtrader activates only on the bar after the entry fill;
      ``"next_open"``, the bar's low / high compared with the levels on its close and a market exit at the next
      open.
    * ``stop_first``: submit the stop before the target, so on a bar touching both the stop fills (backtrader
      tries pending orders in submission order; the replay's ``bracket_exit`` always takes the stop).
    * ``cancel_on_close``: cancel the stop and target when a SELL signal closes the position (the replay drops the
      bracket with the position; a live stop left behind still fills, at the same open or later, and goes short).
    * ``tick``: bars at 4 decimal places (the replay's ``PRICE_Q``, half-even), the signal's close at 4 places,
      size ``floor(10,000 / close)`` and the levels (half-up) in ``Decimal`` on it. Off: raw float prices.
    * ``skip_invalid``: no decision on a bar whose prices break the row rules of ``services.bars.validation``
      (a price <= 0, high below open / close / low, low above open / close): the replay flags such a bar and its
      signal ABSTAINs; backtrader has no validation and trades on it. (The calendar and split rules have no
      equivalent here; the synthetic series has no flagged bar.)
    * ``commission``: ``"ib"``, IB's fixed schedule with the 1 % cap rounded to 0.0001 (the replay's
      ``ib_fixed_commission``); ``"float"``, the same schedule unrounded in floats.
    """

    warmup: bool = True
    exits: Exits = "oco"
    stop_first: bool = True
    cancel_on_close: bool = True
    tick: bool = True
    skip_invalid: bool = True
    commission: Literal["ib", "float"] = "ib"

    def but(self, **changes: Any) -> Conventions:
        return replace(self, **changes)


REPLAY: Final = Conventions()
BACKTRADER: Final = Conventions(warmup=False, exits="next_open", tick=False, skip_invalid=False, commission="float")


@dataclass(frozen=True)
class ClosedTrade:
    """One closed round trip: dates of the entry and exit fills, prices, shares, net P&L, why it exited."""

    direction: Literal["long", "short"]
    quantity: int
    entry_date: dt.date
    entry_price: float
    exit_date: dt.date
    exit_price: float
    pnl: float  # net of both commissions
    exit_reason: str  # "stop" / "target" / "signal SELL" (the replay's words)

    def key(self) -> tuple[str, int, dt.date, float, dt.date, float, str]:
        """The trade rounded to 6 places, for comparing lists (prices within 1e-6)."""
        return (
            self.direction,
            self.quantity,
            self.entry_date,
            round(self.entry_price, 6),
            self.exit_date,
            round(self.exit_price, 6),
            self.exit_reason,
        )


@dataclass(frozen=True)
class RunResult:
    trades: list[ClosedTrade]
    commissions: list[float]  # per fill, in fill order
    open_position: int  # signed shares at the end
    end_value: float


def replay_trades(result: Any) -> list[ClosedTrade]:
    """The replay's closed trades (``ReplayResult.trades``) as :class:`ClosedTrade`."""
    return [
        ClosedTrade(
            t.direction,
            int(t.quantity),
            t.entry_time.date(),
            float(t.entry_price),
            t.exit_time.date(),
            float(t.exit_price),
            float(t.pnl),
            t.exit_reason,
        )
        for t in result.trades
    ]


def _ib_commission(shares: float, price: float) -> float:
    qty = Decimal(round(shares))
    cap = (qty * Decimal(repr(price)) * Decimal("0.01")).quantize(Q, rounding=ROUND_HALF_EVEN)
    return float(min(max(qty * Decimal("0.005"), Decimal(1)), cap))


class IBFixed(bt.CommInfoBase):  # type: ignore[misc]
    """IB's fixed US-stock commission: 0.005 USD a share, at least 1 USD, at most 1 % of the value."""

    params = (("stocklike", True), ("commtype", bt.CommInfoBase.COMM_FIXED), ("rounded", True))

    def _getcommission(self, size: float, price: float, pseudoexec: bool) -> float:
        shares = abs(size)
        if self.p.rounded:
            return _ib_commission(shares, price)
        return float(min(max(shares * 0.005, 1.0), shares * price * 0.01))


class _Feed(bt.feeds.PandasData):  # type: ignore[misc]
    """OHLCV plus ``raw``: the unrounded close the SMAs are computed on (the replay's TA-Lib input)."""

    lines = ("raw",)
    params = (("raw", -1),)


def _price(value: float) -> float:
    return float(Decimal(repr(float(value))).quantize(Q, rounding=ROUND_HALF_EVEN))


class SmaCross(bt.Strategy):  # type: ignore[misc]
    params = (("conv", REPLAY),)

    def __init__(self) -> None:
        self.conv: Conventions = self.p.conv
        self.fast = bt.indicators.SMA(self.data.raw, period=FAST)
        self.slow = bt.indicators.SMA(self.data.raw, period=SLOW)
        self.stop_level = self.target_level = 0.0
        self.children: list[Any] = []
        self.fills: list[tuple[dt.date, int, float, float, str]] = []

    def notify_order(self, order: Any) -> None:
        if order.status == order.Completed:
            when = bt.num2date(order.executed.dt).date()
            size = round(order.executed.size)
            reason = order.info.get("reason", "")
            self.fills.append((when, size, float(order.executed.price), float(order.executed.comm), reason))

    def prenext(self) -> None:
        if self.conv.warmup:
            self.next()

    def _levels(self, close: float) -> tuple[int, float, float]:
        """Shares, stop and target of an entry decided on ``close``."""
        if not self.conv.tick:
            return math.floor(10_000 / close), close * 0.9, close * 1.25
        entry = Decimal(repr(close))
        stop = (entry * (1 - STOP_PCT / 100)).quantize(Q, rounding=ROUND_HALF_UP)
        target = (entry * (1 + TARGET_PCT / 100)).quantize(Q, rounding=ROUND_HALF_UP)
        return int(NOTIONAL / entry), float(stop), float(target)

    def _valid(self) -> bool:
        o, h, lo, c = self.data.open[0], self.data.high[0], self.data.low[0], self.data.close[0]
        return bool(min(o, h, lo, c) > 0 and h >= max(o, c, lo) and lo <= min(o, c))

    def next(self) -> None:
        if len(self) < FAST or (self.conv.skip_invalid and not self._valid()):
            return
        raw = self.data.raw[0]
        close = round(raw, 4) if self.conv.tick else raw
        fast = self.fast[0]
        slow = self.slow[0] if len(self) >= SLOW else math.nan
        if math.isnan(slow):
            up, down = close > fast, close < fast
        else:
            up = fast > slow and close > slow
            down = fast < slow and close < slow
        if self.position:
            if self.conv.exits == "next_open":
                why = (
                    "stop"
                    if self.data.low[0] <= self.stop_level
                    else "target"
                    if self.data.high[0] >= self.target_level
                    else "signal SELL"
                    if down
                    else None
                )
                if why is not None:
                    self.close().addinfo(reason=why)
            elif down:
                if self.conv.cancel_on_close:
                    for child in self.children:
                        self.cancel(child)
                self.close().addinfo(reason="signal SELL")
        elif up:
            size, stop, target = self._levels(close)
            self.stop_level, self.target_level = stop, target
            if self.conv.exits == "next_open":
                self.buy(size=size).addinfo(reason="signal BUY")
            elif self.conv.exits == "bracket":
                parent, s, t = self.buy_bracket(size=size, exectype=bt.Order.Market, stopprice=stop, limitprice=target)
                parent.addinfo(reason="signal BUY")
                s.addinfo(reason="stop")
                t.addinfo(reason="target")
                self.children = [s, t]
            else:
                self.buy(size=size).addinfo(reason="signal BUY")
                if self.conv.stop_first:
                    s = self.sell(size=size, exectype=bt.Order.Stop, price=stop)
                    t = self.sell(size=size, exectype=bt.Order.Limit, price=target, oco=s)
                else:
                    t = self.sell(size=size, exectype=bt.Order.Limit, price=target)
                    s = self.sell(size=size, exectype=bt.Order.Stop, price=stop, oco=t)
                s.addinfo(reason="stop")
                t.addinfo(reason="target")
                self.children = [s, t]


def feed_frame(frame: pd.DataFrame, conv: Conventions = REPLAY) -> pd.DataFrame:
    """``frame`` (canonical, already price-adjusted) as the feed's frame: naive dates, 4-place prices if ``tick``.

    Built as one float block (``PandasData`` reads it cell by cell with ``iloc``, several times slower across
    blocks)."""
    columns: dict[str, list[float]] = {
        col: frame[col].to_numpy(np.float64).tolist() for col in ("open", "high", "low", "close", "volume")
    }
    columns["raw"] = columns["close"]
    if conv.tick:
        for col in ("open", "high", "low", "close"):
            columns[col] = [_price(v) for v in columns[col]]
    index = pd.DatetimeIndex(frame["timestamp"]).tz_localize(None)
    return pd.DataFrame(np.array(list(columns.values())).T, index=index, columns=list(columns))


def _round_trips(fills: list[tuple[dt.date, int, float, float, str]]) -> tuple[list[ClosedTrade], int]:
    trades: list[ClosedTrade] = []
    position = 0
    entry: tuple[dt.date, float, float] | None = None  # date, price, commission
    for when, size, fill_price, comm, reason in fills:
        if position == 0:
            position, entry = size, (when, fill_price, comm)
            continue
        assert entry is not None
        closing = min(abs(size), abs(position)) if (size > 0) != (position > 0) else 0
        if closing == 0:  # adds to the position (never planned; keep the first entry)
            position += size
            continue
        qty = abs(position)
        long = position > 0
        share = comm * closing / abs(size)
        gross = (fill_price - entry[1]) * qty if long else (entry[1] - fill_price) * qty
        trades.append(
            ClosedTrade(
                "long" if long else "short",
                qty,
                entry[0],
                entry[1],
                when,
                fill_price,
                gross - entry[2] - share,
                reason,
            )
        )
        position += size
        entry = (when, fill_price, comm - share) if position else None
    return trades, position


def run(frame: pd.DataFrame, conv: Conventions = REPLAY, *, cash: float = 100_000.0) -> RunResult:
    """Run the strategy over ``frame`` (canonical columns, price-adjusted) with ``conv``."""
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(_Feed(dataname=feed_frame(frame, conv)))
    cerebro.addstrategy(SmaCross, conv=conv)
    cerebro.broker.setcash(cash)
    cerebro.broker.addcommissioninfo(IBFixed(rounded=conv.commission == "ib"))
    strategy = cerebro.run()[0]
    trades, position = _round_trips(strategy.fills)
    return RunResult(trades, [f[3] for f in strategy.fills], position, float(cerebro.broker.getvalue()))
