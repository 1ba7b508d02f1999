"""IBBroker behaviour that only a socket has: pacing, connectivity codes, reconnects, loop ownership, sync facade."""

from __future__ import annotations

import asyncio
import logging
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from models.enums import BarSize, OrderSide
from services.broker.ib_adapter import IBBroker
from services.broker.loop_owner import LoopOwner, SyncBroker
from services.broker.pacing import Backoff
from services.broker.types import BarRequest, Connectivity, ContractSpec, OrderRequest
from services.errors import BrokerConnectionError, PacingViolationError
from services.settings import IBSettings
from simulator import SimConfig, SimServer
from tests.broker.conftest import IBLogGuard
from tests.broker.harness import SocketHarness, eventually

PACING_162 = "Historical Market Data Service error message:Historical data request pacing violation"
SPY_CLOSE = datetime(2017, 12, 29, 21, 0, tzinfo=UTC)


@pytest.fixture
async def sock(ib_log: IBLogGuard, data_dir) -> SocketHarness:  # type: ignore[no-untyped-def]
    h = SocketHarness(data_dir, None)
    await h.start()
    try:
        yield h
    finally:
        await h.aclose()


async def test_negotiates_server_version_178(sock: SocketHarness) -> None:
    assert sock.ib is not None
    assert sock.ib.server_version == 178
    assert sock.ib.connectivity is Connectivity.CONNECTED


async def test_61st_historical_request_in_ten_minutes_waits_instead_of_earning_a_162(sock: SocketHarness) -> None:
    assert sock.ib is not None
    spy = await sock.ib.qualify(ContractSpec("SPY"))
    t0 = sock.clock.now()
    sent_at: list[float] = []
    for i in range(61):  # 61 distinct requests (different end dates): only the 10-minute budget can bind
        end = SPY_CLOSE - timedelta(days=i)
        frame = await sock.ib.historical_bars(spy, BarRequest(BarSize.DAY_1, "1 M", end=end))
        assert not frame.empty
        sent_at.append(sock.clock.now() - t0)
    assert sock.sim.stats.hist_requests == 61
    assert sock.sim.stats.pacing_violations == 0
    limiter = sock.ib.hist_limiter
    # the first 60 go out within the burst rule (5 per 2 s); the 61st waits for the first to leave the window
    assert sent_at[59] < 60.0
    assert sent_at[60] == pytest.approx(600.0)
    assert limiter.stats.waits[-1] == pytest.approx(600.0 - sent_at[59])
    assert sock.ib.pacing_retries == 0


async def test_injected_162_is_retried_after_backoff(sock: SocketHarness, ib_log: IBLogGuard) -> None:
    ib_log.allow(r"Error 162\b")
    assert sock.ib is not None
    spy = await sock.ib.qualify(ContractSpec("SPY"))
    sock.sim.fail_request(162, PACING_162, msg_type=20)
    before = sock.clock.now()
    frame = await sock.ib.historical_bars(spy, BarRequest(BarSize.DAY_1, "5 D", end=SPY_CLOSE))
    assert len(frame) == 4  # 2017-12-26..29: five calendar days back, Christmas closed
    assert sock.ib.pacing_retries == 1
    assert 10.0 in sock.clock.slept  # Backoff(base_s=10, jitter=0): first retry after 10 s (simulated)
    assert sock.clock.now() - before >= 10.0
    assert sock.sim.stats.hist_requests == 1  # the refused request is not served


async def test_persistent_162_gives_up_with_pacing_violation(sock: SocketHarness, ib_log: IBLogGuard) -> None:
    ib_log.allow(r"Error 162\b")
    assert sock.ib is not None
    spy = await sock.ib.qualify(ContractSpec("SPY"))
    for _ in range(4):  # initial try + 3 retries
        sock.sim.fail_request(162, PACING_162, msg_type=20)
    with pytest.raises(PacingViolationError):
        await sock.ib.historical_bars(spy, BarRequest(BarSize.DAY_1, "5 D", end=SPY_CLOSE))
    assert sock.ib.pacing_retries == 3


async def test_1100_pauses_orders_until_1102(sock: SocketHarness, ib_log: IBLogGuard) -> None:
    ib_log.allow(r"Error 110[02]\b")  # ib_async logs the connectivity notices as errors
    assert sock.ib is not None
    ib = sock.ib
    spy = await ib.qualify(ContractSpec("SPY"))
    sock.sim.connectivity_lost()
    await eventually(_state(ib, Connectivity.LOST))
    placed = sock.sim.stats.orders_placed
    with pytest.raises(BrokerConnectionError):
        await ib.place_order(spy, OrderRequest("lost-1", OrderSide.BUY, Decimal(1)))
    assert sock.sim.stats.orders_placed == placed  # nothing was sent, nothing queued
    sock.sim.connectivity_restored()
    await eventually(_state(ib, Connectivity.CONNECTED))
    order = await ib.place_order(spy, OrderRequest("lost-2", OrderSide.BUY, Decimal(1)))
    assert order.perm_id


