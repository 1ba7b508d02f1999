"""``trader orders list|show|cancel``, ``trader positions``, ``trader pnl``, ``trader halt``, ``trader resume``.

Commands that need the broker (cancel, halt --cancel-all, the marks of ``pnl``) use the process runtime's broker
session (``services.runtime``: ``TRADER_IB__*``, or the one a test / the demo installed) and close it at the end.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Annotated

import typer

from cli.common import EXIT_FAILED, cli_errors, console, db_session, err_console, fail, settings
from services.errors import InputError, Problem, TraderError

if TYPE_CHECKING:
    from services.orders.submit import OrderBroker

app = typer.Typer(help="Orders: list, show and cancel (cancel goes through the broker).")


@contextmanager
def _runtime_broker() -> Iterator[OrderBroker]:
    """The runtime's broker session, connected on first use (a failure is a BrokerConnectionError: exit 1)."""
    from services.runtime import get_runtime

    runtime = get_runtime()
    try:
        yield runtime.broker()
    finally:
        runtime.close()


@app.command("list")
@cli_errors
def list_orders(limit: Annotated[int, typer.Option(help="Newest first.")] = 50) -> None:
    """List orders, newest first."""
    from rich.table import Table

    from services.repositories import orders as orders_repo

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
    from services.repositories import orders as orders_repo

    with db_session() as session:
        o = orders_repo.get(session, order_id)
        if o is None:
            raise typer.BadParameter(f"no order {order_id}")
        console.print(f"{o.idempotency_key}: {o.status.value} {o.side.value} {o.quantity} {o.symbol}")
        for e in orders_repo.events(session, o.id):
            console.print(f"  {e.at.isoformat()} {e.from_status} -> {e.to_status.value} {e.detail or ''}")
        for check in (o.risk_decision or {}).get("checks", []):
            console.print(f"  {'pass' if check['passed'] else 'FAIL'} {check['name']}: {check['detail']}")


@app.command("cancel")
@cli_errors
def cancel_order(
    order_id: Annotated[int, typer.Argument(help="Order id (see `trader orders list`).")],
    reason: Annotated[str, typer.Option(help="Recorded in the order's events.")] = "cancelled from the CLI",
) -> None:
    """Cancel an order in any non-final state: an unsent one is simply ended; a working one is cancelled through
    the broker (a dry-run order in the DB only)."""
    from services.orders.monitor import cancel_by_id
    from services.runtime import get_runtime

    with db_session():
        pass
    runtime = get_runtime()
    try:
        outcome = cancel_by_id(settings().database_url(), runtime.broker, order_id, reason)
    finally:
        runtime.close()
    if outcome.after.value == "cancelled":
        console.print(f"order {order_id} ({outcome.key}): cancelled")
    elif outcome.done:
        raise fail(f"error: order {order_id} ({outcome.key}) could not be cancelled: it is {outcome.after.value}")
    else:
        console.print(f"order {order_id} ({outcome.key}): {outcome.after.value} (the broker has not confirmed yet)")


def _num(value: Decimal) -> str:
    return format(value.normalize(), "f")


def _parse_marks(values: list[str]) -> dict[str, Decimal]:
    marks: dict[str, Decimal] = {}
    problems: list[Problem] = []
    for value in values:
        symbol, sep, price = value.partition("=")
        try:
            number = Decimal(price.strip()) if sep else None
        except InvalidOperation:
            number = None
        if not symbol.strip() or number is None or not number.is_finite() or number <= 0:
            problems.append(Problem("--mark", f"expected SYMBOL=PRICE with a positive price, got {value!r}"))
            continue
        marks[symbol.strip().upper()] = number
    if problems:
        raise InputError("trader pnl", problems)
    return marks


