"""Positions per contract, as rebuilt from fills by :mod:`services.positions`."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.tables import Position, utc_now


def get(session: Session, conid: int) -> Position | None:
    return session.scalars(select(Position).where(Position.conid == conid)).one_or_none()


def by_symbol(session: Session, symbol: str) -> list[Position]:
    return list(session.scalars(select(Position).where(Position.symbol == symbol.upper())))


def all_positions(session: Session) -> list[Position]:
    return list(session.scalars(select(Position).order_by(Position.symbol)))


def upsert(
    session: Session,
    *,
    conid: int,
    symbol: str,
    quantity: Decimal,
    avg_cost: Decimal,
    realized_pnl: Decimal,
    commissions: Decimal,
) -> Position:
    row = get(session, conid)
    if row is None:
        row = Position(conid=conid, symbol=symbol.upper())
        session.add(row)
    row.quantity = quantity
    row.avg_cost = avg_cost
    row.realized_pnl = realized_pnl
    row.commissions = commissions
    row.updated_at = utc_now()
    session.flush()
    return row
