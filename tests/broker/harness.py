"""Scenario drivers for the broker contract suite: one per implementation, same operations.

``SocketHarness`` runs the real ib_async client (``IBBroker``) against the TWS-protocol simulator on a free
loopback port; ``MemoryHarness`` runs ``MemoryBroker`` over the same bar files and contracts. Both share one
simulated pacing clock so tests never wait in real time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Protocol

from models.enums import SecType
from services.broker.ib_adapter import IBBroker
from services.broker.memory import MemoryBroker
from services.broker.pacing import Backoff, HistoricalLimiter, ManualClock
from services.broker.port import BrokerPort
from services.broker.types import ContractInfo
from services.settings import IBSettings
from simulator import SimConfig, SimServer
from simulator.server import cached_catalog

CLIENT_ID = 7
ACCOUNT = "DU1234567"


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 5.0) -> None:
    """Poll ``check`` until it returns True; fail after ``timeout_s`` (no fixed sleeps)."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s")
        await asyncio.sleep(0.01)


class Harness(Protocol):
    kind: str
    broker: BrokerPort
    clock: ManualClock

    def set_time(self, ts: datetime) -> None: ...

    def advance(self, n_bars: int = 1, symbol: str | None = None) -> datetime: ...

    def reject_next_order(self, reason: str) -> None: ...

    async def drop_and_reconnect(self) -> None: ...

    async def settle(self, check: Callable[[], Awaitable[bool]]) -> None: ...

    async def aclose(self) -> None: ...


class MemoryHarness:
    kind = "memory"

    def __init__(self, data_dir: Path, participation: Decimal | None) -> None:
        self.clock = ManualClock()
        catalog = cached_catalog(data_dir)
        contracts = [
            ContractInfo(
                conid=i.con_id,
                symbol=i.symbol,
                sec_type=SecType(i.sec_type),
                exchange=i.exchange,
                primary_exchange=i.primary_exchange,
                currency=i.currency,
                min_tick=Decimal(str(i.min_tick)),
                size_increment=Decimal(i.size_increment),
                long_name=i.long_name,
                time_zone_id=i.time_zone_id,
            )
            for i in catalog
        ]
        self.memory = MemoryBroker(contracts, account=ACCOUNT, participation=participation, client_id=CLIENT_ID)
        for inst in catalog:
            for size, series in inst.series.items():
                self.memory.add_bars(inst.symbol, series.frame, size)
        self.broker: BrokerPort = self.memory

    async def start(self) -> None:
        await self.memory.connect()

    def set_time(self, ts: datetime) -> None:
        self.memory.clock.set(ts)

    def advance(self, n_bars: int = 1, symbol: str | None = None) -> datetime:
        return self.memory.clock.advance(n_bars, symbol)

    def reject_next_order(self, reason: str) -> None:
        self.memory.reject_next_order(reason)

    async def drop_and_reconnect(self) -> None:
        self.memory.drop_connection()
        await self.memory.connect()

    async def settle(self, check: Callable[[], Awaitable[bool]]) -> None:
        assert await check()

    async def aclose(self) -> None:
        await self.memory.close()


class SocketHarness:
    kind = "socket"

    def __init__(self, data_dir: Path, participation: Decimal | None) -> None:
        self.clock = ManualClock(start=1_000.0)
        self.sim = SimServer(
            SimConfig(
                data_dir=data_dir,
                port=0,
                accounts=(ACCOUNT,),
                partial_fill_participation=float(participation) if participation is not None else None,
                pacing_time=self.clock.now,
            )
        )
        self.ib: IBBroker | None = None

    @property
    def broker(self) -> BrokerPort:
        assert self.ib is not None
        return self.ib

    async def start(self) -> None:
        await self.sim.start()
        self.ib = IBBroker.from_settings(
            IBSettings(port=self.sim.port, client_id=CLIENT_ID, connect_timeout_s=5, request_timeout_s=5),
            order_ack_timeout_s=5,
            clock=self.clock,
            hist_limiter=HistoricalLimiter(clock=self.clock),
            reconnect=Backoff(attempts=20, base_s=0.02, max_s=0.2),
            pacing_retry=Backoff(attempts=3, base_s=10.0, max_s=60.0, jitter=0.0),
        )
        await self.ib.connect()

    def set_time(self, ts: datetime) -> None:
        self.sim.clock.set(ts)

    def advance(self, n_bars: int = 1, symbol: str | None = None) -> datetime:
        return self.sim.clock.advance(n_bars, symbol=symbol)

    def reject_next_order(self, reason: str) -> None:
        self.sim.reject_next_order(reason)

    async def drop_and_reconnect(self) -> None:
        assert self.ib is not None
        reconnects = self.ib.reconnects
        self.sim.drop_connections()
        await eventually(self._reconnected(reconnects), 10.0)

    def _reconnected(self, before: int) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            assert self.ib is not None
            return self.ib.reconnects > before and self.ib.connectivity.value == "connected"

        return check

    async def settle(self, check: Callable[[], Awaitable[bool]]) -> None:
        await eventually(check)

    async def aclose(self) -> None:
        if self.ib is not None:
            await self.ib.close()
        await self.sim.stop()
