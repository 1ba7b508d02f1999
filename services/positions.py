"""Positions from fills: average cost, realized P&L on reductions, commissions, unrealized from a mark price.

Fills are applied in execution order; superseded corrections are skipped (``fills.effective``). Each position is
booked by the market model's book (:class:`services.market.Position`): realized P&L on the closing part of a
fill, net of that fill's commission; opening commissions raise the average cost (IB's convention, so
:func:`compare` can check against the broker's ``avgCost``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Final, Protocol

from sqlalchemy.orm import Session

from models.enums import OrderSide
from services.broker.types import BrokerPosition
from services.market import Position
from services.repositories import fills as fills_repo
from services.repositories import positions as positions_repo

PRICE_Q: Final = Decimal("0.00000001")


class FillLike(Protocol):
    @property
    def exec_id(self) -> str: ...
    @property
    def conid(self) -> int | None: ...
    @property
    def symbol(self) -> str: ...
    @property
    def side(self) -> OrderSide: ...
    @property
    def quantity(self) -> Decimal: ...
    @property
    def price(self) -> Decimal: ...
    @property
    def commission(self) -> Decimal | None: ...
    @property
    def executed_at(self) -> dt.datetime: ...


@dataclass
class PositionState(Position):
    """One conid's position from our fills (each ``exec_id`` booked once)."""

    conid: int
    symbol: str
    exec_ids: set[str] = field(default_factory=set, repr=False)

    def apply(self, fill: FillLike) -> Decimal:
        """Apply one fill (once per exec_id); return the P&L it realized (0 when it only opened)."""
        if fill.exec_id in self.exec_ids:
            return Decimal(0)
        self.exec_ids.add(fill.exec_id)
        signed = fill.quantity if fill.side is OrderSide.BUY else -fill.quantity
        realized = self.fill(signed, fill.price, fill.commission or Decimal(0))
        return Decimal(0) if realized is None else realized


def build_positions(fills: Iterable[FillLike]) -> dict[int, PositionState]:
    """Replay fills (oldest first) into positions keyed by conid (fills without a conid are keyed by -1)."""
    out: dict[int, PositionState] = {}
    for fill in sorted(fills, key=lambda f: f.executed_at):
        conid = fill.conid if fill.conid is not None else -1
        state = out.setdefault(conid, PositionState(conid, fill.symbol))
        state.apply(fill)
    return out


def strategy_position(session: Session, strategy_name: str, symbol: str) -> Decimal:
    """The signed quantity a strategy holds in ``symbol``: the effective fills of its own orders (the account's
    position is per contract and may hold other strategies' shares)."""
    return strategy_holding(session, strategy_name, symbol)[0]


def strategy_holding(session: Session, strategy_name: str, symbol: str) -> tuple[Decimal, dt.datetime | None]:
    """The strategy's signed quantity in ``symbol`` (as :func:`strategy_position`) and when that position was opened
    (the time of its first fill since it was last flat; None when it holds nothing), from one read of its fills."""
    held, opened = Decimal(0), None
    for f in fills_repo.effective(session, symbol=symbol, strategy_name=strategy_name):  # oldest first
        before = held
        held += f.quantity if f.side is OrderSide.BUY else -f.quantity
        if held == 0:
            opened = None
        elif before == 0 or (before > 0) != (held > 0):  # opened from flat, or flipped through it
            opened = f.executed_at
    return held, opened


def rebuild(session: Session) -> dict[int, PositionState]:
    """Rebuild the ``positions`` table from the effective fills; return the states."""
    states = build_positions(fills_repo.effective(session))
    for state in states.values():
        if state.conid < 0:
            continue
        positions_repo.upsert(
            session,
            conid=state.conid,
            symbol=state.symbol,
            quantity=state.quantity,
            avg_cost=state.avg_cost.quantize(PRICE_Q),
            realized_pnl=state.realized_pnl.quantize(PRICE_Q),
            commissions=state.commissions.quantize(PRICE_Q),
        )
    return states


@dataclass(frozen=True)
class DayPnl:
    realized: Decimal
    unrealized: Decimal

    @property
    def total(self) -> Decimal:
        return self.realized + self.unrealized


def pnl_since(session: Session, since: dt.datetime, marks: Mapping[str, Decimal]) -> DayPnl:
    """Realized P&L of fills executed since ``since`` plus the unrealized P&L of open positions at ``marks``.

    Unrealized is measured against the average cost (not the session-open mark), so a position carried from an
    earlier day counts its whole open P&L: conservative for a loss limit.
    """
    realized = Decimal(0)
    states: dict[int, PositionState] = {}
    for fill in fills_repo.effective(session):
        conid = fill.conid if fill.conid is not None else -1
        state = states.setdefault(conid, PositionState(conid, fill.symbol))
        gained = state.apply(fill)
        if fill.executed_at >= since:
            realized += gained if gained else -(fill.commission or Decimal(0))
    unrealized = sum((s.unrealized(marks.get(s.symbol)) for s in states.values()), Decimal(0))
    return DayPnl(realized, unrealized)


@dataclass(frozen=True)
class PositionDifference:
    conid: int
    symbol: str
    ours: Decimal
    broker: Decimal
    detail: str


def compare(
    ours: Mapping[int, PositionState], broker: Iterable[BrokerPosition], *, cost_tolerance: Decimal = Decimal("0.01")
) -> list[PositionDifference]:
    """Differences between our positions and the broker's (quantity, then average cost)."""
    theirs = {p.conid: p for p in broker}
    out: list[PositionDifference] = []
    for conid in sorted(set(ours) | set(theirs)):
        if conid < 0:
            continue
        mine = ours.get(conid)
        other = theirs.get(conid)
        q_ours = mine.quantity if mine else Decimal(0)
        q_broker = other.quantity if other else Decimal(0)
        symbol = (mine.symbol if mine else None) or (other.symbol if other else "?")
        if q_ours != q_broker:
            out.append(PositionDifference(conid, symbol, q_ours, q_broker, f"quantity {q_ours} vs broker {q_broker}"))
        elif mine and other and q_ours != 0 and abs(mine.avg_cost - other.avg_cost) > cost_tolerance:
            detail = f"avg cost {mine.avg_cost:.4f} vs broker {other.avg_cost}"
            out.append(PositionDifference(conid, symbol, q_ours, q_broker, detail))
    return out
