"""The broker's book: orders, executions, positions and cash. Lives as long as the server, across client reconnects.

Nothing here talks to a socket; :mod:`simulator.server` turns changes into messages. Money is ``Decimal``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from services.market import Position


class SimOrderStatus(StrEnum):
    """TWS order status strings the simulator uses."""

    PRE_SUBMITTED = "PreSubmitted"
    SUBMITTED = "Submitted"
    FILLED = "Filled"
    CANCELLED = "Cancelled"
    INACTIVE = "Inactive"


DONE_STATUSES = frozenset({SimOrderStatus.FILLED, SimOrderStatus.CANCELLED, SimOrderStatus.INACTIVE})


@dataclass
class SimOrder:
    """One order as the broker knows it. ``perm_id`` is unique across clients and sessions."""

    client_id: int
    order_id: int
    perm_id: int
    con_id: int
    account: str
    action: str  # BUY / SELL
    quantity: Decimal
    order_type: str  # MKT, LMT, STP, STP LMT, TRAIL
    lmt_price: Decimal | None
    aux_price: Decimal | None  # STP / STP LMT: the stop; TRAIL: the trailing amount (as at IB)
    tif: str
    order_ref: str
    outside_rth: bool
    parent_id: int
    placed_at: datetime
    oca_group: str = ""
    status: SimOrderStatus = SimOrderStatus.SUBMITTED
    filled: Decimal = Decimal(0)
    avg_fill_price: Decimal = Decimal(0)
    last_fill_price: Decimal = Decimal(0)
    commission_paid: Decimal = Decimal(0)
    triggered: bool = False  # stop orders: the stop price was touched
    completed_at: datetime | None = None
    completed_status: str = ""
    why_held: str = ""
    oca_type: int = 0  # placeOrder's ocaType: 1 cancel the group on a fill, 2/3 (and 0, unset) reduce it
    placed_quantity: Decimal | None = None  # a bracket child's size as placed (it covers at most that)
    parent_perm_id: int = 0
    trail_stop_price: Decimal | None = None  # TRAIL: where the stop is now (placed as trailStopPrice)
    trailing_percent: Decimal | None = None  # TRAIL: the distance as a percent (instead of aux_price)

    @property
    def remaining(self) -> Decimal:
        return self.quantity - self.filled

    @property
    def is_done(self) -> bool:
        return self.status in DONE_STATUSES

    @property
    def sign(self) -> int:
        return 1 if self.action == "BUY" else -1


@dataclass
class SimExecution:
    """One fill (execDetails + its commissionReport)."""

    exec_id: str
    perm_id: int
    order_id: int
    client_id: int
    con_id: int
    account: str
    side: str  # BOT / SLD
    shares: Decimal
    price: Decimal
    time: datetime
    cum_qty: Decimal
    avg_price: Decimal
    order_ref: str
    commission: Decimal
    realized_pnl: Decimal | None  # None when the fill opened or increased a position


@dataclass
class SimPosition(Position):
    """A position of ``account`` in ``con_id``; booked by :class:`services.market.Position` (IB's avgCost)."""

    account: str
    con_id: int


@dataclass(frozen=True)
class PlacedOrder:
    """One placeOrder as it arrived (kept even when rejected or a duplicate): the broker-side audit log."""

    client_id: int
    order_id: int
    order_ref: str
    action: str
    quantity: str
    market_time: datetime  # the simulator's market clock at arrival
    wall_time: float  # time.time() at arrival
    transmit: bool = True
    parent_id: int = 0


@dataclass
class SimState:
    """Everything that survives a client reconnect."""

    accounts: tuple[str, ...]
    cash: dict[str, Decimal]
    orders: dict[int, SimOrder] = field(default_factory=dict)  # by permId
    executions: list[SimExecution] = field(default_factory=list)
    positions: dict[tuple[str, int], SimPosition] = field(default_factory=dict)
    next_order_id: dict[int, int] = field(default_factory=dict)  # per clientId
    rejected: list[tuple[int, int, str]] = field(default_factory=list)  # (clientId, orderId, reason)
    placed: list[PlacedOrder] = field(default_factory=list)  # every placeOrder received, in arrival order
    _next_perm_id: int = 1_000_000_001
    _exec_seq: int = 0

    def new_perm_id(self) -> int:
        perm_id = self._next_perm_id
        self._next_perm_id += 1
        return perm_id

    def new_exec_id(self, perm_id: int) -> str:
        self._exec_seq += 1
        return f"0000e0d5.{perm_id:08x}.{self._exec_seq:02d}.01"

    def order_by_client(self, client_id: int, order_id: int) -> SimOrder | None:
        for order in self.orders.values():
            if order.client_id == client_id and order.order_id == order_id:
                return order
        return None

    def open_orders(self, client_id: int | None = None) -> list[SimOrder]:
        return [o for o in self.orders.values() if not o.is_done and (client_id is None or o.client_id == client_id)]

    def completed_orders(self) -> list[SimOrder]:
        return [o for o in self.orders.values() if o.is_done]

    def orders_by_ref(self, order_ref: str) -> list[SimOrder]:
        return [o for o in self.orders.values() if o.order_ref == order_ref]

    def position(self, account: str, con_id: int) -> SimPosition:
        key = (account, con_id)
        if key not in self.positions:
            self.positions[key] = SimPosition(account, con_id)
        return self.positions[key]

    def note_order_id(self, client_id: int, order_id: int) -> None:
        self.next_order_id[client_id] = max(self.next_order_id.get(client_id, 1), order_id + 1)

    def apply_fill(
        self, account: str, con_id: int, signed_qty: Decimal, price: Decimal, commission: Decimal
    ) -> Decimal | None:
        """Book a fill into position and cash; return realized P&L (net of commission) if it closed shares."""
        self.cash[account] = self.cash.get(account, Decimal(0)) - signed_qty * price - commission
        return self.position(account, con_id).fill(signed_qty, price, commission)
