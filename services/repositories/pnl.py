"""Account P&L snapshots over time (one row per order-monitor run), for the P&L chart."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.tables import PnlSnapshot


def add(
    session: Session, *, at: dt.datetime, realized: Decimal, unrealized: Decimal, equity: Decimal | None
) -> PnlSnapshot:
    if at.tzinfo is None:
        raise ValueError("snapshot time must be timezone-aware")
    row = PnlSnapshot(at=at.astimezone(dt.UTC), realized=realized, unrealized=unrealized, equity=equity)
    session.add(row)
    session.flush()
    return row


def recent(session: Session, *, since: dt.datetime | None = None, limit: int = 500) -> list[PnlSnapshot]:
    """The newest ``limit`` snapshots (since ``since``), oldest first."""
    query = select(PnlSnapshot)
    if since is not None:
        query = query.where(PnlSnapshot.at >= since)
    rows = list(session.scalars(query.order_by(PnlSnapshot.at.desc(), PnlSnapshot.id.desc()).limit(limit)))
    rows.reverse()
    return rows
