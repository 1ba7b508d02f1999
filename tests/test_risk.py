from __future__ import annotations

from dataclasses import replace
from decimal import Decimal as D

import pytest

from models.enums import OrderSide, SizingMethod, TradingMode
from models.strategy import Risk, Sizing
from services.orders.risk import CHECKS, ProposedOrder, RiskContext, evaluate
from services.settings import TradingSettings

RISK = Risk(
    max_position=D(100),
    max_notional_per_order=D(10_000),
    max_orders_per_day=3,
    sizing=Sizing(method=SizingMethod.FIXED_QUANTITY, quantity=D(10)),
)
ORDER = ProposedOrder("SPY", OrderSide.BUY, D(10), D("400"))
CTX = RiskContext(
    trading=TradingSettings(max_daily_loss_usd=D(1000), max_open_orders=5),
    broker_is_simulated=True,
    account_code="DU1234567",
    kill_switch_engaged=False,
    kill_switch_reason=None,
    daily_loss_tripped=False,
    reconciliation_problem=None,
    market_open=True,
    position=D(0),
    pending_quantity=D(0),
    open_orders=0,
    orders_today=0,
    daily_pnl=D(0),
    buying_power=D(100_000),
)


def test_clean_order_passes_every_named_check() -> None:
    decision = evaluate(RISK, ORDER, CTX)
    assert decision.approved, decision.reasons
    assert [c.name for c in decision.checks] == list(CHECKS)
    doc = decision.to_json()
    assert doc["approved"] is True and len(doc["checks"]) == len(CHECKS)


TRIPS = [
    ("trading_mode", {"broker_is_simulated": False}, None),
    ("trading_mode", {"trading": TradingSettings(dry_run=False), "account_code": "U7654321"}, None),
    (
        "trading_mode",
        {"trading": TradingSettings(mode=TradingMode.LIVE, live_enabled=True, dry_run=False), "account_code": "DU1"},
        None,
    ),
    ("kill_switch", {"kill_switch_engaged": True, "kill_switch_reason": "manual halt"}, None),
    ("kill_switch", {"daily_loss_tripped": True}, None),
    ("reconciliation", {"reconciliation_problem": "2 differences"}, None),
    ("market_open", {"market_open": False}, None),
    ("max_notional_per_order", {}, ProposedOrder("SPY", OrderSide.BUY, D(30), D("400"))),
    ("max_position", {"position": D(95)}, None),
    ("max_position", {"pending_quantity": D(95)}, None),
    ("short_selling", {}, ProposedOrder("SPY", OrderSide.SELL, D(10), D("400"))),
    ("max_open_orders", {"open_orders": 5}, None),
    ("max_orders_per_day", {"orders_today": 3}, None),
    ("max_daily_loss", {"daily_pnl": D(-1000)}, None),
    ("buying_power", {"buying_power": D(3999)}, None),
    ("buying_power", {"buying_power": None}, None),
]


@pytest.mark.parametrize(("check", "changes", "order"), TRIPS)
def test_each_check_trips_alone(check: str, changes: dict[str, object], order: ProposedOrder | None) -> None:
    decision = evaluate(RISK, order or ORDER, replace(CTX, **changes))  # type: ignore[arg-type]
    assert not decision.approved
    failed = [c.name for c in decision.checks if not c.passed]
    assert failed == [check], decision.reasons
    assert decision.reasons[0].startswith(f"{check}: ")


def test_kill_switch_blocks_and_names_the_reason() -> None:
    decision = evaluate(RISK, ORDER, replace(CTX, kill_switch_engaged=True, kill_switch_reason="fat finger"))
    assert not decision.approved
    assert "fat finger" in decision.check("kill_switch").detail


def test_selling_a_long_position_needs_no_buying_power_and_is_not_short() -> None:
    sell = ProposedOrder("SPY", OrderSide.SELL, D(10), D("400"))
    decision = evaluate(RISK, sell, replace(CTX, position=D(10), buying_power=D(0)))
    assert decision.approved, decision.reasons


def test_short_allowed_when_the_strategy_says_so() -> None:
    sell = ProposedOrder("SPY", OrderSide.SELL, D(10), D("400"))
    decision = evaluate(RISK.model_copy(update={"allow_short": True}), sell, CTX)
    assert decision.approved, decision.reasons


def test_max_notional_per_order_judges_only_the_part_that_adds_exposure() -> None:
    """A close (a time exit, an opposite signal) of a position that grew in value past the limit still goes out;
    the part of an order that goes beyond the position (a flip) is judged."""
    close = ProposedOrder("SPY", OrderSide.SELL, D(30), D("400"))  # 12,000 > 10,000, but it closes a long of 30
    decision = evaluate(RISK, close, replace(CTX, position=D(30)))
    assert decision.check("max_notional_per_order").passed, decision.reasons
    assert decision.check("max_notional_per_order").detail == "12000 vs max 10000 (adds 0)"
    flip = ProposedOrder("SPY", OrderSide.SELL, D(60), D("400"))  # closes 30, opens a short of 30: 12,000 added
    failed = evaluate(RISK, flip, replace(CTX, position=D(30))).check("max_notional_per_order")
    assert not failed.passed and failed.detail == "24000 vs max 10000 (adds 12000)"
