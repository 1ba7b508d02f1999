"""P&L per symbol and in total (realized, unrealized, commissions), marks from the broker, snapshots over time.

Realized P&L is net of commissions (the closing fill's commission is deducted when booked; an opening fill's
commission raises the average cost, so it shows in unrealized until the position closes). ``since`` limits
realized P&L and commissions to fills executed since then (``trader pnl --day``); unrealized is always the open
positions' P&L at the marks against their average cost.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

from sqlalchemy.orm import Session

from models.enums import SecType
from services.broker.types import ContractSpec
from services.db import session_scope
from services.errors import TraderError
from services.orders.context import fetch_account
from services.orders.submit import OrderBroker
from services.positions import PositionState
from services.repositories import fills as fills_repo
from services.repositories import pnl as pnl_repo

Q: Final = Decimal("0.00000001")


@dataclass(frozen=True)
class SymbolPnl:
    symbol: str
    conid: int
    quantity: Decimal
    avg_cost: Decimal
    realized: Decimal
    commissions: Decimal
    mark: Decimal | None
    unrealized: Decimal | None  # None: an open position without a mark


@dataclass(frozen=True)
class PnlReport:
    rows: tuple[SymbolPnl, ...]
    since: dt.datetime | None

    @property
    def realized(self) -> Decimal:
        return sum((r.realized for r in self.rows), Decimal(0))

    @property
    def unrealized(self) -> Decimal:
        return sum((r.unrealized or Decimal(0) for r in self.rows), Decimal(0))

    @property
    def commissions(self) -> Decimal:
        return sum((r.commissions for r in self.rows), Decimal(0))

    @property
    def unmarked(self) -> list[str]:
        return [r.symbol for r in self.rows if r.unrealized is None]


def pnl_report(session: Session, marks: Mapping[str, Decimal], *, since: dt.datetime | None = None) -> PnlReport:
    """Replay the effective fills into per-symbol P&L (realized/commissions since ``since`` when given)."""
    states: dict[int, PositionState] = {}
    realized: dict[int, Decimal] = {}
    commissions: dict[int, Decimal] = {}
    for fill in fills_repo.effective(session):
        conid = fill.conid if fill.conid is not None else -1
        state = states.setdefault(conid, PositionState(conid, fill.symbol))
        gained = state.apply(fill)
        if since is None or fill.executed_at >= since:
            realized[conid] = realized.get(conid, Decimal(0)) + gained
            commissions[conid] = commissions.get(conid, Decimal(0)) + (fill.commission or Decimal(0))
    rows: list[SymbolPnl] = []
    for conid, state in sorted(states.items(), key=lambda kv: kv[1].symbol):
        mark = marks.get(state.symbol)
        unrealized = state.unrealized(mark) if (mark is not None or state.quantity == 0) else None
        rows.append(
            SymbolPnl(
                symbol=state.symbol,
                conid=conid,
                quantity=state.quantity,
                avg_cost=state.avg_cost.quantize(Q),
                realized=realized.get(conid, Decimal(0)).quantize(Q),
                commissions=commissions.get(conid, Decimal(0)).quantize(Q),
                mark=mark,
                unrealized=unrealized.quantize(Q) if unrealized is not None else None,
            )
        )
    return PnlReport(tuple(rows), since)


def broker_marks(broker: OrderBroker, positions: Mapping[str, int | None]) -> dict[str, Decimal]:
    """Mark prices (last, else bid/ask mid, else previous close) for ``symbol -> conid`` from broker snapshots.

    A symbol the broker cannot quote is left out (its unrealized P&L is then unknown, never invented).
    """
    marks: dict[str, Decimal] = {}
    qualify = getattr(broker, "qualify", None)
    snapshot = getattr(broker, "snapshot", None)
    if qualify is None or snapshot is None:
        return marks
    for symbol, conid in positions.items():
        try:
            quote = snapshot(qualify(ContractSpec(symbol, SecType.STK, conid=conid)))
        except TraderError:
            continue
        if quote.last is not None:
            marks[symbol] = quote.last
        elif quote.bid is not None and quote.ask is not None:
            marks[symbol] = (quote.bid + quote.ask) / 2
        elif quote.close is not None:
            marks[symbol] = quote.close
    return marks


def open_positions(session: Session) -> dict[str, int | None]:
    """``symbol -> conid`` of the positions that are not flat (replayed from fills)."""
    report = pnl_report(session, {})
    return {r.symbol: (r.conid if r.conid >= 0 else None) for r in report.rows if r.quantity != 0}


def take_snapshot(db_url: str, broker: OrderBroker | None, now: dt.datetime) -> PnlReport:
    """Store one ``pnl_snapshots`` row (total realized, unrealized at broker marks, account equity)."""
    with session_scope(db_url) as session:
        held = open_positions(session)
    marks = broker_marks(broker, held) if broker is not None and held else {}
    account = fetch_account(broker) if broker is not None else None
    with session_scope(db_url) as session:
        report = pnl_report(session, marks)
        pnl_repo.add(
            session,
            at=now,
            realized=report.realized.quantize(Q),
            unrealized=report.unrealized.quantize(Q),
            equity=account.net_liquidation.quantize(Q) if account and account.net_liquidation is not None else None,
        )
    return report
