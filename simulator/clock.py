"""The market clock: the simulator's "now" is a point in the data, never the wall clock.

* ``set(ts)`` moves the clock anywhere (forwards or backwards) **without** matching orders: scene setting.
* ``advance(n_bars=1, symbol=None)`` moves forward to the end of the n-th next bar (of ``symbol``'s finest series
  covering now, or of any series when no symbol is given) and lets the order matcher see every bar that
  completed on the way. ``advance_to(ts)`` does the same for an explicit time.

Bars are served and matched only once complete (bar end <= now). Daily bars complete at 16:00 New York.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from simulator.catalog import Catalog

T = TypeVar("T")
Marshal = Callable[..., Any]


def to_utc(ts: datetime | str | pd.Timestamp) -> datetime:
    """Return an aware UTC datetime; naive input and unparsable strings are refused with a clear error."""
    if isinstance(ts, str):
        try:
            parsed = pd.Timestamp(ts)
        except ValueError as exc:
            raise ValueError(f"not an ISO timestamp: {ts!r}") from exc
        ts = parsed
    if isinstance(ts, pd.Timestamp):
        if ts.tzinfo is None:
            raise ValueError(f"timestamp {ts} has no timezone (use e.g. 2017-12-29T21:00:00Z)")
        result: datetime = ts.tz_convert("UTC").to_pydatetime()
        return result
    if ts.tzinfo is None:
        raise ValueError(f"datetime {ts} has no timezone")
    return ts.astimezone(UTC)


class MarketClock:
    """Simulated time shared by history, snapshots and order matching."""

    def __init__(self, catalog: Catalog, start: datetime) -> None:
        self._catalog = catalog
        self._now = to_utc(start)
        self._on_advance: Callable[[datetime, datetime], None] = lambda _a, _b: None
        self._marshal: Marshal = lambda fn, *args: fn(*args)

    def bind(self, on_advance: Callable[[datetime, datetime], None], marshal: Marshal) -> None:
        """Connect the clock to the server: a matcher callback and a thread marshaller."""
        self._on_advance = on_advance
        self._marshal = marshal

    @property
    def now(self) -> datetime:
        return self._now

    def set(self, ts: datetime | str | pd.Timestamp) -> datetime:
        """Move the clock to ``ts`` without matching orders."""
        target = to_utc(ts)
        self._marshal(self._set, target)
        return target

    def advance(self, n_bars: int = 1, *, symbol: str | None = None) -> datetime:
        """Advance to the end of the ``n_bars``-th next bar and match orders against every bar passed."""
        if n_bars < 1:
            raise ValueError("n_bars must be >= 1")
        result: datetime = self._marshal(self._advance_bars, n_bars, symbol)
        return result

    def advance_to(self, ts: datetime | str | pd.Timestamp) -> datetime:
        """Advance to ``ts`` (not before now) and match orders against every bar completed on the way."""
        target = to_utc(ts)
        result: datetime = self._marshal(self._advance_to, target)
        return result

    def _set(self, target: datetime) -> None:
        self._now = target

    def next_bar_end(self, n_bars: int = 1, *, symbol: str | None = None) -> datetime | None:
        """The end of the ``n_bars``-th next bar (what ``advance(n_bars, symbol=symbol)`` moves to), or None when
        the data ends first. An unknown symbol, or one without bars, is a ValueError."""
        now_ns = int(pd.Timestamp(self._now).as_unit("ns").value)
        if symbol is not None:
            inst = self._catalog.by_symbol.get(symbol.upper())
            if inst is None:
                raise ValueError(f"unknown symbol {symbol!r}")
            series = inst.clock_series(self._now) or (inst.finest_first()[0] if inst.series else None)
            if series is None:
                raise ValueError(f"{symbol} has no bars")
            ends = series.ends_ns
        else:
            ends = self._catalog.all_ends()
        idx = int(np.searchsorted(ends, now_ns, side="right")) + n_bars - 1
        if idx >= len(ends):
            return None
        result: datetime = pd.Timestamp(int(ends[idx]), unit="ns", tz="UTC").to_pydatetime()
        return result

    def _advance_bars(self, n_bars: int, symbol: str | None) -> datetime:
        target = self.next_bar_end(n_bars, symbol=symbol)
        if target is None:
            raise ValueError(f"no more bars after {self._now.isoformat()}")
        return self._advance_to(target)

    def _advance_to(self, target: datetime) -> datetime:
        if target < self._now:
            raise ValueError(f"cannot advance backwards to {target.isoformat()} (now {self._now.isoformat()})")
        before = self._now
        self._now = target
        self._on_advance(before, target)
        return target
