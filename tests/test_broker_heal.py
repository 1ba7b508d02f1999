"""Broker sessions that heal (issue 12): the real ib_async client against the TWS simulator's fault injection.

* the reconnect loop outlives the old give-up horizon (8 attempts) and heals when the simulator listens again,
  with the backoff scaled down (injected ``Backoff``) so a long outage takes about a second;
* while the session is down, requests and orders fail at once with ``BrokerConnectionError`` (nothing hangs);
* every state change is logged; ``status()`` reports it;
* the runtime rebuilds a session that cannot heal (never connected, or its reconnect loop is off/ended) and
  never keeps an unconnected one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from decimal import Decimal

import pytest

from models.enums import OrderSide
from services.broker.ib_adapter import IBBroker
from services.broker.loop_owner import SyncBroker
from services.broker.pacing import Backoff
from services.broker.types import Connectivity, ContractSpec, OrderRequest
from services.errors import BrokerConnectionError
from services.runtime import Runtime
from services.settings import IBSettings, load_settings
from simulator import SimConfig, SimServer
from tests.waiting import eventually

OLD_ATTEMPTS = 8  # the reconnect loop gave up after 8 attempts (about 90 s with the old production backoff)
FAST = Backoff(attempts=OLD_ATTEMPTS, base_s=0.01, max_s=0.05, jitter=0.2)  # old horizon here: under 0.4 s
OUTAGE_S = 1.5


@pytest.fixture
def sim() -> Iterator[SimServer]:
    with SimServer.in_thread(SimConfig(port=0)) as server:
        yield server


def _ib(port: int, client_id: int) -> IBSettings:
    return IBSettings(port=port, client_id=client_id, connect_timeout_s=2, request_timeout_s=3)


def test_reconnect_outlasts_the_old_give_up_horizon_and_fails_fast_meanwhile(
    sim: SimServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="services.broker.ib_adapter")
    with SyncBroker(lambda: IBBroker.from_settings(_ib(sim.port, 61), reconnect=FAST)) as broker:
        spy = broker.qualify(ContractSpec("SPY"))
        assert broker.status() is not None and broker.status().state is Connectivity.CONNECTED  # type: ignore[union-attr]
        sim.refuse_connections(OUTAGE_S)
        eventually(lambda: broker.connectivity is not Connectivity.CONNECTED)
        ib = broker.broker
        assert isinstance(ib, IBBroker)
        # far more attempts than the old loop made before giving up, all inside the outage
        eventually(lambda: ib.reconnect_attempts > OLD_ATTEMPTS + 2 or broker.connectivity is Connectivity.CONNECTED)
        assert ib.reconnect_attempts > OLD_ATTEMPTS + 2, "the outage ended before the old give-up horizon"
        down = broker.status()
        assert down is not None and down.reconnecting and down.down_since is not None
        with pytest.raises(BrokerConnectionError):
            broker.qualify(ContractSpec("SPY"))
        with pytest.raises(BrokerConnectionError):
            broker.place_order(spy, OrderRequest("heal-down-1", OrderSide.BUY, Decimal(1)))
        eventually(lambda: broker.connectivity is Connectivity.CONNECTED)
        healed = broker.status()
        assert healed is not None
        assert (healed.reconnects, healed.down_since, healed.attempts) == (1, None, 0)
        assert broker.place_order(spy, OrderRequest("heal-up-1", OrderSide.BUY, Decimal(1))).perm_id
        assert broker.find_order("heal-down-1") is None  # nothing was queued while down
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("IB connected to 127.0.0.1:") for m in messages), messages
    assert any(m.startswith("IB disconnected from 127.0.0.1:") and "since" in m for m in messages), messages
    healed_lines = [m for m in messages if m.startswith("IB reconnected to 127.0.0.1:")]
    assert len(healed_lines) == 1 and " attempts and " in healed_lines[0], messages


def test_the_runtime_rebuilds_a_session_that_cannot_heal(sim: SimServer) -> None:
    settings = load_settings({})
    built: list[IBBroker] = []

    def factory() -> IBBroker:
        broker = IBBroker.from_settings(_ib(sim.port, 62), reconnect=FAST, auto_reconnect=False)
        built.append(broker)
        return broker

    runtime = Runtime(settings, broker_factory=factory)
    try:
        first = runtime.broker()
        first.qualify(ContractSpec("SPY"))
        sim.drop_connections()
        eventually(lambda: first.connectivity is Connectivity.DISCONNECTED)
        assert not first.healable  # no reconnect loop: dead until rebuilt
        second = runtime.broker()
        assert second is not first and len(built) == 2
        assert second.qualify(ContractSpec("SPY")).symbol == "SPY"
        assert not first.owner.running  # the dead session was closed, its loop stopped
        assert runtime.broker() is second  # a live session is kept
    finally:
        runtime.close()


def test_the_runtime_keeps_no_unconnected_session(sim: SimServer) -> None:
    runtime = Runtime(
        load_settings({}), broker_factory=lambda: IBBroker.from_settings(_ib(sim.port, 63), reconnect=FAST)
    )
    try:
        sim.refuse_connections(OUTAGE_S)
        with pytest.raises(BrokerConnectionError):
            runtime.broker()
        assert runtime.broker_status() is None  # nothing kept

        def connects() -> bool:
            try:
                return runtime.broker().connectivity is Connectivity.CONNECTED
            except BrokerConnectionError:
                return False

        eventually(connects)
        assert runtime.broker().qualify(ContractSpec("SPY")).symbol == "SPY"
        status = runtime.broker_status()
        assert status is not None and status.state is Connectivity.CONNECTED
    finally:
        runtime.close()