async def test_dropped_socket_refuses_orders_then_reconnects_with_backoff(
    sock: SocketHarness, ib_log: IBLogGuard, caplog: pytest.LogCaptureFixture
) -> None:
    ib_log.allow(r"Peer closed connection", r"API connection failed", r"Make sure API port")
    caplog.set_level(logging.WARNING, logger="services.broker.ib_adapter")
    assert sock.ib is not None
    ib = sock.ib
    # enough attempts that the loop cannot give up while the test holds the port closed
    ib.reconnect_backoff = Backoff(attempts=10_000, base_s=0.01, max_s=0.05)
    spy = await ib.qualify(ContractSpec("SPY"))
    sock.sim.refuse_connections()  # until accept_connections(): no real-time window
    await eventually(_state(ib, Connectivity.DISCONNECTED, Connectivity.CONNECTING))
    with pytest.raises(BrokerConnectionError):
        await ib.place_order(spy, OrderRequest("down-1", OrderSide.BUY, Decimal(1)))

    async def refused_twice() -> bool:
        return sum("reconnect attempt" in r.getMessage() for r in caplog.records) >= 2

    await eventually(refused_twice, 10.0)  # the backoff loop really met the closed port, and kept trying
    assert ib.reconnects == 0 and ib.connectivity is not Connectivity.CONNECTED
    await sock.sim.accept_connections()
    await ib.wait_connected(10.0)
    assert ib.reconnects == 1
    assert sock.sim.stats.connections == 2  # the first session and the one reconnect, nothing in between
    assert (await ib.place_order(spy, OrderRequest("down-2", OrderSide.BUY, Decimal(1)))).perm_id
    assert await ib.find_order("down-1") is None


async def test_connect_to_closed_port_raises_our_error() -> None:

    broker = IBBroker.from_settings(
        IBSettings(port=1, connect_timeout_s=1), reconnect=Backoff(attempts=1, base_s=0.01, jitter=0)
    )
    with pytest.raises(BrokerConnectionError):
        await broker.connect()
    assert broker.connectivity is Connectivity.DISCONNECTED


async def test_use_from_a_foreign_loop_is_refused(sock: SocketHarness) -> None:
    assert sock.ib is not None
    ib = sock.ib
    errors: list[BaseException] = []

    def other_thread() -> None:
        try:
            asyncio.run(ib.qualify(ContractSpec("SPY")))
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=other_thread)
    t.start()
    t.join(10)
    assert len(errors) == 1 and isinstance(errors[0], RuntimeError)


def test_sync_broker_runs_the_port_on_its_own_loop(data_dir, ib_log: IBLogGuard) -> None:  # type: ignore[no-untyped-def]
    with SimServer.in_thread(SimConfig(data_dir=data_dir, port=0, accounts=("DU1234567",))) as sim:
        sim.clock.set(SPY_CLOSE)
        owner = LoopOwner()
        try:
            ib = IBSettings(port=sim.port, client_id=9, connect_timeout_s=5)
            with SyncBroker(lambda: IBBroker.from_settings(ib), owner) as broker:
                assert broker.connectivity is Connectivity.CONNECTED
                spy = broker.qualify(ContractSpec("SPY"))
                frame = broker.historical_bars(spy, BarRequest(BarSize.DAY_1, "5 D", end=SPY_CLOSE))
                assert len(frame) == 4  # 2017-12-26..29 (Christmas closed)
                order = broker.place_order(spy, OrderRequest("sync-1", OrderSide.BUY, Decimal(3)))
                assert order.perm_id
                found = broker.find_order("sync-1")
                assert found is not None and found.perm_id == order.perm_id
            assert broker.connectivity is Connectivity.DISCONNECTED
        finally:
            owner.stop()
        assert not owner.running


def _state(ib: IBBroker, *states: Connectivity):  # type: ignore[no-untyped-def]
    async def check() -> bool:
        return ib.connectivity in states

    return check


async def test_1101_data_lost_resubscribes_positions_and_orders(sock: SocketHarness, ib_log: IBLogGuard) -> None:
    ib_log.allow(r"Error 110[01]\b")
    assert sock.ib is not None

    def sent(msg_id: str) -> int:
        return sum(1 for _cid, fields in sock.sim.received if fields and fields[0] == msg_id)

    positions, open_orders = sent("61"), sent("5")
    sock.sim.connectivity_lost()
    await eventually(_state(sock.ib, Connectivity.LOST))
    sock.sim.connectivity_restored(data_lost=True)
    await eventually(_state(sock.ib, Connectivity.CONNECTED))

    async def resubscribed() -> bool:
        return sent("61") > positions and sent("5") > open_orders

    await eventually(resubscribed)


def test_from_settings_maps_every_field() -> None:
    from pydantic import SecretStr

    from services.settings import IBSettings

    settings = IBSettings(
        host="10.0.0.2", port=4002, client_id=21, account=SecretStr("DU999"), hist_requests_per_10min=30
    )
    broker = IBBroker.from_settings(settings, request_timeout_s=3.0)
    assert (broker.host, broker.port, broker.client_id, broker.account) == ("10.0.0.2", 4002, 21, "DU999")
    assert broker.request_timeout_s == 3.0
    assert broker.connect_timeout_s == settings.connect_timeout_s
    assert broker.msg_limiter.max_per_s == settings.max_messages_per_s
    assert broker.hist_limiter.max_requests == 30


async def test_drop_before_ack_raises_and_reconnect_reconciles(sock: SocketHarness, ib_log: IBLogGuard) -> None:
    ib_log.allow(r"Peer closed connection")
    assert sock.ib is not None
    ib = sock.ib
    sock.set_time(SPY_CLOSE)
    spy = await ib.qualify(ContractSpec("SPY"))
    sock.sim.close_after_place_order = True
    with pytest.raises(BrokerConnectionError, match="reconcile"):
        await ib.place_order(spy, OrderRequest("cut-1", OrderSide.BUY, Decimal(2)))
    await ib.wait_connected(10.0)

    async def visible() -> bool:
        return await ib.find_order("cut-1") is not None

    await eventually(visible)
    found = await ib.find_order("cut-1")
    assert found is not None and found.perm_id and found.filled == Decimal(2)
