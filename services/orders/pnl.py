"""P&L per symbol and in total (realized, unrealized, commissions), marks from the broker, snapshots over time.

Realized P&L is net of commissions (the closing fill's commission is deducted when booked; an opening fill's
commission raises the average cost, so it shows in unrealized until the position closes). ``since`` limits
realized P&L and commissions to fills executed since then (``trader pnl --day``); unrealized is always the open
positions' P&L at the marks against their average cost.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy.orm import Session

from models.enums import SecType
from models.tables import PnlSnapshot
from services.broker.types import ContractSpec
from services.db import session_scope
from services.errors import TraderError
from services.orders.context import fetch_account
from services.positions import PositionState
from services.repositories import fills as fills_repo
from services.repositories import pnl as pnl_repo

if TYPE_CHECKING:  # submit imports this module (marks for the send-time gate)
    from services.orders.submit import OrderBroker

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


CHART_WIDTH: Final = 640
CHART_HEIGHT: Final = 280


def pnl_figure(snapshots: Sequence[PnlSnapshot]) -> dict[str, Any]:
    """A small Plotly figure dict: realized, unrealized and total P&L over time."""
    times = [s.at.isoformat() for s in snapshots]

    def line(name: str, values: list[float], color: str) -> dict[str, Any]:
        return {"type": "scatter", "mode": "lines+markers", "name": name, "x": times, "y": values,
                "line": {"color": color, "width": 2}, "marker": {"size": 4}}  # fmt: skip

    realized = [float(s.realized) for s in snapshots]
    unrealized = [float(s.unrealized) for s in snapshots]
    total = [r + u for r, u in zip(realized, unrealized, strict=True)]
    return {
        "data": [
            line("total", total, "#1f77b4"),
            line("realized", realized, "#2ca02c"),
            line("unrealized", unrealized, "#ff7f0e"),
        ],
        "layout": {
            "title": {"text": "Account P&L (USD)", "font": {"size": 14}},
            "margin": {"l": 50, "r": 10, "t": 36, "b": 40},
            "legend": {"orientation": "h", "y": -0.2},
            "xaxis": {"type": "date"},
            "template": "plotly_white",
        },
    }


def pnl_markdown(snapshots: Sequence[PnlSnapshot], render: Callable[[dict[str, Any]], bytes] | None) -> str:
    """Markdown for the ``pnl-history`` artifact: the chart as an inline PNG (when ``render`` works), then a
    table of the latest snapshots (always: the figures stay readable if no image can be made)."""
    parts = ["# Account P&L over time", ""]
    if not snapshots:
        return "\n".join([*parts, "no snapshots yet"])
    if render is not None and len(snapshots) >= 2:
        try:
            png = render(pnl_figure(snapshots))
            uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
            parts += [f"![P&L over time]({uri})", ""]
        except TraderError as exc:
            parts += [f"(no chart: {exc})", ""]
    parts += ["| at (UTC) | realized | unrealized | total | equity |", "|---|---|---|---|---|"]
    for s in list(snapshots)[-10:][::-1]:
        equity = f"{s.equity:.2f}" if s.equity is not None else ""
        parts.append(
            f"| {s.at:%Y-%m-%d %H:%M:%S} | {s.realized:.2f} | {s.unrealized:.2f} | {s.realized + s.unrealized:.2f} "
            f"| {equity} |"
        )
    return "\n".join(parts)
