"""What order tests share: a stored strategy for the orders to belong to, and the send-time context.

Every send runs the real risk gate (``services.orders.submit.send``): an order's strategy must be stored and
active, its signal valid at ``now``, the instrument's market open at ``now``, and the limits must allow it.
Tests set those up here rather than bypass the gate.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

from models.strategy import Risk, StrategyDefinition
from services.db import session_scope
from services.orders.submit import SendContext
from services.settings import TradingSettings
from services.strategies import load_strategy_file, save_definition

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "strategies" / "spy-sma-cross.yaml"

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
