"""In-memory broker: the broker port without a socket, for dry runs and fast tests.

It holds a catalog of contracts and canonical bar frames (several bar sizes per symbol allowed). A market clock
(``broker.clock``) says which bar is "now": the bar whose start time is the latest ``<= now`` has closed, orders
placed now see its close, and advancing the clock fills resting orders on every bar passed (rules in
:mod:`services.broker.fills`). State (orders, executions, positions, cash) survives ``close()``/``connect()``, so
reconciliation after a reconnect can be tested exactly as against IB.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

import pandas as pd

from models.bars import TIMESTAMP
from models.enums import BarSize, OrderSide, OrderType, SecType
from services.broker import _bars
from services.broker.fills import BarPrices, fill_price, ib_fixed_commission, max_fill_quantity, stop_triggered
from services.broker.ib_errors import map_order_status
from services.broker.types import (
    AccountValues,
    BarRequest,
    BrokerOrder,
    BrokerPosition,
    Connectivity,
    ContractInfo,
    ContractSpec,
    Execution,
    OrderRequest,
    Quote,
)
from services.errors import BrokerConnectionError, ContractNotFoundError, DataError, OrderRejectedError


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
        trading_hours="",
        liquid_hours="",
        local_symbol=symbol,
        trading_class=symbol,
    )


class MarketClock:
    """The market time of a :class:`MemoryBroker`; moving it fills resting orders."""

    def __init__(self, broker: MemoryBroker, start: datetime | None = None) -> None:
        self._broker = broker
        self.now: datetime = start or datetime(1970, 1, 1, tzinfo=UTC)

    def set(self, ts: datetime) -> None:
        """Move to ``ts`` (aware); moving forward processes every bar passed."""
        if ts.tzinfo is None:
            raise ValueError("clock time must be timezone-aware")
        old, self.now = self.now, ts.astimezone(UTC)
        if self.now > old:
            self._broker._on_time_passed(old, self.now)

    def advance(self, n_bars: int = 1, symbol: str | None = None) -> datetime:
        """Move to the ``n_bars``-th next bar start (of ``symbol``'s bars, or of all bars) and return it."""
        stamps = self._broker._timeline(symbol)
        later = stamps[stamps > pd.Timestamp(self.now)]
        if len(later) == 0:
            raise DataError("no bars after the current time")
        target = later[min(n_bars, len(later)) - 1].to_pydatetime()
        self.set(target)
        return self.now


@dataclass
class _Order:
    request: OrderRequest
    contract: ContractInfo
    order_id: int
    perm_id: int
    client_id: int
    ib_status: str = "Submitted"
    filled: Decimal = Decimal(0)
    value: Decimal = Decimal(0)
    commission: Decimal = Decimal(0)
    triggered: bool = False
    error_code: int | None = None
    error_text: str | None = None
    fills: list[str] = field(default_factory=list)

    @property
    def remaining(self) -> Decimal:
        return self.request.quantity - self.filled

    @property
    def done(self) -> bool:
        return self.ib_status in ("Filled", "Cancelled", "Inactive")

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
            remaining=self.remaining,
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


@dataclass
class _Position:
    quantity: Decimal = Decimal(0)
    avg_cost: Decimal = Decimal(0)


class MemoryBroker:
    """The broker port in memory. See the module docstring for the market model."""

    def __init__(
        self,
        contracts: Iterable[ContractInfo] = (),
        bars: Mapping[str, pd.DataFrame | Iterable[pd.DataFrame]] | None = None,
        *,
        account: str = "DU0000001",
        cash: Decimal = Decimal("1000000"),
        participation: Decimal = Decimal("0.1"),
        client_id: int = 17,
        start: datetime | None = None,
    ) -> None:
        self.account = account
        self.client_id = client_id
        self.participation = participation
        self.cash = cash
        self._contracts: dict[int, ContractInfo] = {c.conid: c for c in contracts}
        self._frames: dict[str, dict[BarSize, pd.DataFrame]] = {}
        self._orders: dict[str, _Order] = {}
        self._executions: list[Execution] = []
        self._positions: dict[int, _Position] = {}
        self._order_ids = itertools.count(1)
        self._perm_ids = itertools.count(1_000_001)
        self._exec_seq = itertools.count(1)
        self._reject_next: tuple[int, str] | None = None
        self._connectivity = Connectivity.DISCONNECTED
        self.connects = 0
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
        size = bar_size or _bars.infer_bar_size(frame)
        self._frames.setdefault(symbol, {})[size] = frame
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

    async def qualify(self, spec: ContractSpec) -> ContractInfo:
        found = await self.contract_details(spec)
        if len(found) != 1:
            what = "ambiguous" if found else "no security definition"
            raise ContractNotFoundError(f"IB error 200: {what} for {spec.symbol} {spec.sec_type} {spec.exchange}")
        return found[0]

    async def historical_bars(self, contract: ContractInfo, request: BarRequest) -> pd.DataFrame:
        self._require_socket()
        frames = self._frames.get(contract.symbol, {})
        if request.bar_size in frames:
            source = frames[request.bar_size]
        else:
            finer = [s for s in frames if _bars.bar_timedelta(s) < _bars.bar_timedelta(request.bar_size)]
            if not finer:
                raise DataError(f"IB error 162: no {request.bar_size} data for {contract.symbol}")
            base = max(finer, key=_bars.bar_timedelta)
            source = _bars.resample(frames[base], request.bar_size)
        end = request.end or self.clock.now
        return _bars.canonical(_bars.window(source, end, request.duration))

    async def snapshot(self, contract: ContractInfo) -> Quote:
        self._require_socket()
        bar, prev = self._current_bar(contract.symbol)
        if bar is None:
            return Quote(time=self.clock.now)
        tick = contract.min_tick
        return Quote(
            time=self.clock.now,
            bid=bar.close - tick,
            ask=bar.close + tick,
            last=bar.close,
            close=prev.close if prev is not None else None,
        )

    async def place_order(self, contract: ContractInfo, request: OrderRequest) -> BrokerOrder:
        if self._connectivity is not Connectivity.CONNECTED:
            raise BrokerConnectionError(f"cannot place {request.order_ref}: broker {self._connectivity}")
        if request.order_ref in self._orders:
            raise OrderRejectedError(
                f"order_ref {request.order_ref} already used", code=103, order_ref=request.order_ref
            )
        if contract.conid not in self._contracts:
            raise OrderRejectedError(f"IB error 200: unknown conid {contract.conid}", code=200)
        order = _Order(request, contract, next(self._order_ids), next(self._perm_ids), self.client_id)
        self._orders[request.order_ref] = order
        rejection = self._rejection(order)
        if rejection is not None:
            order.ib_status, order.error_code, order.error_text = "Cancelled", rejection[0], rejection[1]
            raise OrderRejectedError(
                f"IB error {rejection[0]}: Order rejected - reason: {rejection[1]}",
                code=rejection[0],
                order_ref=request.order_ref,
            )
        bar, _ = self._current_bar(contract.symbol)
        if bar is not None:
            self._try_fill(order, bar, at_placement=True)
        return order.view()

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
            bar, _ = self._current_bar(self._contracts[conid].symbol)
            market_value += p.quantity * (bar.close if bar is not None else p.avg_cost)
        net = self.cash + market_value
        return AccountValues(
            account=self.account,
            net_liquidation=net,
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
        if r.quantity % c.size_increment != 0:
            return 201, f"size {r.quantity} is not a multiple of {c.size_increment}"
        for price in (r.limit_price, r.stop_price):
            if price is not None and price % c.min_tick != 0:
                return 110, f"price {price} does not conform to the minimum price variation {c.min_tick}"
        if r.side is OrderSide.BUY:
            bar, _ = self._current_bar(c.symbol)
            ref = r.limit_price or (bar.close if bar is not None else None)
            if ref is not None and ref * r.quantity > self.cash:
                return 201, "insufficient funds (cash account)"
        return None

    def _frame_for_fills(self, symbol: str, at: datetime) -> pd.DataFrame | None:
        frames = self._frames.get(symbol, {})
        ts = pd.Timestamp(at)
        covering = [(s, f) for s, f in frames.items() if len(f) and f[TIMESTAMP].iloc[0] <= ts <= f[TIMESTAMP].iloc[-1]]
        pool = covering or [(s, f) for s, f in frames.items() if len(f) and f[TIMESTAMP].iloc[0] <= ts]
        if not pool:
            return None
        return min(pool, key=lambda sf: _bars.bar_timedelta(sf[0]))[1]

    def _current_bar(self, symbol: str) -> tuple[BarPrices | None, BarPrices | None]:
        frame = self._frame_for_fills(symbol, self.clock.now)
        if frame is None:
            return None, None
        pos = int(frame[TIMESTAMP].searchsorted(pd.Timestamp(self.clock.now), side="right")) - 1
        if pos < 0:
            return None, None
        prev = _bar(frame.iloc[pos - 1]) if pos > 0 else None
        return _bar(frame.iloc[pos]), prev

    def _timeline(self, symbol: str | None) -> pd.DatetimeIndex:
        frames = [f for s, by in self._frames.items() if symbol in (None, s) for f in by.values()]
        if not frames:
            raise DataError(f"no bars for {symbol or 'any symbol'}")
        return pd.DatetimeIndex(pd.concat([f[TIMESTAMP] for f in frames]).drop_duplicates().sort_values())

    def _on_time_passed(self, old: datetime, new: datetime) -> None:
        working = [o for o in self._orders.values() if not o.done]
        for order in working:
            frame = self._frame_for_fills(order.contract.symbol, new)
            if frame is None:
                continue
            ts = frame[TIMESTAMP]
            passed = frame.loc[(ts > pd.Timestamp(old)) & (ts <= pd.Timestamp(new))]
            for _, row in passed.iterrows():
                self._try_fill(order, _bar(row), at_placement=False, when=row[TIMESTAMP].to_pydatetime())
                if order.done:
                    break

    def _try_fill(self, order: _Order, bar: BarPrices, *, at_placement: bool, when: datetime | None = None) -> None:
        r = order.request
        was_triggered = order.triggered
        price = fill_price(
            r.order_type,
            r.side,
            bar,
            limit=r.limit_price,
            stop=r.stop_price,
            at_placement=at_placement,
            triggered=was_triggered,
        )
        if r.order_type in (OrderType.STOP, OrderType.STOP_LIMIT) and not was_triggered and r.stop_price is not None:
            if at_placement:
                buy = r.side is OrderSide.BUY
                order.triggered = bar.close >= r.stop_price if buy else bar.close <= r.stop_price
            else:
                order.triggered = stop_triggered(r.side, r.stop_price, bar)
        if price is None:
            return
        qty = min(order.remaining, max_fill_quantity(bar, self.participation, order.contract.size_increment))
        if qty <= 0:
            return
        self._book_fill(order, qty, price, when or self.clock.now)

    def _book_fill(self, order: _Order, qty: Decimal, price: Decimal, when: datetime) -> None:
        order.filled += qty
        order.value += qty * price
        total_commission = ib_fixed_commission(order.filled, order.value)
        commission, order.commission = total_commission - order.commission, total_commission
        order.ib_status = "Filled" if order.remaining == 0 else "Submitted"
        signed = qty if order.request.side is OrderSide.BUY else -qty
        realized = self._update_position(order.contract.conid, signed, price, commission)
        self.cash -= signed * price + commission
        exec_id = f"{order.perm_id:08x}.{next(self._exec_seq):08x}.01.01"
        order.fills.append(exec_id)
        self._executions.append(
            Execution(
                exec_id=exec_id,
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

    def _update_position(self, conid: int, signed: Decimal, price: Decimal, commission: Decimal) -> Decimal:
        # IB's avgCost includes commissions; realized P&L is booked on the closing part of a fill.
        pos = self._positions.setdefault(conid, _Position())
        old = pos.quantity
        new = old + signed
        if old == 0 or (old > 0) == (signed > 0):
            pos.avg_cost = (old * pos.avg_cost + signed * price + commission) / new
            pos.quantity = new
            return Decimal(0)
        closing = min(abs(signed), abs(old))
        direction = Decimal(1) if old > 0 else Decimal(-1)
        realized = (price - pos.avg_cost) * closing * direction - commission
        pos.quantity = new
        if new == 0:
            pos.avg_cost = Decimal(0)
        elif (new > 0) != (old > 0):
            pos.avg_cost = price
        return realized


def _matches(c: ContractInfo, spec: ContractSpec) -> bool:
    if spec.conid is not None:
        return c.conid == spec.conid
    return (
        c.symbol == spec.symbol.upper()
        and c.sec_type == spec.sec_type
        and c.currency == spec.currency
        and (spec.primary_exchange is None or c.primary_exchange == spec.primary_exchange)
    )


def _bar(row: pd.Series) -> BarPrices:
    return BarPrices(
        open=_bars.to_decimal(row["open"]),
        high=_bars.to_decimal(row["high"]),
        low=_bars.to_decimal(row["low"]),
        close=_bars.to_decimal(row["close"]),
        volume=_bars.to_decimal(row["volume"]),
    )
