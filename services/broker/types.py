"""Our broker value types: what the rest of the system sees instead of ib_async's objects.

Every type is a frozen dataclass. Money and quantities are ``Decimal``; datetimes are timezone-aware UTC.
``order_ref`` is our idempotency key (IB's ``orderRef``); ``perm_id`` is IB's account-wide order id.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from models.enums import BarSize, OrderSide, OrderStatus, OrderType, SecType, TimeInForce, WhatToShow
from services.market.matching import Trail


class Connectivity(StrEnum):
    """State of the link to the broker, as far as the adapter knows it."""

    DISCONNECTED = "disconnected"  # no socket
    CONNECTING = "connecting"  # socket being opened or re-opened (backoff in progress)
    CONNECTED = "connected"  # socket up and TWS linked to IB
    LOST = "lost"  # socket up, TWS <-> IB link down (1100) until 1101/1102


@dataclass(frozen=True)
class LinkStatus:
    """What an operator needs to know about the broker session (``trader broker status``, the
    ``broker-connectivity`` artifact). Times are UTC."""

    state: Connectivity
    changed_at: datetime | None  # last change of ``state`` (None: never connected)
    down_since: datetime | None  # first moment of the current outage (None while connected)
    reconnecting: bool  # a reconnect loop is running: the session heals by itself
    attempts: int  # failed reconnect attempts in the current outage
    reconnects: int  # outages healed since the session was built
    server_version: int | None
    endpoint: str  # host:port clientId

    def rows(self) -> list[tuple[str, str]]:
        """(field, value) pairs for a CLI table or an artifact."""

        def at(moment: datetime | None) -> str:
            return moment.isoformat(timespec="seconds") if moment is not None else "-"

        return [
            ("state", self.state.value),
            ("last change", at(self.changed_at)),
            ("disconnected since", at(self.down_since)),
            ("reconnecting", "yes" if self.reconnecting else "no"),
            ("failed attempts (this outage)", str(self.attempts)),
            ("reconnects", str(self.reconnects)),
            ("server version", str(self.server_version) if self.server_version is not None else "-"),
            ("endpoint", self.endpoint),
        ]


@dataclass(frozen=True)
class ContractSpec:
    """What the caller asks for: enough to identify one contract (``conid`` wins when given)."""

    symbol: str
    sec_type: SecType = SecType.STK
    exchange: str = "SMART"
    currency: str = "USD"
    conid: int | None = None
    primary_exchange: str | None = None


@dataclass(frozen=True)
class ContractInfo:
    """A resolved contract with IB's details; serialisable for the contract-details cache."""

    conid: int
    symbol: str
    sec_type: SecType
    exchange: str
    primary_exchange: str
    currency: str
    min_tick: Decimal
    size_increment: Decimal = Decimal("1")
    long_name: str = ""
    time_zone_id: str = ""
    trading_hours: str = ""
    liquid_hours: str = ""
    local_symbol: str = ""
    trading_class: str = ""
    multiplier: str = ""
    valid_exchanges: str = ""
    order_types: str = ""
    industry: str = ""
    category: str = ""

    def to_spec(self) -> ContractSpec:
        """Return a spec that identifies exactly this contract."""
        return ContractSpec(
            symbol=self.symbol,
            sec_type=self.sec_type,
            exchange=self.exchange,
            currency=self.currency,
            conid=self.conid,
            primary_exchange=self.primary_exchange or None,
        )

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-safe dict (decimals as strings) for the DB cache."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = str(value) if isinstance(value, Decimal | StrEnum) else value
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ContractInfo:
        """Rebuild from :meth:`to_json` output; unknown keys are ignored so old cache rows still load."""
        known = {f.name for f in fields(cls)}
        kwargs: dict[str, Any] = {k: v for k, v in data.items() if k in known}
        kwargs["conid"] = int(kwargs["conid"])
        kwargs["sec_type"] = SecType(kwargs["sec_type"])
        for name in ("min_tick", "size_increment"):
            if name in kwargs:
                kwargs[name] = Decimal(str(kwargs[name]))
        return cls(**kwargs)


