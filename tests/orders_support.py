"""What order tests share: a stored strategy for the orders to belong to, and the send-time context.

Every send runs the real risk gate (``services.orders.submit.send``): an order's strategy must be stored and
active, its signal valid at ``now``, the instrument's market open at ``now``, and the limits must allow it.
Tests set those up here rather than bypass the gate.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd

from models.strategy import Risk, StrategyDefinition
from services.broker.loop_owner import SyncBroker
from services.broker.memory import MemoryBroker, stock
from services.broker.types import ContractInfo
from services.db import session_scope
from services.orders.submit import SendContext
from services.settings import TradingSettings
from services.strategies import load_strategy_file, save_definition

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "strategies" / "spy-sma-cross.yaml"
BAR0 = dt.datetime(2024, 6, 3, 13, 30, tzinfo=dt.UTC)  # Monday 09:30 New York
NOW = BAR0 + dt.timedelta(minutes=50)  # Monday 2024-06-03 10:20 New York
SPY = stock("SPY", 756733)


def bars(n: int = 30, start: dt.datetime = BAR0, price: float = 100.0) -> pd.DataFrame:
    """``n`` five-minute SPY bars from ``start``, closes rising by 0.10 from ``price``."""
    times = [start + dt.timedelta(minutes=5 * i) for i in range(n)]
    closes = [price + 0.1 * i for i in range(n)]
    return pd.DataFrame(
        {
            "timestamp": pd.DatetimeIndex(times),
            "open": closes,
            "high": [c + 0.5 for c in closes],
            "low": [c - 0.5 for c in closes],
            "close": closes,
            "volume": [10_000.0] * n,
        }
    )


def memory_broker(
    now: dt.datetime = NOW, *, also: Sequence[tuple[ContractInfo, pd.DataFrame]] = ()
) -> Iterator[tuple[MemoryBroker, SyncBroker]]:
    """A fixture body: the in-memory broker over SPY's :func:`bars` (and ``also``'s instruments) at ``now``,
    connected through a SyncBroker."""
    mb = MemoryBroker([SPY, *(c for c, _ in also)], {"SPY": bars()} | {c.symbol: f for c, f in also})
    mb.clock.set(now)
    sync = SyncBroker(lambda: mb)
    sync.connect()
    yield mb, sync
    sync.close()


# Loose limits: tests about the order mechanics are not refused by the sizes they use.
LOOSE_RISK: dict[str, Any] = {
    "max_position": Decimal(1000),
    "max_notional_per_order": Decimal(1_000_000),
    "max_orders_per_day": 100,
    "limit_timeout_minutes": 30,
}


def strategy(name: str = "spy-test", *, symbol: str = "SPY", conid: int = 756733, **risk: Any) -> StrategyDefinition:
    """The example SPY strategy renamed, with loose limits (``risk`` overrides them)."""
    base = load_strategy_file(EXAMPLE)
    new_risk = Risk.model_validate(base.risk.model_dump() | LOOSE_RISK | risk)
    return base.model_copy(update={"name": name, "symbol": symbol, "conid": conid, "risk": new_risk})


def store_strategy(db_url: str, definition: StrategyDefinition | None = None, *, active: bool = True) -> None:
    """Store (or update) ``definition`` (default :func:`strategy`) as the owner of the test's orders."""
    doc = (definition or strategy()).model_copy(update={"active": active})
    with session_scope(db_url) as session:
        save_definition(session, doc)


def send_ctx(
    now: dt.datetime,
    *,
    dry_run: bool = True,
    trading: TradingSettings | None = None,
    marks: Mapping[str, Decimal] | None = None,
) -> SendContext:
    """The send-time context: ``dry_run`` True for a MemoryBroker, False for a socket (the simulator)."""
    settings = trading or TradingSettings(dry_run=dry_run)
    return SendContext(trading=settings, now=now, dry_run=dry_run, marks=dict(marks or {}))
