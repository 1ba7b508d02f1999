"""``trader orders list|show``, ``trader positions``, ``trader halt``, ``trader resume``."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from cli.common import cli_errors, console, db_session
from services.positions import rebuild
from services.repositories import orders as orders_repo
from services.repositories import trading_state

app = typer.Typer(help="Orders: list and show (cancel goes through the order-monitor's broker session).")


@app.command("list")
@cli_errors
def list_orders(limit: Annotated[int, typer.Option(help="Newest first.")] = 50) -> None:
    """List orders, newest first."""
    with db_session() as session:
        table = Table("id", "key", "status", "side", "qty", "filled", "limit", "error")
        for o in orders_repo.list_orders(session, limit=limit):
            table.add_row(str(o.id), o.idempotency_key, o.status.value, o.side.value, str(o.quantity),
                          str(o.filled_quantity), str(o.limit_price or ""), (o.error or "")[:60])  # fmt: skip
    console.print(table)


@app.command("show")
@cli_errors
def show(order_id: int) -> None:
    """One order with its status events and risk decision."""
    with db_session() as session:
        o = orders_repo.get(session, order_id)
        if o is None:
            raise typer.BadParameter(f"no order {order_id}")
        console.print(f"{o.idempotency_key}: {o.status.value} {o.side.value} {o.quantity} {o.symbol}")
        for e in orders_repo.events(session, o.id):
            console.print(f"  {e.at.isoformat()} {e.from_status} -> {e.to_status.value} {e.detail or ''}")
        for check in (o.risk_decision or {}).get("checks", []):
            console.print(f"  {'pass' if check['passed'] else 'FAIL'} {check['name']}: {check['detail']}")


@cli_errors
def positions() -> None:
    """Positions rebuilt from fills, with realized P&L and commissions."""
    with db_session() as session:
        table = Table("symbol", "qty", "avg cost", "realized", "commissions")
        for s in rebuild(session).values():
            table.add_row(s.symbol, str(s.quantity), f"{s.avg_cost:.4f}", f"{s.realized_pnl:.2f}",
                          f"{s.commissions:.2f}")  # fmt: skip
    console.print(table)


@cli_errors
def halt(reason: Annotated[str, typer.Option(help="Why trading stops (required).")]) -> None:
    """Engage the kill switch: every new order is refused (visible in each run's order artifact)."""
    with db_session() as session:
        trading_state.set_kill_switch(session, True, reason, changed_by="cli")
    console.print(f"kill switch ENGAGED: {reason}")


@cli_errors
def resume() -> None:
    """Release the kill switch."""
    with db_session() as session:
        trading_state.set_kill_switch(session, False, None, changed_by="cli")
    console.print("kill switch released")
