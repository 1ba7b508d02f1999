"""The instrument catalog: one instrument per symbol, built from a directory of bar files.

Every file is read with :func:`services.bars.loader.load_bars`; its symbol comes from the file name (the first
name token that is a known symbol: ``yahoofinance-SPY-...`` -> SPY, ``orcl-1995-2014.txt`` -> ORCL,
``SP500_...`` -> SPX, the S&P 500 index, sec type IND). Unknown names use the first alphabetic token.

**One instrument, several series.** SPY appears in three files (daily, 5-min, 1-min): they become one instrument
SPY with three bar series keyed by bar size. A historical request is served from

1. the *native* series (same bar size) if it has bars in the requested window, else
2. the *finest* series that can produce the requested size by aggregation (its bar size divides the requested
   one; daily, weekly and monthly bars can be built from any intraday or daily series) and has bars in the window,
   resampled with :func:`services.bars.resample.resample_bars`.

The market clock and the order matcher use the finest series that has a completed bar at the clock's time.

Contract ids are stable: the real IB conIds for SPY, AAPL, ORCL and SPX, a CRC32-derived id for anything else.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Final
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from models.bars import FIXED_BAR_SECONDS
from models.enums import BarSize
from services.broker.types import MAX_SYMBOL_MATCHES, symbol_match_rank
from services.errors import InputError

EXCHANGE_TZ: Final = "US/Eastern"
EASTERN: Final = ZoneInfo(EXCHANGE_TZ)
RTH_OPEN: Final = time(9, 30)
RTH_CLOSE: Final = time(16, 0)
NS: Final = 1_000_000_000

# Ordering and divisibility of bar sizes; a month counts as 31 days so it is never finer than a real month.
_BAR_SECONDS: Final[dict[BarSize, int]] = {
    **FIXED_BAR_SECONDS,
    BarSize.WEEK_1: 7 * 86400,
    BarSize.MONTH_1: 31 * 86400,
}


@dataclass(frozen=True)
class KnownSymbol:
    symbol: str
    con_id: int
    sec_type: str
    primary_exchange: str
    long_name: str
    industry: str = ""
    category: str = ""


KNOWN_SYMBOLS: Final[dict[str, KnownSymbol]] = {
    "SPY": KnownSymbol("SPY", 756733, "STK", "ARCA", "SPDR S&P 500 ETF TRUST", "Funds", "Equity Fund"),
    "AAPL": KnownSymbol("AAPL", 265598, "STK", "NASDAQ", "APPLE INC", "Technology", "Computers"),
    "ORCL": KnownSymbol("ORCL", 272800, "STK", "NASDAQ", "ORACLE CORP", "Technology", "Software"),
    "SPX": KnownSymbol("SPX", 416904, "IND", "CBOE", "S&P 500 Stock Index", "Indices", "Broad Range Equity Index"),
}
_ALIASES: Final[dict[str, str]] = {"SP500": "SPX", "GSPC": "SPX", "SPX": "SPX"}


def is_intraday(bar_size: BarSize) -> bool:
    return _BAR_SECONDS[bar_size] < 86400


def bar_seconds(bar_size: BarSize) -> int:
    return _BAR_SECONDS[bar_size]


def symbol_from_filename(path: Path) -> str:
    """Return the instrument symbol a bar file's name stands for."""
    tokens = [t for t in re.split(r"[^A-Za-z0-9]+", path.stem) if t]
    for token in tokens:
        upper = token.upper()
        if upper in _ALIASES:
            return _ALIASES[upper]
        if upper in KNOWN_SYMBOLS:
            return upper
    for token in tokens:
        if token.isalpha() and token.lower() not in {"ib", "nt", "yahoofinance", "yahoo", "data", "bars"}:
            return token.upper()
    raise ValueError(f"cannot tell the symbol of {path.name}")


def session_close_utc(day: date) -> datetime:
    """Return the regular-session close (16:00 New York) of ``day`` in UTC."""
    return datetime.combine(day, RTH_CLOSE, EASTERN).astimezone(UTC)


def session_open_utc(day: date) -> datetime:
    return datetime.combine(day, RTH_OPEN, EASTERN).astimezone(UTC)