@cli_errors
def pnl(
    day: Annotated[bool, typer.Option("--day", help="Realized P&L and commissions of today's fills only.")] = False,
    mark: Annotated[
        list[str] | None, typer.Option(help="SYMBOL=PRICE mark for unrealized P&L (repeatable; else from the broker).")
    ] = None,
    offline: Annotated[bool, typer.Option(help="Do not ask the broker for marks.")] = False,
) -> None:
    """Realized, unrealized and commissions per symbol and in total (realized is net of commissions)."""
    from rich.table import Table

    from services.orders.context import trading_day_start
    from services.orders.pnl import broker_marks, open_positions, pnl_report
    from services.runtime import get_runtime

    marks = _parse_marks(mark or [])
    now = get_runtime().clock()
    since = trading_day_start(now) if day else None
    with db_session() as session:
        held = open_positions(session)
    missing = {s: c for s, c in held.items() if s not in marks}
    if missing and not offline:
        try:
            with _runtime_broker() as broker:
                marks |= broker_marks(broker, missing)
        except TraderError as exc:
            err_console.print(f"warning: no marks from the broker ({exc}); unrealized P&L unknown", markup=False)
    with db_session() as session:
        report = pnl_report(session, marks, since=since)
    title = f"P&L since {since.isoformat()}" if since else "P&L (all fills)"
    table = Table("symbol", "qty", "avg cost", "mark", "realized", "unrealized", "commissions", title=title)
    for r in report.rows:
        table.add_row(r.symbol, _num(r.quantity), f"{r.avg_cost:.4f}", _num(r.mark) if r.mark is not None else "-",
                      f"{r.realized:.2f}", f"{r.unrealized:.2f}" if r.unrealized is not None else "n/a",
                      f"{r.commissions:.2f}")  # fmt: skip
    table.add_row("TOTAL", "", "", "", f"{report.realized:.2f}", f"{report.unrealized:.2f}",
                  f"{report.commissions:.2f}")  # fmt: skip
    console.print(table)
    if report.unmarked:
        console.print(f"no mark for {', '.join(report.unmarked)}: unrealized P&L not included")


@cli_errors
def positions() -> None:
    """Positions rebuilt from fills, with realized P&L and commissions."""
    from rich.table import Table

    from services.positions import rebuild

    with db_session() as session:
        table = Table("symbol", "qty", "avg cost", "realized", "commissions")
        for s in rebuild(session).values():
            table.add_row(s.symbol, str(s.quantity), f"{s.avg_cost:.4f}", f"{s.realized_pnl:.2f}",
                          f"{s.commissions:.2f}")  # fmt: skip
    console.print(table)


@cli_errors
def halt(
    reason: Annotated[str | None, typer.Option(help="Why trading stops (required to engage).")] = None,
    cancel_all: Annotated[
        bool, typer.Option("--cancel-all", help="Then cancel every working order at the broker.")
    ] = False,
    history: Annotated[bool, typer.Option("--history", help="Show who engaged / released it, when and why.")] = False,
) -> None:
    """Engage the kill switch: every unsent order ends at once and every new order is refused.

    Engaging waits until any send already past its risk gate has reached the broker; from then on no send passes
    the gate. With ``--cancel-all`` every working order is then cancelled through the broker. Exit 1 when an
    order could not be cancelled. ``--history`` only prints the history.
    """
    from services.orders import kill_switch

    if history:
        from rich.table import Table

        table = Table("at (UTC)", "change", "by", "reason", "unsent orders ended")
        for h in kill_switch.history(settings().database_url()):
            table.add_row(h.at.isoformat(timespec="seconds"), "ENGAGED" if h.engaged else "released",
                          h.changed_by or "", h.reason or "", str(h.ended_orders))  # fmt: skip
        console.print(table)
        return
    if reason is None or not reason.strip():
        raise InputError("trader halt", [Problem("--reason", "must not be empty")])
    with db_session():
        pass  # the schema exists (a clear error otherwise)
    from tasks.events import install

    install()  # the halt is told through Prefect (a notification) when PREFECT_API_URL is set
    result = kill_switch.engage(settings().database_url(), reason, changed_by="cli")
    console.print(f"kill switch ENGAGED: {reason}")
    if result.ended:
        console.print(f"{len(result.ended)} unsent orders ended: {', '.join(result.ended)}")
    if result.kept:
        console.print(
            f"{len(result.kept)} protective orders to re-attach kept (re-attached after `trader resume`): "
            + ", ".join(result.kept)
        )
    if not cancel_all:
        return
    from services.orders.monitor import cancel_all as cancel_every
    from services.runtime import get_runtime

    runtime = get_runtime()
    try:
        report = cancel_every(settings().database_url(), runtime.broker, f"halt: {reason}")
    finally:
        runtime.close()
    for o in report.outcomes:
        console.print(f"  {o.order_id} {o.key}: {o.before.value} -> {o.after.value}")
    for ref in report.broker_only:
        console.print(f"  {ref}: cancelled at the broker (not in the DB)")
    cancelled = sum(o.done for o in report.outcomes) + len(report.broker_only)
    console.print(f"{cancelled} orders cancelled or done, {len(report.still_working)} still working")
    for error in report.errors:
        err_console.print(f"error: {error}", markup=False)
    if report.errors or report.still_working:
        raise typer.Exit(EXIT_FAILED)


@cli_errors
def resume(reason: Annotated[str | None, typer.Option(help="Recorded in the history.")] = None) -> None:
    """Release the kill switch (recorded in ``trader halt --history``)."""
    from services.orders import kill_switch

    with db_session():
        pass
    from tasks.events import install

    install()
    kill_switch.release(settings().database_url(), changed_by="cli", reason=reason)
    console.print("kill switch released")
