"""Positions per contract, as rebuilt from fills by :mod:`services.positions`."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.tables import Position, utc_now
from services.repositories._common import insert_if_absent


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
    values: dict[str, Any] = {
        "symbol": symbol.upper(),
        "quantity": quantity,
        "avg_cost": avg_cost,
        "realized_pnl": realized_pnl,
        "commissions": commissions,
        "updated_at": utc_now(),
    }
    row = get(session, conid)
    if row is None:  # created race-free: the first fills of one contract may be recorded concurrently
        insert_if_absent(session, Position, "conid", {"conid": conid, **values})
        row = get(session, conid)
        assert row is not None
    for name, value in values.items():
        setattr(row, name, value)
    session.flush()
    return row