@dataclass
class BarSeries:
    """One bar file's bars for an instrument, with precomputed bar end times for the clock."""

    bar_size: BarSize
    frame: pd.DataFrame  # canonical frame, sorted by timestamp
    source: Path
    ends_ns: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.frame = self.frame.sort_values("timestamp", kind="stable").reset_index(drop=True)
        starts = pd.DatetimeIndex(self.frame["timestamp"]).as_unit("ns").asi8
        if is_intraday(self.bar_size):
            self.ends_ns = starts + bar_seconds(self.bar_size) * NS
        else:  # a date-labelled bar completes at that session's close
            days = pd.DatetimeIndex(self.frame["timestamp"]).tz_convert("UTC").date
            self.ends_ns = np.array([int(session_close_utc(d).timestamp()) * NS for d in days], dtype=np.int64)

    @property
    def first_end(self) -> datetime:
        return _from_ns(int(self.ends_ns[0]))

    @property
    def last_end(self) -> datetime:
        return _from_ns(int(self.ends_ns[-1]))

    def completed_count(self, now: datetime) -> int:
        """Number of bars whose end is at or before ``now``."""
        return int(np.searchsorted(self.ends_ns, _to_ns(now), side="right"))

    def completed(self, now: datetime) -> pd.DataFrame:
        return self.frame.iloc[: self.completed_count(now)]

    def bar_end(self, index: int) -> datetime:
        return _from_ns(int(self.ends_ns[index]))

    def ends_between(self, after: datetime, upto: datetime) -> range:
        """Indices of bars completing in ``(after, upto]``."""
        lo = int(np.searchsorted(self.ends_ns, _to_ns(after), side="right"))
        hi = int(np.searchsorted(self.ends_ns, _to_ns(upto), side="right"))
        return range(lo, hi)

    def next_end_after(self, now: datetime, n: int = 1) -> datetime | None:
        idx = int(np.searchsorted(self.ends_ns, _to_ns(now), side="right")) + n - 1
        return _from_ns(int(self.ends_ns[idx])) if idx < len(self.ends_ns) else None


@dataclass
class Instrument:
    """A tradable (or, for IND, quote-only) instrument and its bar series."""

    con_id: int
    symbol: str
    sec_type: str
    primary_exchange: str
    long_name: str
    industry: str = ""
    category: str = ""
    currency: str = "USD"
    exchange: str = "SMART"
    min_tick: float = 0.01
    size_increment: int = 1
    time_zone_id: str = EXCHANGE_TZ
    series: dict[BarSize, BarSeries] = field(default_factory=dict)

    @property
    def tradable(self) -> bool:
        return self.sec_type != "IND"

    @property
    def local_symbol(self) -> str:
        return self.symbol

    @property
    def derivative_sec_types(self) -> tuple[str, ...]:
        """The derivative kinds IB lists on the instrument in a symbol search (as IB lists them for SPY / SPX)."""
        return ("OPT", "FUT", "IOPT", "WAR", "BAG") if self.sec_type == "IND" else ("CFD", "OPT", "IOPT", "WAR", "BAG")

    @property
    def valid_exchanges(self) -> str:
        if self.sec_type == "IND":
            return self.primary_exchange
        return f"SMART,{self.primary_exchange},ARCA,NYSE,BATS,IEX"

    def finest_first(self) -> list[BarSeries]:
        return sorted(self.series.values(), key=lambda s: bar_seconds(s.bar_size))

    def sources_for(self, bar_size: BarSize) -> Iterator[BarSeries]:
        """Series that can serve ``bar_size``: the native one first, then finer ones, finest first."""
        native = self.series.get(bar_size)
        if native is not None:
            yield native
        target = bar_seconds(bar_size)
        for s in self.finest_first():
            if s is native:
                continue
            src = bar_seconds(s.bar_size)
            if is_intraday(bar_size):
                if is_intraday(s.bar_size) and src < target and target % src == 0:
                    yield s
            elif src < target:  # day/week/month from anything finer
                yield s

    def clock_series(self, now: datetime) -> BarSeries | None:
        """The finest series with a completed bar at ``now`` whose data still covers ``now`` (else the latest)."""
        best: BarSeries | None = None
        for s in self.finest_first():
            if s.completed_count(now) == 0:
                continue
            if s.last_end >= now:
                return s
            if best is None or s.last_end > best.last_end:
                best = s
        return best

    def last_bar(self, now: datetime) -> tuple[BarSeries, int] | None:
        """The series and index of the most recent completed bar at ``now``."""
        s = self.clock_series(now)
        if s is None:
            return None
        return s, s.completed_count(now) - 1


def _to_ns(ts: datetime) -> int:
    return int(pd.Timestamp(ts).as_unit("ns").value)


def _from_ns(value: int) -> datetime:
    result: datetime = pd.Timestamp(value, unit="ns", tz="UTC").to_pydatetime()
    return result


Loader = Callable[[Path], tuple[pd.DataFrame, BarSize | None]]


def _default_loader(path: Path) -> tuple[pd.DataFrame, BarSize | None]:
    from services.bars.loader import load_bars

    loaded = load_bars(path)
    return loaded.frame, loaded.bar_size


BAR_FILE_SUFFIXES: Final = frozenset({".csv", ".txt"})


