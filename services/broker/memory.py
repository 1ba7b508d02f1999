"""In-memory broker: the broker port without a socket, for dry runs and fast tests.

It holds a catalog of contracts and canonical bar frames (several bar sizes per symbol allowed) and follows the
TWS simulator's market model (:mod:`services.market`): the market clock (``broker.clock``) is a point in
the data; a bar is seen once complete; ``clock.set`` moves without matching, ``clock.advance`` /
``clock.advance_to`` fill working orders on every bar completed on the way; DAY orders expire at the first bar
of a later session. State (orders, executions, positions, cash) survives ``close()``/``connect()``, so
reconciliation after a reconnect is tested the same way as against IB.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Final

import numpy as np
import pandas as pd

from models.bars import TIMESTAMP
from models.enums import BarSize, OrderSide, SecType, TimeInForce
from services.bars.resample import resample_bars
from services.bars.sizes import infer_bar_size
from services.broker import _bars
from services.broker.ib_errors import map_order_status
from services.broker.types import (
    MAX_SYMBOL_MATCHES,
    AccountValues,
    BarRequest,
    Bracket,
    BrokerOrder,
    BrokerPosition,
    Connectivity,
    ContractInfo,
    ContractSpec,
    Execution,
    OrderRequest,
    Quote,
    SymbolMatch,
    symbol_match_rank,
)
from services.errors import BrokerConnectionError, ContractNotFoundError, DataError, OrderRejectedError
from services.market import (
    Bar,
    Position,
    bar_price,
    fill_commission,
    immediate_price,
    participation_budget,
    sessions,
)
from services.market.sessions import EASTERN

_DONE_IB: Final = frozenset({"Filled", "Cancelled", "Inactive"})


def stock(symbol: str, conid: int, *, primary_exchange: str = "ARCA", long_name: str = "") -> ContractInfo:
    """Return a US stock/ETF ``ContractInfo`` (tick 0.01, whole shares, New York hours)."""
    return ContractInfo(
        conid=conid,
        symbol=symbol,
        sec_type=SecType.STK,
        exchange="SMART",
        primary_exchange=primary_exchange,
        currency="USD",
        min_tick=Decimal("0.01"),
        size_increment=Decimal("1"),
        long_name=long_name or symbol,
        time_zone_id="US/Eastern",
        local_symbol=symbol,
        trading_class=symbol,
    )


def _intraday(size: BarSize) -> bool:
    return _bars.bar_timedelta(size) < timedelta(days=1)


@dataclass
class _Series:
    size: BarSize
    frame: pd.DataFrame
    ends: pd.DatetimeIndex = field(init=False)

    def __post_init__(self) -> None:
        starts = pd.DatetimeIndex(self.frame[TIMESTAMP])
        if _intraday(self.size):
            self.ends = starts + pd.Timedelta(_bars.bar_timedelta(self.size))
        else:  # a date-labelled bar completes at that session's close (16:00 New York)
            self.ends = pd.DatetimeIndex([sessions.date_bar_end(d) for d in starts.date]).as_unit("ns")

    def completed(self, now: datetime) -> int:
        return int(self.ends.searchsorted(pd.Timestamp(now), side="right"))

    def bar(self, i: int) -> Bar:
        row = self.frame.iloc[i]
        start = pd.Timestamp(row[TIMESTAMP]).to_pydatetime()
        ohlcv = (row["open"], row["high"], row["low"], row["close"], row["volume"])
        return Bar.from_floats(start, self.ends[i].to_pydatetime(), ohlcv, intraday=_intraday(self.size))


class MarketClock:
    """The market time of a :class:`MemoryBroker` (same operations as the simulator's clock)."""

    def __init__(self, broker: MemoryBroker, start: datetime | None = None) -> None:
        self._broker = broker
        self.now: datetime = (start or datetime(1970, 1, 1, tzinfo=UTC)).astimezone(UTC)

    def set(self, ts: datetime) -> datetime:
        """Move to ``ts`` (aware) without matching orders."""
        if ts.tzinfo is None:
            raise ValueError("clock time must be timezone-aware")
        self.now = ts.astimezone(UTC)
        return self.now

    def advance_to(self, ts: datetime) -> datetime:
        """Move forward to ``ts`` and match working orders against every bar completed on the way."""
        if ts.tzinfo is None:
            raise ValueError("clock time must be timezone-aware")
        target = ts.astimezone(UTC)
        if target < self.now:
            raise ValueError(f"cannot advance backwards to {target.isoformat()}")
        before, self.now = self.now, target
        self._broker._match(before, target)
        return target

    def advance(self, n_bars: int = 1, symbol: str | None = None) -> datetime:
        """Advance to the end of the ``n_bars``-th next bar (of ``symbol``'s clock series, or of any series)."""
        if symbol is not None:
            series = self._broker._clock_series(symbol.upper(), self.now)
            if series is None:
                raise DataError(f"{symbol} has no bars")
            ends = series.ends
        else:
            ends = self._broker._all_ends()
        idx = int(ends.searchsorted(pd.Timestamp(self.now), side="right")) + n_bars - 1
        if idx >= len(ends):
            raise DataError(f"no more bars after {self.now.isoformat()}")
        return self.advance_to(ends[idx].to_pydatetime())


@dataclass
class _Order:
    request: OrderRequest
    contract: ContractInfo
    order_id: int
    perm_id: int
    client_id: int
    placed_at: datetime
    ib_status: str = "Submitted"
    filled: Decimal = Decimal(0)
    value: Decimal = Decimal(0)
    commission: Decimal = Decimal(0)
    triggered: bool = False
    error_code: int | None = None
    error_text: str | None = None
    parent_ref: str | None = None  # a bracket child: works once its parent has filled, from released_at on
    released_at: datetime | None = None
    placed_quantity: Decimal = Decimal(0)

    @property
    def remaining(self) -> Decimal:
        return self.request.quantity - self.filled

    @property
    def done(self) -> bool:
        return self.ib_status in _DONE_IB

    @property
    def session(self) -> date:
        return sessions.order_session(self.placed_at)

    def view(self) -> BrokerOrder:
        r = self.request
        return BrokerOrder(
            order_ref=r.order_ref,
            order_id=self.order_id,
            perm_id=self.perm_id,
            client_id=self.client_id,
            ib_status=self.ib_status,
            status=map_order_status(self.ib_status, self.filled, error_code=self.error_code),
            filled=self.filled,
            remaining=self.remaining if not self.done else Decimal(0),
            avg_fill_price=(self.value / self.filled) if self.filled else None,
            symbol=self.contract.symbol,
            conid=self.contract.conid,
            side=r.side,
            quantity=r.quantity,
            order_type=r.order_type,
            limit_price=r.limit_price,
            stop_price=r.stop_price,
            tif=r.tif,
            account=r.account,
            last_error_code=self.error_code,
            last_error_text=self.error_text,
        )


class MemoryBroker:
    """The broker port in memory. See the module docstring for the market model."""

    def __init__(
        self,
        contracts: Iterable[ContractInfo] = (),
        bars: Mapping[str, pd.DataFrame | Iterable[pd.DataFrame]] | None = None,
        *,
        account: str = "DU0000001",
        cash: Decimal = Decimal("1000000"),
        participation: Decimal | None = None,
        client_id: int = 17,
        start: datetime | None = None,
    ) -> None:
        self.account = account
        self.client_id = client_id
        self.participation = participation
        self.cash = cash
        self.connects = 0
        self._contracts: dict[int, ContractInfo] = {c.conid: c for c in contracts}
        self._series: dict[str, dict[BarSize, _Series]] = {}
        self._orders: dict[str, _Order] = {}
        self._executions: list[Execution] = []
        self._positions: dict[int, Position] = {}
        self._used: dict[tuple[int, BarSize, int], Decimal] = {}
        self._order_ids = itertools.count(1)
        self._perm_ids = itertools.count(1_000_000_001)
        self._exec_seq = itertools.count(1)
        self._reject_next: tuple[int, str] | None = None
        self._connectivity = Connectivity.DISCONNECTED
        self.clock = MarketClock(self, start)
        for symbol, frames in (bars or {}).items():
            for frame in [frames] if isinstance(frames, pd.DataFrame) else frames:
                self.add_bars(symbol, frame)

    # ---- setup and scenario control (not part of the port) ----

    def add_contract(self, contract: ContractInfo) -> None:
        self._contracts[contract.conid] = contract

    def add_bars(self, symbol: str, frame: pd.DataFrame, bar_size: BarSize | None = None) -> BarSize:
        """Register a canonical frame for ``symbol`` (bar size inferred when not given); return its size."""
        frame = _bars.canonical(frame)
        size = bar_size or infer_bar_size(frame[TIMESTAMP])
        if size is None:
            raise DataError(f"cannot infer the bar size of the {symbol} frame")
        symbol = symbol.upper()
        self._series.setdefault(symbol, {})[size] = _Series(size, frame)
        if not any(c.symbol == symbol for c in self._contracts.values()):
            self.add_contract(stock(symbol, 100_000 + len(self._contracts)))
        return size

    def reject_next_order(self, reason: str = "simulated rejection", code: int = 201) -> None:
        """Make the next ``place_order`` fail with IB error ``code``."""
        self._reject_next = (code, reason)

    def drop_connection(self) -> None:
        """Simulate a dropped socket: requests fail until ``connect()``; orders at the broker keep working."""
        self._connectivity = Connectivity.DISCONNECTED

    def set_link_lost(self, lost: bool = True) -> None:
        """Simulate IB 1100 (``lost``) and 1102 (restored): the socket stays up."""
        if self._connectivity is not Connectivity.DISCONNECTED:
            self._connectivity = Connectivity.LOST if lost else Connectivity.CONNECTED

    # ---- the port ----

    @property
    def connectivity(self) -> Connectivity:
        return self._connectivity

    async def connect(self) -> None:
        self._connectivity = Connectivity.CONNECTED
        self.connects += 1

    async def close(self) -> None:
        self._connectivity = Connectivity.DISCONNECTED

    async def contract_details(self, spec: ContractSpec) -> list[ContractInfo]:
        self._require_socket()
        return [c for c in self._contracts.values() if _matches(c, spec)]

    async def matching_symbols(self, pattern: str) -> list[SymbolMatch]:
        """IB's matching rule over the known contracts (no derivative types: the memory broker lists none)."""
        self._require_socket()
        ranked = [
            (rank, c)
            for c in self._contracts.values()
            if (rank := symbol_match_rank(pattern, c.symbol, c.long_name)) is not None
        ]
        ranked.sort(key=lambda rc: (rc[0], rc[1].symbol, rc[1].conid))
        return [
            SymbolMatch(c.conid, c.symbol, str(c.sec_type), c.primary_exchange, c.currency, description=c.long_name)
            for _, c in ranked[:MAX_SYMBOL_MATCHES]
        ]

    async def qualify(self, spec: ContractSpec) -> ContractInfo:
        found = await self.contract_details(spec)
        if len(found) != 1:
            what = "ambiguous" if found else "no security definition"
            raise ContractNotFoundError(f"IB error 200: {what} for {spec.symbol} {spec.sec_type} {spec.exchange}")
        return found[0]

    async def historical_bars(self, contract: ContractInfo, request: BarRequest) -> pd.DataFrame:
        self._require_socket()
        end = min(request.end.astimezone(UTC), self.clock.now) if request.end else self.clock.now
        for series in self._sources(contract.symbol, request.bar_size):
            frame = _window(series, request, end)
            if not frame.empty:
                return frame
        return _bars.canonical(pd.DataFrame({c: [] for c in (TIMESTAMP, "open", "high", "low", "close", "volume")}))

    async def snapshot(self, contract: ContractInfo) -> Quote:
        self._require_socket()
        last = self._last_bar(contract.symbol)
        if last is None:
            return Quote(time=self.clock.now)
        series, i = last
        bar = series.bar(i)
        prev = series.bar(i - 1).close if i > 0 else None
        tick = contract.min_tick
        return Quote(time=self.clock.now, bid=bar.close - tick, ask=bar.close + tick, last=bar.close, close=prev)

    async def place_order(self, contract: ContractInfo, request: OrderRequest) -> BrokerOrder:
        if self._connectivity is not Connectivity.CONNECTED:
            raise BrokerConnectionError(f"not placing {request.order_ref}: broker {self._connectivity}")
        existing = self._orders.get(request.order_ref)
        if existing is not None:  # idempotent: an order_ref known to the broker is never sent again
            return existing.view()
        if contract.conid not in self._contracts:
            raise OrderRejectedError(f"IB error 200: unknown conid {contract.conid}", code=200)
        order = _Order(request, contract, next(self._order_ids), next(self._perm_ids), self.client_id, self.clock.now)
        self._orders[request.order_ref] = order
        rejection = self._rejection(order)
        if rejection is not None:
            order.ib_status, order.error_code, order.error_text = "Cancelled", rejection[0], rejection[1]
            raise OrderRejectedError(
                f"IB error {rejection[0]}: Order rejected - reason: {rejection[1]}",
                code=rejection[0],
                order_ref=request.order_ref,
            )
        last = self._last_bar(contract.symbol)
        if last is not None:
            series, i = last
            bar = series.bar(i)
            r = request
            price, order.triggered = immediate_price(
                r.order_type, r.side, bar.close, limit=r.limit_price, stop=r.stop_price, triggered=False
            )
            if price is not None:
                self._fill(order, series, i, bar, price, self.clock.now)
                self._after_bracket_fill(order, order.filled, self.clock.now)
        return order.view()

    async def place_bracket(self, contract: ContractInfo, bracket: Bracket) -> list[BrokerOrder]:
        """The entry (as :meth:`place_order`), then its children held until it fills (see :meth:`_cover`)."""
        await self.place_order(contract, bracket.entry)
        parent = self._orders[bracket.entry.order_ref]
        for child in bracket.children:
            if child.order_ref not in self._orders and not (parent.done and parent.filled == 0):
                request = replace(child, oca_group=bracket.oca_group)
                self._orders[child.order_ref] = _Order(
                    request, contract, next(self._order_ids), next(self._perm_ids), self.client_id, self.clock.now,
                    ib_status="PreSubmitted", parent_ref=parent.request.order_ref, placed_quantity=child.quantity,
                )  # fmt: skip
        self._cover(parent, self.clock.now)
        return [self._orders[r.order_ref].view() for r in bracket.orders if r.order_ref in self._orders]

    async def cancel_order(self, order_ref: str) -> BrokerOrder:
        self._require_socket()
        order = self._orders.get(order_ref)
        if order is None:
            raise OrderRejectedError(f"IB error 10147: no order {order_ref}", code=10147, order_ref=order_ref)
        if order.done:
            raise OrderRejectedError(
                f"IB error 161: order {order_ref} is {order.ib_status}", code=161, order_ref=order_ref
            )
        order.ib_status, order.error_code, order.error_text = "Cancelled", 202, "Order Canceled - reason:"
        if order.filled == 0:  # an unfilled parent takes its children with it
            for child in self._children(order):
                if not child.done:
                    child.ib_status = "Cancelled"
        return order.view()

    async def open_orders(self) -> list[BrokerOrder]:
        self._require_socket()
        return [o.view() for o in self._orders.values() if not o.done]

    async def completed_orders(self) -> list[BrokerOrder]:
        self._require_socket()
        return [o.view() for o in self._orders.values() if o.done]

    async def executions(self) -> list[Execution]:
        self._require_socket()
        return list(self._executions)

    async def positions(self) -> list[BrokerPosition]:
        self._require_socket()
        return [
            BrokerPosition(self.account, conid, self._contracts[conid].symbol, p.quantity, p.avg_cost)
            for conid, p in self._positions.items()
            if p.quantity != 0
        ]

    async def account_values(self) -> AccountValues:
        self._require_socket()
        market_value = Decimal(0)
        for conid, p in self._positions.items():
            last = self._last_bar(self._contracts[conid].symbol)
            mark = last[0].bar(last[1]).close if last is not None else p.avg_cost
            market_value += p.quantity * mark
        return AccountValues(
            account=self.account,
            net_liquidation=self.cash + market_value,
            buying_power=self.cash,
            available_funds=self.cash,
            total_cash=self.cash,
        )

    async def find_order(self, order_ref: str, perm_id: int | None = None) -> BrokerOrder | None:
        self._require_socket()
        order = self._orders.get(order_ref)
        if order is None and perm_id is not None:
            order = next((o for o in self._orders.values() if o.perm_id == perm_id), None)
        return order.view() if order is not None else None

    # ---- the market model ----

    def _require_socket(self) -> None:
        if self._connectivity is Connectivity.DISCONNECTED:
            raise BrokerConnectionError("not connected")

    def _rejection(self, order: _Order) -> tuple[int, str] | None:
        if self._reject_next is not None:
            rejection, self._reject_next = self._reject_next, None
            return rejection
        r, c = order.request, order.contract
        if c.sec_type is SecType.IND:
            return 201, f"{c.symbol} is an index and cannot be traded"
        if r.quantity % c.size_increment != 0:
            return 201, f"size {r.quantity} is not a multiple of {c.size_increment}"
        for price in (r.limit_price, r.stop_price):
            if price is not None and price % c.min_tick != 0:
                return 110, f"price {price} does not conform to the minimum price variation {c.min_tick}"
        return None

    def _sources(self, symbol: str, size: BarSize) -> list[_Series]:
        by_size = self._series.get(symbol.upper(), {})
        out = [by_size[size]] if size in by_size else []
        target = _bars.bar_timedelta(size)
        for s in sorted(by_size.values(), key=lambda s: _bars.bar_timedelta(s.size)):
            src = _bars.bar_timedelta(s.size)
            if s.size == size or src >= target:
                continue
            if not _intraday(size) or (_intraday(s.size) and target % src == timedelta(0)):
                out.append(s)
        return out

    def _clock_series(self, symbol: str, now: datetime) -> _Series | None:
        best: _Series | None = None
        for s in sorted(self._series.get(symbol, {}).values(), key=lambda s: _bars.bar_timedelta(s.size)):
            if s.completed(now) == 0:
                continue
            if s.ends[-1] >= pd.Timestamp(now):
                return s
            if best is None or s.ends[-1] > best.ends[-1]:
                best = s
        return best

    def _last_bar(self, symbol: str) -> tuple[_Series, int] | None:
        s = self._clock_series(symbol.upper(), self.clock.now)
        return (s, s.completed(self.clock.now) - 1) if s is not None else None

    def _all_ends(self) -> pd.DatetimeIndex:
        arrays = [s.ends.asi8 for by in self._series.values() for s in by.values()]
        if not arrays:
            raise DataError("no bars loaded")
        return pd.DatetimeIndex(np.unique(np.concatenate(arrays)), tz="UTC")

    def _match(self, before: datetime, after: datetime) -> None:
        for order in [o for o in self._orders.values() if not o.done]:
            series = self._clock_series(order.contract.symbol, after)
            if series is None or order.done or self._held(order):
                continue
            lo = int(series.ends.searchsorted(pd.Timestamp(before), side="right"))
            hi = series.completed(after)
            for i in range(lo, hi):
                bar = series.bar(i)
                if order.request.tif is TimeInForce.DAY and bar.session > order.session:
                    order.ib_status = "Cancelled"
                    self._after_bracket_fill(order, Decimal(0), bar.end)
                    break
                if not bar.in_rth:
                    continue
                if order.released_at is not None and bar.end <= order.released_at:
                    continue  # a released child trades from the bar after its parent's fill
                r = order.request
                price, order.triggered = bar_price(
                    r.order_type, r.side, bar, limit=r.limit_price, stop=r.stop_price, triggered=order.triggered
                )
                if price is not None:
                    filled = order.filled
                    self._fill(order, series, i, bar, price, bar.end)
                    self._after_bracket_fill(order, order.filled - filled, bar.end)
                if order.done:
                    break

    # ---- brackets and OCA groups (as the simulator: children cover what the parent filled) ----

    def _children(self, parent: _Order) -> list[_Order]:
        return [o for o in self._orders.values() if o.parent_ref == parent.request.order_ref]

    def _held(self, order: _Order) -> bool:
        return order.parent_ref is not None and self._orders[order.parent_ref].filled == 0

    def _after_bracket_fill(self, order: _Order, qty: Decimal, when: datetime) -> None:
        """OCA peers (not bracket siblings) are reduced by ``qty`` and cancelled when nothing is left; bracket
        children are resized to what their bracket still holds; an expired unfilled parent takes its children."""
        group = order.request.oca_group
        for peer in self._orders.values():
            sibling = order.parent_ref is not None and peer.parent_ref == order.parent_ref
            if qty <= 0 or peer is order or peer.done or sibling or not group or peer.request.oca_group != group:
                continue
            left = peer.request.quantity - qty
            if order.remaining == 0 or left <= peer.filled:
                peer.ib_status = "Cancelled"
            else:
                peer.request = replace(peer.request, quantity=left)
        if order.parent_ref is not None:
            self._cover(self._orders[order.parent_ref], when)
        if self._children(order):
            self._cover(order, when)

    def _cover(self, parent: _Order, when: datetime) -> None:
        children = self._children(parent)
        held = parent.filled - sum((c.filled for c in children), Decimal(0))
        for child in children:
            if child.done:
                continue
            if held <= 0:
                if parent.filled > 0 or parent.done:
                    child.ib_status = "Cancelled"
                continue
            quantity = min(child.placed_quantity, child.filled + held)
            child.request = replace(child.request, quantity=quantity)
            if child.released_at is None:
                child.released_at = when
                child.ib_status = "PreSubmitted" if child.request.stop_price is not None else "Submitted"

    def _fill(self, order: _Order, series: _Series, index: int, bar: Bar, price: Decimal, when: datetime) -> None:
        qty = order.remaining
        budget = participation_budget(bar.volume, self.participation)
        if budget is not None:
            key = (order.contract.conid, series.size, index)
            qty = min(qty, max(budget - self._used.get(key, Decimal(0)), Decimal(0)))
            self._used[key] = self._used.get(key, Decimal(0)) + qty
        if qty > 0:
            self._book_fill(order, qty, price, when)

    def _book_fill(self, order: _Order, qty: Decimal, price: Decimal, when: datetime) -> None:
        commission = fill_commission(order.filled, order.value, qty, price)
        order.filled += qty
        order.value += qty * price
        order.commission += commission
        order.ib_status = "Filled" if order.remaining == 0 else "Submitted"
        signed = qty if order.request.side is OrderSide.BUY else -qty
        realized = self._update_position(order.contract.conid, signed, price, commission)
        self.cash -= signed * price + commission
        self._executions.append(
            Execution(
                exec_id=f"0000e0d5.{order.perm_id:08x}.{next(self._exec_seq):02d}.01",
                perm_id=order.perm_id,
                order_id=order.order_id,
                order_ref=order.request.order_ref,
                conid=order.contract.conid,
                symbol=order.contract.symbol,
                side=order.request.side,
                quantity=qty,
                price=price,
                time=when.astimezone(UTC),
                commission=commission,
                realized_pnl=realized,
                account=self.account,
            )
        )

    def _update_position(self, conid: int, signed: Decimal, price: Decimal, commission: Decimal) -> Decimal | None:
        return self._positions.setdefault(conid, Position()).fill(signed, price, commission)


def _window(series: _Series, request: BarRequest, end: datetime) -> pd.DataFrame:
    # Same window rules as the simulator: completed bars only; "n D" on intraday bars = the last n session dates.
    offset = _bars.parse_duration(request.duration)
    frame = series.frame.iloc[: series.completed(end)]
    if request.use_rth and _intraday(series.size):
        frame = frame[[sessions.in_rth(t) for t in pd.DatetimeIndex(frame[TIMESTAMP]).to_pydatetime()]]
    if frame.empty:
        return frame
    count, unit = int(request.duration.split()[0]), request.duration.split()[1]
    intraday_target = _intraday(request.bar_size)
    if unit == "D" and intraday_target:
        keep = set(_bars.last_weekdays(end, count))
        frame = frame[[d in keep for d in pd.DatetimeIndex(frame[TIMESTAMP]).tz_convert(EASTERN).date]]
    if series.size != request.bar_size:
        frame = resample_bars(frame.reset_index(drop=True), request.bar_size)
    if not (unit == "D" and intraday_target):
        start = pd.Timestamp(end) - offset
        frame = frame[frame[TIMESTAMP] >= start]
    return _bars.canonical(frame.reset_index(drop=True))


def _matches(c: ContractInfo, spec: ContractSpec) -> bool:
    if spec.conid is not None:
        return c.conid == spec.conid
    return (
        c.symbol == spec.symbol.upper()
        and c.sec_type == spec.sec_type
        and c.currency == spec.currency
        and (spec.primary_exchange is None or c.primary_exchange == spec.primary_exchange)
    )
