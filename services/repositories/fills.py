"""Fills (IB executions), deduplicated by ``exec_id``.

IB corrects an execution by re-sending it with the same ``exec_id`` prefix and a higher suffix after the last
period (``...01`` -> ``...02``). The newest version counts; older ones keep their row with ``superseded_by``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.enums import OrderSide
from models.tables import Fill, Order


@dataclass(frozen=True)
class ExecId:
    prefix: str
    revision: int

    @classmethod
    def parse(cls, exec_id: str) -> ExecId:
        head, sep, tail = exec_id.rpartition(".")
        if sep and tail.isdigit():
            return cls(head, int(tail))
        return cls(exec_id, 0)


def get(session: Session, exec_id: str) -> Fill | None:
    return session.scalars(select(Fill).where(Fill.exec_id == exec_id)).one_or_none()


def record(
    session: Session,
    *,
    exec_id: str,
    symbol: str,
    side: OrderSide,
    quantity: Decimal,
    price: Decimal,
    executed_at: dt.datetime,
    order_id: int | None = None,
    perm_id: int | None = None,
    conid: int | None = None,
    commission: Decimal | None = None,
    realized_pnl: Decimal | None = None,
) -> tuple[Fill, bool]:
    """Store a fill once; return ``(row, created)``. A known exec_id only gains a late commission report."""
    existing = get(session, exec_id)
    if existing is not None:
        if existing.commission is None and commission is not None:
            existing.commission = commission
            existing.realized_pnl = realized_pnl
            session.flush()
        if existing.order_id is None and order_id is not None:
            existing.order_id = order_id
            session.flush()
        return existing, False
    parsed = ExecId.parse(exec_id)
    row = Fill(
        exec_id=exec_id,
        order_id=order_id,
        ib_perm_id=perm_id,
        conid=conid,
        symbol=symbol.upper(),
        side=side,
        quantity=quantity,
        price=price,
        commission=commission,
        realized_pnl=realized_pnl,
        executed_at=executed_at.astimezone(dt.UTC),
    )
    # corrections: the highest revision of a prefix is the effective one
    siblings = [
        f
        for f in session.scalars(select(Fill).where(Fill.exec_id.like(f"{parsed.prefix}.%")))
        if ExecId.parse(f.exec_id).prefix == parsed.prefix
    ]
    newest = max(siblings, key=lambda f: ExecId.parse(f.exec_id).revision, default=None)
    if newest is not None and ExecId.parse(newest.exec_id).revision > parsed.revision:
        row.superseded_by = newest.exec_id
    else:
        for sibling in siblings:
            sibling.superseded_by = exec_id
    session.add(row)
    session.flush()
    return row, True


def effective(
    session: Session,
    *,
    symbol: str | None = None,
    order_id: int | None = None,
    since: dt.datetime | None = None,
    strategy_name: str | None = None,
) -> list[Fill]:
    """Fills that count (not superseded by a correction), oldest first; ``strategy_name``: of its orders only."""
    query = select(Fill).where(Fill.superseded_by.is_(None))
    if strategy_name is not None:
        query = query.join(Order, Fill.order_id == Order.id).where(Order.strategy_name == strategy_name)
    if symbol is not None:
        query = query.where(Fill.symbol == symbol.upper())
    if order_id is not None:
        query = query.where(Fill.order_id == order_id)
    if since is not None:
        query = query.where(Fill.executed_at >= since)
    return list(session.scalars(query.order_by(Fill.executed_at, Fill.id)))


def for_orders(session: Session, order_ids: Sequence[int]) -> list[Fill]:
    if not order_ids:
        return []
    query = select(Fill).where(Fill.order_id.in_(list(order_ids)), Fill.superseded_by.is_(None))
    return list(session.scalars(query.order_by(Fill.id)))


def last_price(session: Session, symbol: str) -> Decimal | None:
    """The price of the symbol's newest effective fill, or None."""
    query = (
        select(Fill.price)
        .where(Fill.symbol == symbol.upper(), Fill.superseded_by.is_(None))
        .order_by(Fill.executed_at.desc(), Fill.id.desc())
        .limit(1)
    )
    price: Decimal | None = session.scalar(query)
    return price
