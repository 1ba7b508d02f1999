"""Disconnects during the order monitor while orders fill (simulator faults, the real ib_async client).

Faults per monitor round: the socket dropped, connections refused for 1.5 s (the daily restart), IB 1100 then
1101 (data lost) or 1102 (data maintained). Fills happen while the client is away. At the end every execution at
the broker is in the DB exactly once, every order's filled quantity matches, and the DB's positions equal the
broker's.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from decimal import Decimal as D

import pytest

from models.enums import OrderSide, OrderStatus, OrderType, SecType
from models.order_states import TERMINAL
from services.broker.ib_adapter import IBBroker
from services.broker.loop_owner import SyncBroker
from services.broker.pacing import Backoff
from services.broker.types import Connectivity, ContractSpec
from services.db import session_scope
from services.errors import TraderError
from services.orders.monitor import cancel, reconcile, sync_orders
from services.orders.submit import OrderIntent, submit_order
from services.positions import compare, rebuild
from services.repositories import fills as fills_repo
from services.repositories import orders as orders_repo
from services.settings import IBSettings
from simulator import SimConfig, SimServer
from tests.orders_support import send_ctx, store_strategy, strategy
from tests.waiting import eventually

START = dt.datetime(2012, 6, 27, 14, 0, tzinfo=dt.UTC)  # 10:00 New York, inside the 5-min SPY series


@pytest.fixture
def sim() -> Iterator[SimServer]:
    with SimServer.in_thread(SimConfig(port=0, partial_fill_participation=0.01, now=START)) as server:
        yield server


@pytest.fixture
def broker(sim: SimServer) -> Iterator[SyncBroker]:
    sync = SyncBroker(
        lambda: IBBroker.from_settings(
            IBSettings(port=sim.port, client_id=17, connect_timeout_s=5, request_timeout_s=3),
            order_ack_timeout_s=5,
            reconnect=Backoff(attempts=60, base_s=0.05, max_s=0.2),
        )
    )
    sync.connect()
    yield sync
    sync.close()


def monitor(db_url: str, broker: SyncBroker) -> str:
    """One order-monitor round; a round that fails on the connection is reported, the next one catches up."""
    try:
        report = sync_orders(db_url, broker, dt.datetime.now(dt.UTC))
    except TraderError as exc:
        return f"failed: {type(exc).__name__}"
    return f"ok: {report.new_fills} new fills"


@pytest.mark.slow
def test_no_fill_lost_across_disconnects(db_url: str, sim: SimServer, broker: SyncBroker) -> None:
    spy = broker.qualify(ContractSpec("SPY", SecType.STK))
    orders = [(OrderSide.BUY, 900, "a"), (OrderSide.SELL, 300, "b"), (OrderSide.BUY, 600, "c")]
    ids = []
    for side, qty, tag in orders:
        store_strategy(db_url, strategy(f"disc-{tag}", max_position=D(10_000)))
        intent = OrderIntent(f"disc-{tag}", "SPY", side, D(qty), START, order_type=OrderType.MARKET, conid=spy.conid,
                             expires_at=START + dt.timedelta(hours=1), reference_price=D(136))  # fmt: skip
        placed = submit_order(db_url, broker, spy, intent, send_ctx(START, dry_run=False))
        assert placed.status in (OrderStatus.SUBMITTED, OrderStatus.PARTIALLY_FILLED), placed
        ids.append(placed.order_id)
    connected = lambda: broker.connectivity is Connectivity.CONNECTED  # noqa: E731

    def accept_again() -> None:
        sim.accept_connections_from_thread()
        eventually(connected)

    # (fault, recovery): the monitor runs once right after the fault (while the client is away) and once after
    # the recovery; the market moves (fills happen) before each run
    faults: list[tuple[Callable[[], None], Callable[[], None]]] = [
        (sim.drop_connections, lambda: eventually(connected)),
        (sim.refuse_connections, accept_again),  # no real-time window: refused until the recovery accepts
        (sim.connectivity_lost, lambda: sim.connectivity_restored(data_lost=True)),
        (sim.connectivity_lost, lambda: sim.connectivity_restored(data_lost=False)),
        (sim.drop_connections, lambda: eventually(connected)),
    ]
    rounds = []
    for fault, recover in faults:
        fault()
        sim.clock.advance(1, symbol="SPY")
        rounds.append(monitor(db_url, broker))
        recover()
        sim.clock.advance(1, symbol="SPY")
        rounds.append(monitor(db_url, broker))
    failed = [r for r in rounds if r.startswith("failed")]
    assert 3 <= len(failed) < len(rounds), rounds  # the faults really hit the monitor, and it recovered
    eventually(lambda: broker.connectivity is Connectivity.CONNECTED)
    # keep the market moving until the broker has filled everything, then let the monitor catch up
    for _ in range(60):
        if not sim.state.open_orders():
            break
        sim.clock.advance(1, symbol="SPY")
    assert not sim.state.open_orders()

    def caught_up() -> bool:
        monitor(db_url, broker)
        with session_scope(db_url) as s:
            return all(orders_repo.get(s, i).status in TERMINAL for i in ids)  # type: ignore[union-attr]

    eventually(caught_up)
    broker_execs = {e.exec_id: e for e in sim.state.executions}
    assert len(broker_execs) > len(orders)  # partial fills: several executions per order
    with session_scope(db_url) as s:
        fills = fills_repo.effective(s)
        assert sorted(f.exec_id for f in fills) == sorted(broker_execs)  # none lost, none twice
        for f in fills:
            assert f.quantity == broker_execs[f.exec_id].shares and f.price == broker_execs[f.exec_id].price
        for order_id in ids:
            row = orders_repo.get(s, order_id)
            assert row is not None and row.status is OrderStatus.FILLED
            [at_broker] = sim.state.orders_by_ref(row.idempotency_key)
            assert row.filled_quantity == at_broker.filled == row.quantity
        ours = rebuild(s)
    assert compare(ours, broker.positions()) == []
    [position] = [p for p in sim.state.positions.values() if p.quantity]
    assert ours[spy.conid].quantity == position.quantity == D(900 - 300 + 600)
    assert reconcile(db_url, broker, dt.datetime.now(dt.UTC)).ok


def test_a_cancel_that_never_reached_the_broker_is_sent_again(db_url: str, sim: SimServer, broker: SyncBroker) -> None:
    """A halt's cancel while IB is away leaves the order cancel_pending here and working there; the monitor's next
    round after the reconnect sends the cancel again, so the DB and the broker agree that it is cancelled."""
    spy = broker.qualify(ContractSpec("SPY", SecType.STK))
    store_strategy(db_url, strategy("disc-cancel", max_position=D(10_000)))
    intent = OrderIntent("disc-cancel", "SPY", OrderSide.BUY, D(100), START, order_type=OrderType.LIMIT,
                         limit_price=D(50), conid=spy.conid, expires_at=START + dt.timedelta(hours=1))  # fmt: skip
    placed = submit_order(db_url, broker, spy, intent, send_ctx(START, dry_run=False))
    assert placed.status is OrderStatus.SUBMITTED, placed
    sim.refuse_connections()
    sim.drop_connections()
    eventually(lambda: broker.connectivity is not Connectivity.CONNECTED)
    with pytest.raises(TraderError):
        cancel(db_url, broker, placed.order_id, "halt --cancel-all")
    with session_scope(db_url) as s:
        assert orders_repo.get(s, placed.order_id).status is OrderStatus.CANCEL_PENDING  # type: ignore[union-attr]
    [at_broker] = sim.state.orders_by_ref(placed.key)
    assert at_broker.status.value == "Submitted"  # still working at the broker
    sim.accept_connections_from_thread()
    eventually(lambda: broker.connectivity is Connectivity.CONNECTED)
    report = sync_orders(db_url, broker, START)
    assert report.cancels_resent == [placed.key]
    assert at_broker.status.value == "Cancelled"
    with session_scope(db_url) as s:
        assert orders_repo.get(s, placed.order_id).status is OrderStatus.CANCELLED  # type: ignore[union-attr]
