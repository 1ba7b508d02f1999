"""The risk gate: every check runs, each is named in the decision, and any failure refuses the order.

:func:`evaluate` is pure: the caller gathers a :class:`RiskContext` (settings, kill switch, market hours,
position, open orders, today's orders, today's P&L, buying power) and a :class:`ProposedOrder`. The resulting
:class:`RiskDecision` is stored as JSON on the order row (``orders.risk_decision``), approved or not.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Any, Final

from models.enums import OrderSide, TradingMode
from models.strategy import Risk
from services.settings import TradingSettings

CHECKS: Final = (
    "trading_mode",
    "kill_switch",
    "strategy_active",
    "signal_valid",
    "reconciliation",
    "market_open",
    "max_notional_per_order",
    "max_position",
    "short_selling",
    "max_open_orders",
    "max_orders_per_day",
    "max_daily_loss",
    "buying_power",
)


@dataclass(frozen=True)
class ProposedOrder:
    """What the strategy wants to send (already sized and tick-rounded)."""

    symbol: str
    side: OrderSide
    quantity: Decimal
    price: Decimal  # limit price, or the reference price of a market order
    protective: bool = False  # a bracket child re-attached on its own: the order-count limits count entries

    @property
    def notional(self) -> Decimal:
        return self.quantity * self.price

    @property
    def signed_quantity(self) -> Decimal:
        return self.quantity if self.side is OrderSide.BUY else -self.quantity


@dataclass(frozen=True)
class RiskContext:
    """The state the gate judges against, gathered just before the decision."""

    trading: TradingSettings
    broker_is_simulated: bool  # a MemoryBroker (dry run) rather than a socket to TWS / the simulator
    account_code: str | None
    kill_switch_engaged: bool
    kill_switch_reason: str | None
    daily_loss_tripped: bool
    reconciliation_problem: str | None
    market_open: bool
    position: Decimal  # current signed position in the symbol (DB view)
    pending_quantity: Decimal  # signed remaining quantity of this symbol's active orders
    open_orders: int
    orders_today: int  # orders of this strategy placed (or attempted) in the current trading day
    daily_pnl: Decimal  # realized + unrealized since the session open (negative = loss)
    buying_power: Decimal | None
    strategy_problem: str | None = None  # why the order's strategy may not order now (inactive, deleted), or None
    expiry_problem: str | None = None  # why the order's signal is no longer valid (expired), or None


@dataclass(frozen=True)
class CheckResult:
    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class RiskDecision:
    """All check results; approved only when every check passed."""

    checks: tuple[CheckResult, ...]

    @property
    def approved(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def expired(self) -> bool:
        """Refused (also) because the signal is no longer valid: the order ends ``expired``, not refused."""
        return any(c.name == "signal_valid" and not c.passed for c in self.checks)

    @property
    def reasons(self) -> list[str]:
        return [f"{c.name}: {c.detail}" for c in self.checks if not c.passed]

    def check(self, name: str) -> CheckResult:
        return next(c for c in self.checks if c.name == name)

    def to_json(self) -> dict[str, Any]:
        return {"approved": self.approved, "reasons": self.reasons, "checks": [asdict(c) for c in self.checks]}

    def rows(self) -> list[dict[str, Any]]:
        """The decision as table rows (for artifacts and the CLI)."""
        return [{"check": c.name, "result": "pass" if c.passed else "FAIL", "detail": c.detail} for c in self.checks]


def evaluate(risk: Risk, order: ProposedOrder, ctx: RiskContext) -> RiskDecision:
    """Run every check of the gate and return the decision (never raises for a refusal)."""
    t = ctx.trading
    results: list[CheckResult] = []

    def add(name: str, passed: bool, detail: str) -> None:
        results.append(CheckResult(name, passed, detail))

    add("trading_mode", *_mode_check(ctx))
    add(
        "kill_switch",
        not (ctx.kill_switch_engaged or ctx.daily_loss_tripped),
        f"engaged: {ctx.kill_switch_reason}"
        if ctx.kill_switch_engaged
        else ("daily-loss breaker tripped today" if ctx.daily_loss_tripped else "off"),
    )
    add("strategy_active", ctx.strategy_problem is None, ctx.strategy_problem or "strategy active")
    add("signal_valid", ctx.expiry_problem is None, ctx.expiry_problem or "signal still valid")
    add(
        "reconciliation",
        ctx.reconciliation_problem is None,
        ctx.reconciliation_problem or "last reconciliation clean",
    )
    add("market_open", ctx.market_open, "market open" if ctx.market_open else f"{order.symbol} market closed")
    limit = risk.max_notional_per_order
    adding = _adding(order, ctx) * order.price  # a close (time exit, opposite signal) only reduces the exposure
    detail = f"{order.notional} vs max {limit}" + (f" (adds {adding})" if adding != order.notional else "")
    add("max_notional_per_order", adding <= limit, detail)
    projected = ctx.position + ctx.pending_quantity + order.signed_quantity
    add("max_position", abs(projected) <= risk.max_position, f"projected {projected} vs max {risk.max_position}")
    add(
        "short_selling",
        risk.allow_short or projected >= 0,
        f"projected {projected}" + ("" if risk.allow_short else " (shorting not allowed)"),
    )
    entries = "a protective order of its entry's bracket (the limits count entries)"
    add(
        "max_open_orders",
        order.protective or ctx.open_orders < t.max_open_orders,
        entries if order.protective else f"{ctx.open_orders} open vs max {t.max_open_orders}",
    )
    add(
        "max_orders_per_day",
        order.protective or ctx.orders_today < risk.max_orders_per_day,
        entries if order.protective else f"{ctx.orders_today} today vs max {risk.max_orders_per_day}",
    )
    loss = -ctx.daily_pnl
    max_loss = t.max_daily_loss_usd
    add("max_daily_loss", loss < max_loss, f"today's P&L {ctx.daily_pnl} vs max loss {max_loss}")
    add("buying_power", *_buying_power_check(order, ctx))
    return RiskDecision(tuple(results))


def _mode_check(ctx: RiskContext) -> tuple[bool, str]:
    t = ctx.trading
    if t.mode is TradingMode.LIVE and not t.live_enabled:
        return False, "mode=live without live_enabled"
    if t.dry_run and not ctx.broker_is_simulated:
        return False, "dry_run is on but the broker is a real socket"
    if not t.dry_run and ctx.broker_is_simulated:
        return False, "dry_run is off but the broker is the in-memory simulator"
    code = ctx.account_code
    if code is not None and not t.dry_run:
        paper_account = code.upper().startswith("D")
        if t.mode is TradingMode.LIVE and paper_account:
            return False, f"mode live but account {code[:2]}*** is a paper account"
        if t.mode is TradingMode.PAPER and not paper_account:
            return False, f"mode paper but account {code[:2]}*** is a live account"
    return True, f"mode {t.mode.value}, dry_run {t.dry_run}"


def _adding(order: ProposedOrder, ctx: RiskContext) -> Decimal:
    """The part of ``order`` that adds exposure: all of it, less what reduces the position (and its pending
    orders)."""
    current = ctx.position + ctx.pending_quantity
    if current != 0 and (current > 0) != (order.signed_quantity > 0):
        return max(order.quantity - abs(current), Decimal(0))
    return order.quantity


def _buying_power_check(order: ProposedOrder, ctx: RiskContext) -> tuple[bool, str]:
    # Reducing an existing position frees buying power; only the part that adds exposure needs it.
    needed = _adding(order, ctx) * order.price
    if needed == 0:
        return True, "reduces the position"
    if ctx.buying_power is None:
        return False, "buying power unknown (account values not reported)"
    return needed <= ctx.buying_power, f"needs {needed} vs {ctx.buying_power} available"
