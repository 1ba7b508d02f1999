"""Fault injection: duplicate clientId, drops, restarts, 1100/1102, injected errors, slow replies, crash windows."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from ib_async import IB, LimitOrder, MarketOrder, RequestError, Stock

from simulator import SimConfig, SimServer
from simulator.config import default_data_dir
from tests.simulator.helpers import Connect, eventually

DATA = default_data_dir()


async def test_duplicate_client_id_gets_326_and_is_closed(sim: SimServer, connect: Connect, ib_log) -> None:
    ib_log.allow(r"Error 326, reqId -1: Unable to connect as the client id is already in use")
    ib_log.allow(r"Peer closed connection\. clientId 5 already in use\?")
    ib_log.allow(r"API connection failed: CancelledError")
    first = await connect(client_id=5)
    errors: list[int] = []
    second = IB()
    second.errorEvent += lambda _r, code, _m, _c: errors.append(code)
    # ib_async waits for the API start until its timeout even after the peer closed: a generous timeout, and the
    # test waits for the two facts (326 received, socket closed by the simulator) instead of racing a short one.
    attempt = asyncio.create_task(second.connectAsync("127.0.0.1", sim.port, clientId=5, timeout=60))
    await eventually(lambda: errors == [326] and second.client.conn.transport is None and sim.active_clients == [5])
    assert not attempt.done()  # never became ready
    attempt.cancel()
    with pytest.raises(asyncio.CancelledError):
        await attempt
    assert errors == [326]
    assert not second.isConnected()
    assert first.isConnected() and await first.reqCurrentTimeAsync()
    assert sim.active_clients == [5]


async def test_connectivity_notices_1100_then_1102(sim: SimServer, connect: Connect, ib_log) -> None:
    ib_log.allow(r"Error 1100, reqId -1: Connectivity between IB and Trader Workstation has been lost")
    ib_log.allow(r"Error 1102, reqId -1: Connectivity between IB and Trader Workstation has been restored")
    ib_log.allow(r"Error 1101, reqId -1: Connectivity between IB and TWS has been restored- data lost")
    ib = await connect()
    codes: list[int] = []
    ib.errorEvent += lambda _r, code, _m, _c: codes.append(code)
    sim.connectivity_lost()
    sim.connectivity_restored()
    sim.connectivity_lost()
    sim.connectivity_restored(data_lost=True)
    await eventually(lambda: len(codes) == 4)
    assert codes == [1100, 1102, 1100, 1101]


async def test_send_error_reaches_one_client(sim: SimServer, connect: Connect, ib_log) -> None:
    ib_log.allow(r"Error 1300, reqId -1: TWS socket port has been reset")
    a, b = await connect(client_id=1), await connect(client_id=2)
    seen: dict[str, list[int]] = {"a": [], "b": []}
    a.errorEvent += lambda _r, code, _m, _c: seen["a"].append(code)
    b.errorEvent += lambda _r, code, _m, _c: seen["b"].append(code)
    sim.send_error(1300, "TWS socket port has been reset and this connection is being dropped.", client_id=2)
    await eventually(lambda: seen["b"] == [1300])
    # Barrier instead of a sleep: the simulator wrote any error for "a" before this reply on a's socket.
    assert await a.reqCurrentTimeAsync()
    assert seen["a"] == []


async def test_drop_connections_then_reconnect(sim: SimServer, connect: Connect, ib_log) -> None:
    ib_log.allow(r"^Peer closed connection\.$")
    ib = await connect(client_id=7)
    disconnected = asyncio.Event()
    ib.disconnectedEvent += disconnected.set
    sim.drop_connections()
    await asyncio.wait_for(disconnected.wait(), 2)
    with pytest.raises(ConnectionError):
        ib.reqCurrentTime()  # nothing is queued while disconnected
    again = await connect(client_id=7)
    assert again.isConnected() and sim.stats.connections == 2


async def test_refuse_connections_emulates_the_daily_restart(sim: SimServer, connect: Connect, ib_log) -> None:
    ib_log.allow(r"^Peer closed connection\.$")
    ib_log.allow(r"API connection failed: ConnectionRefusedError")
    ib_log.allow(r"Make sure API port on TWS/IBG is open")
    ib = await connect(client_id=8)
    sim.refuse_connections()  # until accept_connections(): no real-time window to race
    await eventually(lambda: not ib.isConnected())
    with pytest.raises(ConnectionRefusedError):
        await IB().connectAsync("127.0.0.1", sim.port, clientId=8, timeout=10)
    await sim.accept_connections()
    again = await connect(client_id=8, timeout_s=10)
    assert again.isConnected() and sim.stats.connections == 2


async def test_fail_request_by_type_and_by_id(sim: SimServer, connect: Connect, ib_log) -> None:
    ib_log.allow(r"Error 162, reqId \d+: Historical Market Data Service error message:query cancelled")
    ib_log.allow(r"Error 10197, reqId \d+: No market data during competing live session")
    ib = await connect()
    ib.RaiseRequestErrors = True
    spy = Stock("SPY", "SMART", "USD")
    await ib.qualifyContractsAsync(spy)
    sim.fail_request(162, "Historical Market Data Service error message:query cancelled", msg_type=20)
    with pytest.raises(RequestError) as first:
        await ib.reqHistoricalDataAsync(spy, "", "5 D", "1 day", "TRADES", True, timeout=5)
    assert first.value.code == 162
    bars = await ib.reqHistoricalDataAsync(spy, "", "5 D", "1 day", "TRADES", True, timeout=5)
    assert [b.date.isoformat() for b in bars][-1] == "2017-12-29"  # one-shot: the retry is served
    next_id = ib.client._reqIdSeq
    sim.fail_request(10197, "No market data during competing live session", req_id=next_id)
    with pytest.raises(RequestError) as second:
        await ib.reqContractDetailsAsync(spy)
    assert second.value.code == 10197


async def test_early_commission_report_is_dropped_by_ib_async(sim: SimServer, connect: Connect) -> None:
    ib = await connect(client_id=9)
    spy = Stock("SPY", "SMART", "USD")
    await ib.qualifyContractsAsync(spy)
    sim.early_commission_report = True
    trade = ib.placeOrder(spy, MarketOrder("BUY", 10))
    await eventually(lambda: trade.isDone() and bool(trade.fills))
    # Barrier instead of a sleep: every report the simulator sent for this order precedes this reply.
    assert await ib.reqCurrentTimeAsync()
    assert trade.fills[0].commissionReport.commission == 0.0  # ib_async 2.1 drops a report seen before its fill
    assert sim.state.executions[0].commission == 1


async def test_reply_delay_slows_every_reply(sim: SimServer, connect: Connect) -> None:
    ib = await connect()
    sim.reply_delay_s = 0.2
    started = time.perf_counter()
    await ib.reqCurrentTimeAsync()
    assert time.perf_counter() - started >= 0.2


async def test_close_after_place_order_keeps_the_order(sim: SimServer, connect: Connect, ib_log) -> None:
    ib_log.allow(r"^Peer closed connection\.$")
    ib = await connect(client_id=12)
    spy = Stock("SPY", "SMART", "USD")
    await ib.qualifyContractsAsync(spy)
    sim.close_after_place_order = True
    trade = ib.placeOrder(spy, LimitOrder("BUY", 10, 100.0, orderRef="crash-1", tif="GTC"))
    await eventually(lambda: not ib.isConnected())
    assert trade.orderStatus.status == "PendingSubmit"  # the client never heard back
    [order] = sim.state.orders_by_ref("crash-1")
    assert order.perm_id > 0
    again = await connect(client_id=12)
    [seen] = [t for t in again.openTrades() if t.order.orderRef == "crash-1"]
    assert seen.order.permId == order.perm_id and seen.orderStatus.status == "Submitted"


def test_in_thread_server_with_the_sync_api() -> None:
    with SimServer.in_thread(SimConfig(data_dir=DATA, partial_fill_participation=None)) as sim:
        ib = IB()
        ib.connect("127.0.0.1", sim.port, clientId=30, timeout=3)
        try:
            spy = Stock("SPY", "SMART", "USD")
            ib.qualifyContracts(spy)
            sim.clock.set("2012-06-27T15:00:00Z")  # called from this thread: marshalled onto the server loop
            trade = ib.placeOrder(spy, LimitOrder("BUY", 100, 132.80))
            _wait_sync(ib, lambda: trade.orderStatus.status != "PendingSubmit")
            assert trade.orderStatus.status == "Submitted"
            sim.clock.advance(3, symbol="SPY")
            _wait_sync(ib, lambda: trade.orderStatus.status not in {"PendingSubmit", "Submitted"})
            assert trade.orderStatus.status == "Filled" and trade.orderStatus.avgFillPrice == 132.80
            assert sim.state.orders_by_ref("")[0].filled == 100
        finally:
            ib.disconnect()


def _wait_sync(ib: IB, predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """The sync-API twin of ``eventually``: run ib_async's loop until ``predicate()`` or fail at the deadline."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        ib.sleep(0.01)
