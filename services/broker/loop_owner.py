"""One event loop owns the broker: a background thread running its own loop, and a sync facade over it.

ib_async's ``IB`` is bound to the loop it connected on (docs/tws-protocol.md §4, prefect-notes.md §2.9). Async
callers on that loop just ``await`` the broker. Sync callers (Prefect sync tasks, CLI) use :class:`SyncBroker`,
which submits each call to the owning loop with ``asyncio.run_coroutine_threadsafe`` and waits for the result.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import TimeoutError as FutureTimeout
from types import TracebackType
from typing import Any, TypeVar

import pandas as pd

from services.broker.port import BrokerPort
from services.broker.types import (
    AccountValues,
    BarRequest,
    Bracket,
    BrokerOrder,
    BrokerPosition,
    Connectivity,
    ContractInfo,
    ContractSpec,
    Execution,
    LinkStatus,
    OrderRequest,
    Quote,
    SymbolMatch,
)
from services.errors import BrokerConnectionError

T = TypeVar("T")


class LoopOwner:
    """A dedicated daemon thread running one event loop until :meth:`stop`."""

    def __init__(self, name: str = "broker-loop") -> None:
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()
        self._ready.wait()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None
        return self._loop

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float | None = None) -> T:
        """Run ``coro`` on the owned loop from another thread and return its result (exceptions propagate)."""
        if not self.running:
            coro.close()
            raise RuntimeError("loop owner is stopped")
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            coro.close()
            raise RuntimeError("LoopOwner.run called from its own loop: await the coroutine instead")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout_s)
        except FutureTimeout:
            future.cancel()
            raise BrokerConnectionError(f"broker call did not finish within {timeout_s}s") from None
        except BaseException:  # the caller was interrupted (e.g. a task timeout): do not leave the call running
            future.cancel()
            raise

    def call(self, fn: Callable[[], T]) -> T:
        """Run a plain function on the owned loop (e.g. to construct loop-bound objects) and return its result."""

        async def wrapper() -> T:
            return fn()

        return self.run(wrapper())

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the loop and join the thread; idempotent."""
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout_s)

    def __enter__(self) -> LoopOwner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class SyncBroker:
    """The broker port's methods, synchronous, executed on the loop that owns the broker.

    ``factory`` builds the broker ON the owning loop. When no ``owner`` is given, a private one is started and
    stopped by :meth:`close`.
    """

    def __init__(
        self,
        factory: Callable[[], BrokerPort],
        owner: LoopOwner | None = None,
        *,
        call_timeout_s: float | None = 120.0,
    ) -> None:
        self._own_loop = owner is None
        self.owner = owner or LoopOwner()
        self.call_timeout_s = call_timeout_s
        self.broker: BrokerPort = self.owner.call(factory)

    def _run(self, awaitable: Awaitable[T]) -> T:
        async def wrapper() -> T:
            return await awaitable

        return self.owner.run(wrapper(), self.call_timeout_s)

    @property
    def connectivity(self) -> Connectivity:
        return self.broker.connectivity

    @property
    def healable(self) -> bool:
        """False when the session cannot recover by itself: its loop stopped, or it is disconnected and no
        reconnect loop runs (never connected, closed, or the loop ended). A healable session may still be down:
        its requests fail at once with ``BrokerConnectionError`` until it reconnects."""
        if not self.owner.running:
            return False
        if self.broker.connectivity is not Connectivity.DISCONNECTED:
            return True
        return bool(getattr(self.broker, "reconnecting", False))

    def status(self) -> LinkStatus | None:
        """The broker's :class:`LinkStatus` when it reports one (``IBBroker``), else None."""
        status = getattr(self.broker, "status", None)
        return status() if callable(status) else None

    def connect(self) -> None:
        self._run(self.broker.connect())

    def close(self) -> None:
        try:
            if self.owner.running:
                self._run(self.broker.close())
        finally:
            if self._own_loop:
                self.owner.stop()

    def qualify(self, spec: ContractSpec) -> ContractInfo:
        return self._run(self.broker.qualify(spec))

    def contract_details(self, spec: ContractSpec) -> list[ContractInfo]:
        return self._run(self.broker.contract_details(spec))

    def matching_symbols(self, pattern: str) -> list[SymbolMatch]:
        return self._run(self.broker.matching_symbols(pattern))

    def historical_bars(self, contract: ContractInfo, request: BarRequest) -> pd.DataFrame:
        return self._run(self.broker.historical_bars(contract, request))

    def snapshot(self, contract: ContractInfo) -> Quote:
        return self._run(self.broker.snapshot(contract))

    def place_order(self, contract: ContractInfo, request: OrderRequest) -> BrokerOrder:
        return self._run(self.broker.place_order(contract, request))

    def place_bracket(self, contract: ContractInfo, bracket: Bracket) -> list[BrokerOrder]:
        return self._run(self.broker.place_bracket(contract, bracket))

    def cancel_order(self, order_ref: str) -> BrokerOrder:
        return self._run(self.broker.cancel_order(order_ref))

    def open_orders(self) -> list[BrokerOrder]:
        return self._run(self.broker.open_orders())

    def completed_orders(self) -> list[BrokerOrder]:
        return self._run(self.broker.completed_orders())

    def executions(self) -> list[Execution]:
        return self._run(self.broker.executions())

    def positions(self) -> list[BrokerPosition]:
        return self._run(self.broker.positions())

    def account_values(self) -> AccountValues:
        return self._run(self.broker.account_values())

    def find_order(self, order_ref: str, perm_id: int | None = None) -> BrokerOrder | None:
        return self._run(self.broker.find_order(order_ref, perm_id))

    def __enter__(self) -> SyncBroker:
        self.connect()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