MAX_SYMBOL_MATCHES = 16  # IB's reqMatchingSymbols answers at most 16 descriptions


@dataclass(frozen=True)
class SymbolMatch:
    """One of IB's answers to a symbol search (``reqMatchingSymbols``: a ContractDescription).

    ``sec_type`` is IB's spelling (it may be a type the system does not trade); ``derivative_sec_types`` lists the
    derivative kinds IB lists on it (``OPT``, ``WAR``...); ``description`` is the long name (server version >= 176).
    """

    conid: int
    symbol: str
    sec_type: str
    primary_exchange: str
    currency: str
    derivative_sec_types: tuple[str, ...] = ()
    description: str = ""
    issuer_id: str = ""


def symbol_match_rank(pattern: str, symbol: str, long_name: str) -> int | None:
    """IB's matching rule for a symbol search, case-insensitive: 0 when ``pattern`` starts the ticker, 1 when it
    starts a word of the security's name (a several-word pattern: from a word start), ``None`` for no match.
    Answers are listed by rank, then symbol."""
    needle = " ".join(pattern.split()).upper()
    if not needle:
        return None
    if symbol.upper().startswith(needle):
        return 0
    return 1 if f" {needle}" in f" {' '.join(long_name.split()).upper()}" else None


@dataclass(frozen=True)
class BarRequest:
    """One historical-bars request. ``end=None`` means "up to now"; ``duration`` uses IB's syntax ("5 D", "1 Y")."""

    bar_size: BarSize
    duration: str
    end: datetime | None = None
    what_to_show: WhatToShow = WhatToShow.TRADES
    use_rth: bool = True

    def __post_init__(self) -> None:
        if self.end is not None and self.end.tzinfo is None:
            raise ValueError("BarRequest.end must be timezone-aware")


@dataclass(frozen=True)
class Quote:
    """A market-data snapshot; any field may be missing (no subscription, market closed)."""

    time: datetime
    bid: Decimal | None = None
    ask: Decimal | None = None
    last: Decimal | None = None
    close: Decimal | None = None


@dataclass(frozen=True)
class OrderRequest:
    """An order to place. ``order_ref`` is our idempotency key and comes back on every report."""

    order_ref: str
    side: OrderSide
    quantity: Decimal
    order_type: OrderType = OrderType.MARKET
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    tif: TimeInForce = TimeInForce.DAY
    account: str | None = None
    oca_group: str | None = None  # one-cancels-all group (the broker reduces the others by each fill)
    trail: Trail | None = None  # TRAIL: how the stop follows the price (``stop_price`` is where it starts)

    def __post_init__(self) -> None:
        if not self.order_ref:
            raise ValueError("order_ref is required")
        if self.quantity <= 0:
            raise ValueError("quantity must be positive")
        if self.order_type in (OrderType.LIMIT, OrderType.STOP_LIMIT) and self.limit_price is None:
            raise ValueError(f"{self.order_type} order needs limit_price")
        if self.order_type in (OrderType.STOP, OrderType.STOP_LIMIT, OrderType.TRAIL) and self.stop_price is None:
            raise ValueError(f"{self.order_type} order needs stop_price")
        if (self.order_type is OrderType.TRAIL) != (self.trail is not None):
            raise ValueError("a TRAIL order, and only a TRAIL order, has a trail")


class BracketRole(StrEnum):
    """A bracket order's part; a child's orderRef is ``<entry orderRef>:<role>``."""

    ENTRY = "entry"
    TAKE_PROFIT = "TP"
    STOP_LOSS = "SL"

    @classmethod
    def children(cls) -> tuple[BracketRole, BracketRole]:
        """The protective parts, in a bracket's order (take-profit, stop-loss)."""
        return cls.TAKE_PROFIT, cls.STOP_LOSS


