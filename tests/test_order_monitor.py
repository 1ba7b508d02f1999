"""Monitor, retry, cleanup and reconciliation against a MemoryBroker and a real DB."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal as D

import pytest
from sqlalchemy import func, select

from models.enums import OrderSide, OrderStatus, OrderType
from models.tables import Fill
from services.broker.loop_owner import SyncBroker
from services.broker.memory import MemoryBroker
from services.broker.types import OrderRequest
from services.db import session_scope
from services.orders.context import reconciliation_problem
from services.orders.monitor import cleanup, reconcile, retry_orders, sync_orders
from services.orders.submit import OrderIntent, submit_order
from services.repositories import orders as orders_repo
from tests.orders_support import BAR0, NOW, SPY, memory_broker, send_ctx, store_strategy

CTX = send_ctx(NOW, dry_run=False)  # the MemoryBroker stands in for a real broker here (not a dry run)


@pytest.fixture(autouse=True)
def _owner(db_url: str) -> None:
    store_strategy(db_url)


@pytest.fixture
def memory() -> Iterator[tuple[MemoryBroker, SyncBroker]]:
    yield from memory_broker()


def limit(price: str, minute: int = 45, side: OrderSide = OrderSide.BUY) -> OrderIntent:
    return OrderIntent("spy-test", "SPY", side, D(10), BAR0 + dt.timedelta(minutes=minute),
                       order_type=OrderType.LIMIT, limit_price=D(price), conid=SPY.conid,
                       expires_at=BAR0 + dt.timedelta(hours=6))  # fmt: skip


def test_sync_records_fills_once_and_updates_status(db_url: str, memory: tuple[MemoryBroker, SyncBroker]) -> None:
    mb, broker = memory
    placed = submit_order(db_url, broker, SPY, limit("100.80"), CTX)
    assert placed.status is OrderStatus.SUBMITTED
    mb.clock.advance(3)
    report = sync_orders(db_url, broker, NOW)
    again = sync_orders(db_url, broker, NOW)
    with session_scope(db_url) as s:
        row = orders_repo.get(s, placed.order_id)
        assert row is not None
        fills = s.scalar(select(func.count(Fill.id)))
    # next bar: low 100.50 <= limit 100.80 -> filled; a second sync adds nothing
    assert row.status is OrderStatus.FILLED and row.filled_quantity == D(10)
    assert report.new_fills == 1 and again.new_fills == 0 and fills == 1


def test_unfilled_day_limit_is_cancelled_after_timeout(db_url: str, memory: tuple[MemoryBroker, SyncBroker]) -> None:
    _, broker = memory
    placed = submit_order(db_url, broker, SPY, limit("50.00"), CTX)
    early = sync_orders(db_url, broker, dt.datetime.now(dt.UTC), {"spy-test": 30})
    assert early.cancelled_for_timeout == []
    late = sync_orders(db_url, broker, dt.datetime.now(dt.UTC) + dt.timedelta(minutes=31), {"spy-test": 30})
    assert late.cancelled_for_timeout == [placed.key]
    with session_scope(db_url) as s:
        row = orders_repo.get(s, placed.order_id)
        assert row is not None and row.status is OrderStatus.CANCELLED
        assert [e.to_status for e in orders_repo.events(s, row.id)][-2:] == [
            OrderStatus.CANCEL_PENDING,
            OrderStatus.CANCELLED,
        ]
    assert not broker.open_orders()


def test_retry_is_bounded(db_url: str, memory: tuple[MemoryBroker, SyncBroker]) -> None:
    mb, broker = memory
    mb.drop_connection()
    first = submit_order(db_url, broker, SPY, limit("50.00"), CTX)
    assert first.status is OrderStatus.CREATED
    assert [r.status for r in retry_orders(db_url, broker, lambda _w: SPY, 3, CTX)] == [OrderStatus.CREATED]
    broker.connect()
    [sent] = retry_orders(db_url, broker, lambda _w: SPY, 3, CTX)  # third attempt: connected again
    assert sent.status is OrderStatus.SUBMITTED and len(broker.open_orders()) == 1


def test_an_order_out_of_attempts_ends_and_is_never_sent(db_url: str, memory: tuple[MemoryBroker, SyncBroker]) -> None:
    mb, broker = memory
    mb.drop_connection()
    first = submit_order(db_url, broker, SPY, limit("50.00"), CTX)
    assert [r.status for r in retry_orders(db_url, broker, lambda _w: SPY, 3, CTX)] == [OrderStatus.CREATED]
    broker.connect()
    assert retry_orders(db_url, broker, lambda _w: SPY, 2, CTX) == []  # 2 attempts used up
    with session_scope(db_url) as s:
        row = orders_repo.get(s, first.order_id)
        assert row is not None and row.status is OrderStatus.CANCELLED
        assert "attempts" in (orders_repo.events(s, row.id)[-1].detail or "")
    assert not broker.open_orders() and not broker.completed_orders()


def test_cleanup_archives_old_terminal_orders_only(db_url: str, memory: tuple[MemoryBroker, SyncBroker]) -> None:
    _, broker = memory
    filled = submit_order(db_url, broker, SPY, limit("200.00"), CTX)
    working = submit_order(db_url, broker, SPY, limit("50.00", minute=40), CTX)
    assert filled.status is OrderStatus.FILLED and working.status is OrderStatus.SUBMITTED
    assert cleanup(db_url, dt.datetime.now(dt.UTC), 90) == 0
    assert cleanup(db_url, dt.datetime.now(dt.UTC) + dt.timedelta(days=91), 90) == 1
    with session_scope(db_url) as s:
        assert orders_repo.get(s, filled.order_id).status is OrderStatus.ARCHIVED  # type: ignore[union-attr]
        assert orders_repo.get(s, working.order_id).status is OrderStatus.SUBMITTED  # type: ignore[union-attr]


def test_reconcile_adopts_external_orders(db_url: str, memory: tuple[MemoryBroker, SyncBroker]) -> None:
    _, broker = memory
    broker.place_order(SPY, OrderRequest("manual-tws-order", OrderSide.BUY, D(3), OrderType.MARKET))
    report = reconcile(db_url, broker, NOW)
    assert report.adopted_external == ["manual-tws-order"]
    assert report.ok, report  # its fill was recorded, positions agree
    with session_scope(db_url) as s:
        row = orders_repo.get_by_key(s, "manual-tws-order")
        assert row is not None and row.external and row.status is OrderStatus.FILLED
        assert reconciliation_problem(s) is None


def test_a_failed_reconcile_blocks_the_next_order_until_a_clean_one(
    db_url: str, memory: tuple[MemoryBroker, SyncBroker]
) -> None:
    mb, broker = memory
    assert reconcile(db_url, broker, NOW).ok  # nothing anywhere: clean
    # The broker holds 4 SPY the DB has no fill for (a transfer, or a trade of another account): no order and no
    # execution to adopt, so reconcile must fail on the position difference.
    mb._update_position(SPY.conid, D(4), D("100.00"), D(0))
    failed = reconcile(db_url, broker, NOW)
    assert not failed.ok and failed.error is None
    [difference] = failed.differences
    assert difference.startswith("SPY: ")
    with session_scope(db_url) as s:
        assert reconciliation_problem(s) == difference

    refused = submit_order(db_url, broker, SPY, limit("100.80"), CTX)  # the send path runs the full risk gate
    assert refused.status is OrderStatus.RISK_REJECTED and not refused.sent
    assert list(refused.reasons) == [f"reconciliation: {difference}"]  # the only failing check, with the reason
    assert broker.open_orders() == []

    mb._update_position(SPY.conid, D(-4), D("100.00"), D(0))  # the broker side agrees with the DB again
    clean = reconcile(db_url, broker, NOW)
    assert clean.ok and clean.differences == []
    with session_scope(db_url) as s:
        assert reconciliation_problem(s) is None
    allowed = submit_order(db_url, broker, SPY, limit("100.80", minute=46), CTX)
    assert allowed.sent and allowed.status is OrderStatus.SUBMITTED, allowed.reasons


def test_every_share_filled_while_ib_still_says_submitted_is_filled(
    db_url: str, memory: tuple[MemoryBroker, SyncBroker]
) -> None:
    import dataclasses

    from services.orders.submit import apply_broker_order

    _, broker = memory
    placed = submit_order(db_url, broker, SPY, limit("50.00"), CTX)
    assert placed.status is OrderStatus.SUBMITTED
    seen = broker.find_order(placed.key)
    assert seen is not None
    # execDetails for the last share arrived, orderStatus "Filled" not yet: IB's order still reads "Submitted"
    half = dataclasses.replace(seen, filled=D(4), remaining=D(6), status=OrderStatus.PARTIALLY_FILLED)
    done = dataclasses.replace(seen, filled=D(10), remaining=D(0), status=OrderStatus.PARTIALLY_FILLED)
    with session_scope(db_url) as s:
        row = orders_repo.get(s, placed.order_id)
        assert row is not None
        assert apply_broker_order(s, row, half, "sync") and row.status is OrderStatus.PARTIALLY_FILLED
        assert apply_broker_order(s, row, done, "sync") and row.status is OrderStatus.FILLED
        assert row.filled_quantity == D(10)


def test_pending_quantity_is_the_signed_remainder_of_active_orders(
    db_url: str, memory: tuple[MemoryBroker, SyncBroker]
) -> None:
    _, broker = memory
    submit_order(db_url, broker, SPY, limit("50.00", minute=40), CTX)  # BUY 10 resting
    submit_order(db_url, broker, SPY, limit("500.00", minute=35, side=OrderSide.SELL), CTX)  # SELL 10
    filled = submit_order(db_url, broker, SPY, limit("200.00", minute=30), CTX)  # BUY 10, filled
    assert filled.status is OrderStatus.FILLED
    with session_scope(db_url) as s:
        sell = orders_repo.list_orders(s, statuses=[OrderStatus.SUBMITTED])[0]
        sell.filled_quantity = D(4)  # 6 of the SELL remain
        assert sell.side is OrderSide.SELL
        s.flush()
        assert orders_repo.pending_quantity(s, "spy") == D(10) - D(6)
        assert orders_repo.pending_quantity(s, "AAPL") == 0
