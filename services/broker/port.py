"""The broker port: the one interface flows and tasks use to talk to a broker.

Implementations: :class:`services.broker.ib_adapter.IBBroker` (ib_async over the TWS socket) and
:class:`services.broker.memory.MemoryBroker` (in memory, for dry runs and unit tests). Both raise only the
exceptions of :mod:`services.errors`.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import pandas as pd

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
    OrderRequest,
    Quote,
    SymbolMatch,
)


@runtime_checkable
class BrokerPort(Protocol):
    """Asynchronous broker interface. All methods run on the event loop that owns the broker."""

    @property
    def connectivity(self) -> Connectivity:
        """Current link state; orders are only placed when ``CONNECTED``."""
        ...

    async def connect(self) -> None:
        """Open the connection and load the broker's state (open/completed orders, executions, positions)."""
        ...

    async def close(self) -> None:
        """Close the connection; idempotent."""
        ...

    async def qualify(self, spec: ContractSpec) -> ContractInfo:
        """Resolve ``spec`` to exactly one contract; raise ``ContractNotFoundError`` when none or ambiguous."""
        ...

    async def contract_details(self, spec: ContractSpec) -> list[ContractInfo]:
        """Return every contract matching ``spec`` (empty list when none)."""
        ...

    async def matching_symbols(self, pattern: str) -> list[SymbolMatch]:
        """Ask the broker which contracts match ``pattern`` (a ticker's first letters or a word of the name);
        at most ``MAX_SYMBOL_MATCHES``, empty when none."""
        ...

    async def historical_bars(self, contract: ContractInfo, request: BarRequest) -> pd.DataFrame:
        """Return bars as the canonical frame of :mod:`models.bars` (timestamp = bar start, UTC)."""
        ...

    async def snapshot(self, contract: ContractInfo) -> Quote:
        """Return a one-off quote."""
        ...

    async def place_order(self, contract: ContractInfo, request: OrderRequest) -> BrokerOrder:
        """Place an order and return once the broker acknowledged it with a permId.

        Raises ``BrokerConnectionError`` when not connected (nothing is queued) and ``OrderRejectedError`` with
        IB's code when the order is refused.
        """
        ...

    async def place_bracket(self, contract: ContractInfo, bracket: Bracket) -> list[BrokerOrder]:
        """Place an entry with its protective children as one bracket; return every part's state, entry first.

        Same errors as :meth:`place_order` (``OrderRejectedError`` when the entry is refused). Parts whose orderRef
        the broker already knows are not sent again.
        """
        ...

    async def cancel_order(self, order_ref: str) -> BrokerOrder:
        """Request cancellation of an open order and return its state after the broker answered."""
        ...

    async def open_orders(self) -> list[BrokerOrder]:
        """Orders still working at the broker."""
        ...

    async def completed_orders(self) -> list[BrokerOrder]:
        """Orders that reached a terminal state (filled, cancelled, inactive)."""
        ...

    async def executions(self) -> list[Execution]:
        """Fills of the current session, with commissions when reported."""
        ...

    async def positions(self) -> list[BrokerPosition]:
        """Current positions of the account(s)."""
        ...

    async def account_values(self) -> AccountValues:
        """Headline account values."""
        ...

    async def find_order(self, order_ref: str, perm_id: int | None = None) -> BrokerOrder | None:
        """Find an open or completed order by ``order_ref``, then by ``perm_id``; ``None`` when unknown."""
        ...