def child_ref(entry_ref: str, role: BracketRole) -> str:
    """The orderRef (and our idempotency key) of a bracket child."""
    return f"{entry_ref}:{role.value}"


def bracket_role(order_ref: str) -> BracketRole:
    """Which part of a bracket ``order_ref`` names (``entry`` for any plain order)."""
    for role in (BracketRole.TAKE_PROFIT, BracketRole.STOP_LOSS):
        if order_ref.endswith(f":{role.value}"):
            return role
    return BracketRole.ENTRY


@dataclass(frozen=True)
class Bracket:
    """An entry with its protective exits (IB bracket_order.html): a take-profit LMT and/or a protective STP, both
    attached to the entry (parentId) and in one OCA group named after the entry's orderRef. The broker works the
    children only once the entry has filled, for the filled quantity."""

    entry: OrderRequest
    take_profit: OrderRequest | None = None
    stop_loss: OrderRequest | None = None
    entry_perm_id: int | None = None  # the entry's IB permId once known: found by it too, it is never sent again

    def __post_init__(self) -> None:
        if not self.children:
            raise ValueError("a bracket needs a take-profit or a stop-loss")
        for role, child in ((BracketRole.TAKE_PROFIT, self.take_profit), (BracketRole.STOP_LOSS, self.stop_loss)):
            if child is None:
                continue
            if child.side is self.entry.side:
                raise ValueError(f"the {role.value} child must be on the opposite side of the entry")
            if child.order_ref != child_ref(self.entry.order_ref, role):
                raise ValueError(f"the {role.value} child's order_ref must be {child_ref(self.entry.order_ref, role)}")

    @property
    def children(self) -> list[OrderRequest]:
        return [c for c in (self.take_profit, self.stop_loss) if c is not None]

    @property
    def orders(self) -> list[OrderRequest]:
        """Entry first, then the children in the order they are transmitted (the last one transmits all)."""
        return [self.entry, *self.children]

    @property
    def oca_group(self) -> str:
        return self.entry.order_ref


@dataclass(frozen=True)
class BrokerOrder:
    """The broker's view of one order (open or completed)."""

    order_ref: str
    order_id: int | None
    perm_id: int | None
    client_id: int | None
    ib_status: str
    status: OrderStatus
    filled: Decimal
    remaining: Decimal
    avg_fill_price: Decimal | None
    symbol: str
    conid: int
    side: OrderSide
    quantity: Decimal
    order_type: OrderType
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    tif: TimeInForce = TimeInForce.DAY
    account: str | None = None
    last_error_code: int | None = None
    last_error_text: str | None = None
    parent_order_id: int | None = None  # IB orderId of a bracket child's parent (open orders)
    parent_perm_id: int | None = None  # and its permId (completed orders carry only this one)
    oca_group: str = ""

    @property
    def is_done(self) -> bool:
        return self.status in _DONE


_DONE = frozenset(
    {OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.REJECTED, OrderStatus.INACTIVE, OrderStatus.EXPIRED}
)


@dataclass(frozen=True)
class Execution:
    """One fill. ``commission`` is ``None`` until IB's commission report for ``exec_id`` arrives."""

    exec_id: str
    perm_id: int | None
    order_id: int | None
    order_ref: str
    conid: int
    symbol: str
    side: OrderSide
    quantity: Decimal
    price: Decimal
    time: datetime
    commission: Decimal | None = None
    realized_pnl: Decimal | None = None
    account: str | None = None


@dataclass(frozen=True)
class BrokerPosition:
    account: str
    conid: int
    symbol: str
    quantity: Decimal
    avg_cost: Decimal


@dataclass(frozen=True)
class AccountValues:
    """Headline account figures in ``currency``; ``None`` when the broker did not report the tag."""

    account: str
    currency: str = "USD"
    net_liquidation: Decimal | None = None
    buying_power: Decimal | None = None
    available_funds: Decimal | None = None
    total_cash: Decimal | None = None
    extra: dict[str, str] = field(default_factory=dict, compare=False)
