from __future__ import annotations

import datetime as dt
from decimal import Decimal as D

from sqlalchemy.orm import Session

from models.enums import OrderSide
from services.broker.types import BrokerPosition
from services.positions import build_positions, compare, pnl_since, rebuild
from services.repositories import fills as fills_repo
from services.repositories import positions as positions_repo

T0 = dt.datetime(2024, 6, 3, 14, 0, tzinfo=dt.UTC)


def add(
    session: Session,
    exec_id: str,
    side: OrderSide,
    qty: str,
    price: str,
    minutes: int = 0,
    commission: str | None = "1",
) -> bool:
    _, created = fills_repo.record(
        session,
        exec_id=exec_id,
        symbol="SPY",
        side=side,
        quantity=D(qty),
        price=D(price),
        conid=1,
        executed_at=T0 + dt.timedelta(minutes=minutes),
        commission=D(commission) if commission else None,
    )
    return created


def test_average_cost_realized_pnl_and_commissions(session: Session) -> None:
    add(session, "e1.01", OrderSide.BUY, "10", "100", 0)
    add(session, "e2.01", OrderSide.BUY, "10", "110", 1)
    add(session, "e3.01", OrderSide.SELL, "5", "120", 2)
    [state] = rebuild(session).values()
    # avg cost = (1000 + 1 + 1100 + 1) / 20 = 105.1 ; realized = (120 - 105.1) * 5 - 1 = 73.5
    assert state.quantity == D(15)
    assert state.avg_cost == D("105.1")
    assert state.realized_pnl == D("73.5")
    assert state.commissions == D(3)
    assert state.unrealized(D("106.1")) == D(15)
    row = positions_repo.get(session, 1)
    assert row is not None and row.quantity == D(15) and row.realized_pnl == D("73.5")


def test_duplicate_exec_id_is_recorded_once(session: Session) -> None:
    assert add(session, "e1.01", OrderSide.BUY, "10", "100")
    assert not add(session, "e1.01", OrderSide.BUY, "10", "100")
    [state] = rebuild(session).values()
    assert state.quantity == D(10)


def test_correction_supersedes_earlier_execution(session: Session) -> None:
    add(session, "0001.abc.01", OrderSide.BUY, "10", "100")
    add(session, "0001.abc.02", OrderSide.BUY, "8", "100")  # IB corrected the quantity
    add(session, "0001.abc.01", OrderSide.BUY, "10", "100")  # replayed original: still ignored
    effective = fills_repo.effective(session)
    assert [f.exec_id for f in effective] == ["0001.abc.02"]
    assert fills_repo.get(session, "0001.abc.01").superseded_by == "0001.abc.02"  # type: ignore[union-attr]
    [state] = rebuild(session).values()
    assert state.quantity == D(8)


def test_late_commission_report_is_attached(session: Session) -> None:
    add(session, "e9.01", OrderSide.BUY, "1", "50", commission=None)
    fills_repo.record(
        session,
        exec_id="e9.01",
        symbol="SPY",
        side=OrderSide.BUY,
        quantity=D(1),
        price=D(50),
        executed_at=T0,
        commission=D("0.35"),
    )
    assert fills_repo.get(session, "e9.01").commission == D("0.35")  # type: ignore[union-attr]


def test_flip_and_short() -> None:
    class F:
        def __init__(self, e: str, side: OrderSide, q: int, p: int, m: int) -> None:
            self.exec_id, self.side, self.quantity, self.price = e, side, D(q), D(p)
            self.conid, self.symbol, self.commission = 1, "SPY", D(0)
            self.executed_at = T0 + dt.timedelta(minutes=m)

    state = build_positions([F("a", OrderSide.BUY, 10, 100, 0), F("b", OrderSide.SELL, 15, 90, 1)])[1]
    assert state.quantity == D(-5) and state.avg_cost == D(90) and state.realized_pnl == D(-100)
    assert state.unrealized(D(80)) == D(50)  # short gains when the price falls


def test_daily_pnl_counts_only_today_realized(session: Session) -> None:
    add(session, "y1.01", OrderSide.BUY, "10", "100", -24 * 60)
    add(session, "t1.01", OrderSide.SELL, "5", "90", 0)
    pnl = pnl_since(session, T0 - dt.timedelta(hours=1), {"SPY": D("90")})
    # avg 100.1; realized today (90 - 100.1) * 5 - 1 = -51.5; unrealized (90 - 100.1) * 5 = -50.5
    assert pnl.realized == D("-51.5")
    assert pnl.unrealized == D("-50.5")
    assert pnl.total == D(-102)


def test_compare_with_broker_lists_differences(session: Session) -> None:
    add(session, "e1.01", OrderSide.BUY, "10", "100")
    ours = rebuild(session)
    same = [BrokerPosition("DU1", 1, "SPY", D(10), D("100.1"))]
    assert compare(ours, same) == []
    diffs = compare(
        ours, [BrokerPosition("DU1", 1, "SPY", D(7), D("100.1")), BrokerPosition("DU1", 2, "QQQ", D(3), D(1))]
    )
    assert [(d.conid, d.ours, d.broker) for d in diffs] == [(1, D(10), D(7)), (2, D(0), D(3))]
    cost = compare(ours, [BrokerPosition("DU1", 1, "SPY", D(10), D("101"))])
    assert len(cost) == 1 and "avg cost" in cost[0].detail
