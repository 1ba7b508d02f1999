"""Fixtures for the simulator tests: a server per test, real ib_async clients, and a strict log guard.

ib_async swallows decoder exceptions and only logs them, so a wrong frame would show up as a timeout. The autouse
``ib_log`` fixture fails the test on every ERROR record from ``ib_async.*`` unless the test declared it as
expected with ``ib_log.allow(regex)`` (e.g. ``r"Error 201"``). Decoder failures and "No order found" are never
allowed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator

import pytest
from ib_async import IB

from simulator import ManualTime, SimConfig, SimServer
from simulator.config import default_data_dir
from tests.simulator.helpers import Connect, LogGuard, _Collector


@pytest.fixture(autouse=True)
def ib_log() -> Iterator[LogGuard]:
    handler = _Collector()
    logger = logging.getLogger("ib_async")
    logger.addHandler(handler)
    guard = LogGuard(handler)
    try:
        yield guard
    finally:
        logger.removeHandler(handler)
    bad = guard.unexpected()
    assert not bad, "unexpected ERROR logs from ib_async:\n" + "\n".join(bad)


@pytest.fixture
def pacing_time() -> ManualTime:
    return ManualTime()


@pytest.fixture
def sim_config(pacing_time: ManualTime) -> SimConfig:
    return SimConfig(data_dir=default_data_dir(), pacing_time=pacing_time)


@pytest.fixture
async def sim(sim_config: SimConfig) -> AsyncIterator[SimServer]:
    async with SimServer(sim_config) as server:
        yield server


@pytest.fixture
async def connect(sim: SimServer) -> AsyncIterator[Connect]:
    """``await connect(client_id=1)`` returns a connected ib_async ``IB``; all are disconnected at teardown."""
    clients: list[IB] = []

    async def _connect(client_id: int = 1, timeout_s: float = 3.0, server: SimServer | None = None) -> IB:
        ib = IB()
        clients.append(ib)
        await ib.connectAsync("127.0.0.1", (server or sim).port, clientId=client_id, timeout=timeout_s)
        return ib

    yield _connect
    for ib in clients:
        if ib.isConnected():
            ib.disconnect()
    await asyncio.sleep(0)
