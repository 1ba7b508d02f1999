"""Idempotent submission against MemoryBroker (fast) and the TWS simulator over a real socket."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal as D
from pathlib import Path

import pytest

from models.enums import OrderSide, OrderStatus, OrderType, SizingMethod
from models.strategy import Risk, Sizing
from services.broker.ib_adapter import IBBroker
from services.broker.loop_owner import SyncBroker
from services.broker.memory import MemoryBroker
from services.broker.types import ContractSpec
from services.db import session_scope
from services.orders.submit import OrderIntent, idempotency_key, reconcile_submitting, send, submit_order
from services.repositories import orders as orders_repo
from services.repositories import trading_state
from services.settings import IBSettings, TradingSettings
from simulator import SimConfig, SimServer
from tests.orders_support import BAR0, NOW, SPY, memory_broker, send_ctx, store_strategy, strategy

RISK = Risk(
    max_position=D(1000),
    max_notional_per_order=D(100_000),
    max_orders_per_day=10,
    sizing=Sizing(method=SizingMethod.FIXED_QUANTITY, quantity=D(10)),
)


@pytest.fixture
def memory() -> Iterator[tuple[MemoryBroker, SyncBroker]]:
    yield from memory_broker()


def intent(
    side: OrderSide = OrderSide.BUY,
    *,
    order_type: OrderType = OrderType.MARKET,
    limit: D | None = None,
    bar_time: dt.datetime = BAR0 + dt.timedelta(minutes=45),
    qty: D = D(10),
) -> OrderIntent:
    return OrderIntent(
        "spy-test",
        "SPY",
        side,
        qty,
        bar_time,
        order_type=order_type,
        limit_price=limit,
        conid=SPY.conid,
        expires_at=bar_time + dt.timedelta(hours=6),
        reference_price=D("101"),
    )


CTX = send_ctx(NOW, marks={"SPY": D("101")})


@pytest.fixture(autouse=True)
def _owner(db_url: str) -> None:
    store_strategy(db_url, strategy("spy-test", **RISK.model_dump()))
    store_strategy(db_url, strategy("spy-sim", **RISK.model_dump()))


def statuses(db_url: str, order_id: int) -> list[str]:
    with session_scope(db_url) as s:
        return [e.to_status.value for e in orders_repo.events(s, order_id)]


def test_key_format_fits_order_ref() -> None:
    key = idempotency_key(
        "spy-test", "spy", dt.datetime(2024, 6, 3, 9, 45, tzinfo=dt.timezone(dt.timedelta(hours=-4))), "BUY"
    )
    assert key == "spy-test:SPY:20240603T1345:BUY"
    with pytest.raises(ValueError):
        idempotency_key("s", "SPY", dt.datetime(2024, 6, 3), "BUY")


def test_market_order_fills_and_a_rerun_never_sends_twice(db_url: str, memory: tuple[MemoryBroker, SyncBroker]) -> None:
    _mb, broker = memory
    it = intent()
    first = submit_order(db_url, broker, SPY, it, CTX)
    assert first.sent and not first.reused and first.status is OrderStatus.FILLED
    assert statuses(db_url, first.order_id) == ["created", "submitting", "filled"]
    again = submit_order(db_url, broker, SPY, it, CTX)
    assert again.reused and not again.sent and again.order_id == first.order_id
    assert len(broker.completed_orders()) == 1 and not broker.open_orders()
    with session_scope(db_url) as s:
        row = orders_repo.get(s, first.order_id)
        assert row is not None
        assert row.ib_perm_id and row.filled_quantity == D(10) and row.risk_decision and row.risk_decision["approved"]


def test_kill_switch_refuses_and_stores_reasons(db_url: str, memory: tuple[MemoryBroker, SyncBroker]) -> None:
    _, broker = memory
    with session_scope(db_url) as s:
        trading_state.set_kill_switch(s, True, "operator halt")
    it = intent()
    result = submit_order(db_url, broker, SPY, it, CTX)
    assert result.status is OrderStatus.RISK_REJECTED and not result.sent
    assert any("operator halt" in r for r in result.reasons)
    assert not broker.open_orders() and not broker.completed_orders()
    with session_scope(db_url) as s:
        row = orders_repo.get(s, result.order_id)
        assert row is not None and row.risk_decision is not None and not row.risk_decision["approved"]


def test_dry_run_mismatch_refuses(db_url: str, memory: tuple[MemoryBroker, SyncBroker]) -> None:
    _, broker = memory
    it = intent()
    result = submit_order(db_url, broker, SPY, it, send_ctx(NOW, dry_run=False, trading=TradingSettings(dry_run=True)))
    assert result.status is OrderStatus.RISK_REJECTED
    assert any(r.startswith("trading_mode") for r in result.reasons)


def test_disconnected_goes_back_to_created_and_only_retry_sends(
    db_url: str, memory: tuple[MemoryBroker, SyncBroker]
) -> None:
    mb, broker = memory
    it = intent(order_type=OrderType.LIMIT, limit=D("90.00"))
    mb.drop_connection()
    result = submit_order(db_url, broker, SPY, it, CTX)
    assert result.status is OrderStatus.CREATED and not result.sent
    assert result.error is not None and "disconnected" in result.error
    assert statuses(db_url, result.order_id) == ["created"]  # never judged, never submitting: certainly unsent
    broker.connect()
    rerun = submit_order(db_url, broker, SPY, it, CTX)
    assert rerun.reused and rerun.status is OrderStatus.CREATED  # a rerun never sends; the retry flow does
    assert not broker.open_orders()
    retried = send(db_url, broker, SPY, result.order_id, CTX)
    assert retried.sent and retried.status is OrderStatus.SUBMITTED
    assert len(broker.open_orders()) == 1
    with session_scope(db_url) as s:
        row = orders_repo.get(s, result.order_id)
        assert row is not None and row.submit_attempts == 2


def test_rejection_is_stored_with_ib_code(db_url: str, memory: tuple[MemoryBroker, SyncBroker]) -> None:
    mb, broker = memory
    mb.reject_next_order("margin", code=201)
    it = intent()
    result = submit_order(db_url, broker, SPY, it, CTX)
    assert result.status is OrderStatus.REJECTED and result.error_code == 201


def test_crash_after_send_is_adopted_not_resent(db_url: str, memory: tuple[MemoryBroker, SyncBroker]) -> None:
    """The process died after placeOrder but before recording the answer: the row is still 'submitting'."""
    _mb, broker = memory
    it = intent(order_type=OrderType.LIMIT, limit=D("90.00"))
    with session_scope(db_url) as s:
        row = orders_repo.create(
            s,
            key=it.key,
            symbol="SPY",
            side=it.side,
            quantity=it.quantity,
            order_type=it.order_type,
            limit_price=it.limit_price,
            strategy_name=it.strategy_name,
        )
        orders_repo.set_status(s, row, OrderStatus.SUBMITTING)
        order_id = row.id
    from services.broker.types import OrderRequest

    broker.place_order(SPY, OrderRequest(it.key, it.side, it.quantity, it.order_type, it.limit_price))
    result = submit_order(db_url, broker, SPY, it, CTX)
    assert result.reused and result.order_id == order_id and result.status is OrderStatus.SUBMITTED
    assert len(broker.open_orders()) == 1
    with session_scope(db_url) as s:
        row2 = orders_repo.get(s, order_id)
        assert row2 is not None and row2.ib_perm_id is not None


def test_submitting_unknown_to_broker_is_reset_only_by_reconciliation(
    db_url: str, memory: tuple[MemoryBroker, SyncBroker]
) -> None:
    _, broker = memory
    it = intent()
    with session_scope(db_url) as s:
        row = orders_repo.create(
            s,
            key=it.key,
            symbol="SPY",
            side=it.side,
            quantity=it.quantity,
            order_type=it.order_type,
            strategy_name=it.strategy_name,
        )
        orders_repo.set_status(s, row, OrderStatus.SUBMITTING)
        order_id = row.id
    result = submit_order(db_url, broker, SPY, it, CTX)
    assert result.status is OrderStatus.SUBMITTING and not result.sent
    assert reconcile_submitting(db_url, broker, order_id, allow_reset=True) is OrderStatus.CREATED
    assert not broker.open_orders() and not broker.completed_orders()


# ---- the real simulator over a socket ----

SIM_DATA = Path("data/samples")
SIM_NOW = dt.datetime(2012, 6, 27, 15, 0, tzinfo=dt.UTC)


def test_simulator_restart_finds_the_order_by_order_ref(db_url: str) -> None:
    with SimServer.in_thread(SimConfig(data_dir=SIM_DATA, accounts=("DU1234567",))) as sim:
        sim.clock.set(SIM_NOW)
        with SyncBroker(
            lambda: IBBroker.from_settings(IBSettings(port=sim.port, client_id=41, connect_timeout_s=5))
        ) as broker:
            spy = broker.qualify(ContractSpec("SPY"))
            it = OrderIntent(
                "spy-sim",
                "SPY",
                OrderSide.BUY,
                D(5),
                SIM_NOW,
                order_type=OrderType.LIMIT,
                limit_price=D("100.00"),
                conid=spy.conid,
                expires_at=SIM_NOW + dt.timedelta(hours=1),
            )
            first = submit_order(db_url, broker, spy, it, send_ctx(SIM_NOW, dry_run=False))
            assert first.sent and first.status is OrderStatus.SUBMITTED, first
            # the process "crashes" before it could record the answer
            with session_scope(db_url) as s:
                row = orders_repo.get(s, first.order_id)
                assert row is not None
                row.status, row.ib_perm_id = OrderStatus.SUBMITTING, None
        # a fresh process: same clientId, startup sync, same flow again
        with SyncBroker(
            lambda: IBBroker.from_settings(IBSettings(port=sim.port, client_id=41, connect_timeout_s=5))
        ) as broker:
            again = submit_order(db_url, broker, spy, it, send_ctx(SIM_NOW, dry_run=False))
            assert again.reused and again.status is OrderStatus.SUBMITTED
            assert [o.order_ref for o in broker.open_orders()] == [it.key]
