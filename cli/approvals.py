"""``trader approvals list``, ``trader approve ID``, ``trader reject ID --reason``: the CLI side of order approval.

They resume the paused strategy run through Prefect's resume API with the same input the UI form sends
(``deployments/approvals.py``), so the run records who decided, when and why, and sends or ends the order.
"""

from __future__ import annotations

import getpass
from typing import Annotated, Literal

import typer

from cli.common import cli_errors, console, fail, settings

app = typer.Typer(help="Orders waiting for approval (strategy `approval` rule).")

_BY = typer.Option("--by", help="Who decides (default: your login name).")


def _server() -> None:
    from deployments.bootstrap import server_reachable

    if not server_reachable():
        raise fail("error: no Prefect server: set PREFECT_API_URL (e.g. `trader server start` prints it)")


@app.command("list")
@cli_errors
def list_approvals() -> None:
    """Orders waiting for a decision: id, strategy, order, notional, why, deadline, and their run's state."""
    from prefect import get_client

    from deployments.approvals import waiting

    _server()
    with get_client(sync_client=True) as client:
        rows = waiting(settings().database_url(), client)
    if not rows:
        console.print("no orders waiting for approval")
        return
    for row in rows:
        o = row.order
        notional = f"{o.notional:.2f}" if o.notional is not None else "?"
        console.print(
            f"{o.order_id}  {o.strategy}  {o.side} {o.quantity} {o.symbol} {o.order_type} "
            f"{o.limit_price or ''}  notional {notional}  {o.approval.get('why', '')}  "
            f"deadline {o.approval.get('deadline', '')}  run {o.flow_run_id} ({row.run_state})",
            markup=False,
        )


def _decide(ident: str, decision: Literal["approve", "reject"], reason: str, by: str | None) -> None:
    from prefect import get_client

    from deployments.approvals import decide, resolve_run

    _server()
    order_id, run_id = resolve_run(settings().database_url(), ident)
    with get_client(sync_client=True) as client:
        state = decide(client, run_id, decision, reason=reason, approver=by or getpass.getuser())
    verb = "approved" if decision == "approve" else "rejected"
    console.print(f"order {order_id} {verb}: flow run {run_id} {state}", markup=False)


@cli_errors
def approve(
    ident: Annotated[str, typer.Argument(metavar="ID", help="Order id (trader approvals list) or flow run id.")],
    reason: Annotated[str, typer.Option(help="Why (stored on the order).")] = "",
    by: Annotated[str | None, _BY] = None,
) -> None:
    """Approve a waiting order: its run resumes, re-runs the risk gate and sends it."""
    _decide(ident, "approve", reason, by)


@cli_errors
def reject(
    ident: Annotated[str, typer.Argument(metavar="ID", help="Order id (trader approvals list) or flow run id.")],
    reason: Annotated[str, typer.Option(help="Why (required; stored on the order).")],
    by: Annotated[str | None, _BY] = None,
) -> None:
    """Reject a waiting order: its run ends Completed "not approved: <reason>" and nothing is sent."""
    if not reason.strip():
        raise fail("error: --reason must say why", 2)
    _decide(ident, "reject", reason, by)