class Catalog:
    """Instruments by symbol and by conId."""

    def __init__(self, instruments: Iterable[Instrument]) -> None:
        self.by_symbol: dict[str, Instrument] = {}
        self.by_con_id: dict[int, Instrument] = {}
        for inst in instruments:
            self.by_symbol[inst.symbol] = inst
            self.by_con_id[inst.con_id] = inst

    def __iter__(self) -> Iterator[Instrument]:
        return iter(sorted(self.by_symbol.values(), key=lambda i: i.symbol))

    def __len__(self) -> int:
        return len(self.by_symbol)

    def find(self, con_id: int, symbol: str, sec_type: str, currency: str, exchange: str) -> list[Instrument]:
        """Match a request contract: by conId when given, else by symbol (and sec type/currency/exchange if set)."""
        if con_id:
            inst = self.by_con_id.get(con_id)
            return [inst] if inst is not None else []
        inst = self.by_symbol.get(symbol.upper())
        if inst is None:
            return []
        if sec_type and sec_type != inst.sec_type:
            return []
        if currency and currency != inst.currency:
            return []
        if exchange and exchange not in {"SMART", inst.primary_exchange, *inst.valid_exchanges.split(",")}:
            return []
        return [inst]

    def matching(self, pattern: str) -> list[Instrument]:
        """IB's answer set to ``reqMatchingSymbols``: ticker prefix matches first, then name-word matches."""
        ranked = [(r, i) for i in self if (r := symbol_match_rank(pattern, i.symbol, i.long_name)) is not None]
        return [i for _, i in sorted(ranked, key=lambda ri: (ri[0], ri[1].symbol))][:MAX_SYMBOL_MATCHES]

    def daily_end(self) -> datetime | None:
        """The latest completion time of any daily series (the default market clock)."""
        ends = [s.last_end for i in self.by_symbol.values() for b, s in i.series.items() if b == BarSize.DAY_1]
        if not ends:
            ends = [s.last_end for i in self.by_symbol.values() for s in i.series.values()]
        return max(ends) if ends else None

    def all_ends(self) -> np.ndarray:
        """Sorted unique bar end times (ns) of every series: the clock's default steps."""
        arrays = [s.ends_ns for i in self.by_symbol.values() for s in i.series.values()]
        return np.unique(np.concatenate(arrays)) if arrays else np.array([], dtype=np.int64)


def bar_files(data_dir: Path) -> list[Path]:
    return sorted(p for p in data_dir.iterdir() if p.is_file() and p.suffix.lower() in BAR_FILE_SUFFIXES)


def load_catalog(data_dir: Path, loader: Loader | None = None) -> Catalog:
    """Build the catalog from every ``.csv``/``.txt`` bar file in ``data_dir``; raise ``InputError`` if unusable."""
    if not data_dir.is_dir():
        raise InputError(str(data_dir), "data directory does not exist")
    load = loader or _default_loader
    instruments: dict[str, Instrument] = {}
    for path in bar_files(data_dir):
        frame, size = load(path)
        if size is None:
            raise InputError(str(path), "cannot infer the bar size")
        try:
            symbol = symbol_from_filename(path)
        except ValueError as exc:
            raise InputError(str(path), str(exc)) from None
        inst = instruments.get(symbol)
        if inst is None:
            known = KNOWN_SYMBOLS.get(symbol)
            if known is not None:
                inst = Instrument(
                    known.con_id,
                    symbol,
                    known.sec_type,
                    known.primary_exchange,
                    known.long_name,
                    known.industry,
                    known.category,
                )
            else:
                con_id = 100_000_000 + zlib.crc32(symbol.encode()) % 800_000_000
                inst = Instrument(con_id, symbol, "STK", "NYSE", symbol)
            instruments[symbol] = inst
        if size in inst.series:
            raise InputError(str(path), f"{symbol} already has a {size} series ({inst.series[size].source.name})")
        inst.series[size] = BarSeries(size, frame, path)
    if not instruments:
        raise InputError(str(data_dir), "no bar files (.csv, .txt) in the data directory")
    return Catalog(instruments.values())


def trading_hours(day: date, days: int = 7, *, extended: bool) -> str:
    """IB's tradingHours/liquidHours string for ``days`` days from ``day`` (weekends closed; holidays ignored)."""
    parts = []
    for k in range(days):
        d = day + timedelta(days=k)
        stamp = f"{d:%Y%m%d}"
        if d.weekday() >= 5:
            parts.append(f"{stamp}:CLOSED")
        elif extended:
            parts.append(f"{stamp}:0400-{stamp}:2000")
        else:
            parts.append(f"{stamp}:0930-{stamp}:1600")
    return ";".join(parts)
