"""Answer an order's approval from outside the run: Prefect's resume API with the run input the UI form sends.

``trader approve`` / ``trader reject`` and the Prefect UI are one mechanism: both resume the paused strategy run
with an :class:`tasks.approval.ApprovalInput` (decision, reason, approver); the run records the decision on the
order and sends it or ends it (``tasks/approval.py``). Nothing here touches the order itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal
from uuid import UUID

from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.objects import StateType
from prefect.exceptions import ObjectNotFound

from services.errors import InputError, StopError
from services.orders import approval


@dataclass(frozen=True)
class Waiting:
    """One order waiting for a decision, with its run's state on the Prefect server."""

    order: approval.ApprovalView
    run_state: str  # "Paused", or what the run is instead (the order then waits for nobody: see README)


def waiting(db_url: str, client: SyncPrefectClient) -> list[Waiting]:
    """Orders waiting for approval (oldest first) and the state of the run that waits for each."""
    out = []
    for view in approval.pending_views(db_url):
        state = "no flow run"
        if view.flow_run_id:
            try:
                run = client.read_flow_run(UUID(view.flow_run_id))
                state = (run.state.name or run.state.type.value) if run.state is not None else "unknown"
            except (ObjectNotFound, ValueError):
                state = "flow run not found"
        out.append(Waiting(view, state))
    return out


def resolve_run(db_url: str, ident: str) -> tuple[int, UUID]:
    """The order id and its waiting flow run for ``ident``: an order id, or the flow run's id."""
    views = approval.pending_views(db_url)
    for view in views:
        if ident == str(view.order_id) or (view.flow_run_id and ident == view.flow_run_id):
            if not view.flow_run_id:
                raise StopError(f"order {view.order_id} waits for approval but has no flow run to resume")
            return view.order_id, UUID(view.flow_run_id)
    raise InputError("ID", f"no order waiting for approval has id or flow run {ident!r} (trader approvals list)")


def decide(
    client: SyncPrefectClient,
    flow_run_id: UUID,
    decision: Literal["approve", "reject"],
    *,
    reason: str,
    approver: str,
) -> str:
    """Resume the paused run with the decision (the UI form's input); return the run's new state's name.

    The server refuses a run that is not paused, whose pause timed out, or whose input does not fit the form.
    """
    run = client.read_flow_run(flow_run_id)
    if run.state is None or run.state.type is not StateType.PAUSED:
        raise StopError(f"flow run {flow_run_id} is not paused (it is {run.state.name if run.state else 'unknown'})")
    run_input: dict[str, Any] = {"decision": decision, "reason": reason, "approver": approver}
    result = client.resume_flow_run(flow_run_id, run_input=run_input)
    if result.status.value != "ACCEPT":
        why = getattr(result.details, "reason", None) or result.status.value
        raise StopError(f"the server did not resume flow run {flow_run_id}: {why}")
    return (result.state.name or result.state.type.value) if result.state is not None else "resumed"
