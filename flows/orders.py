"""Order flows: order-monitor, order-retry, order-cleanup, reconcile, kill-switch (thin: their tasks are in
:mod:`tasks.order_flows` and :mod:`tasks.kill_switch`, the logic in ``services.orders``).

Each flow first asks the order gate (``tasks.market_gate.order_flow_skip_state``): in IB's daily reset window,
or while the broker session is down (it heals in the background), the run ends Completed "Skipped" with the
reason; the next scheduled run catches up. The order monitor publishes ``broker-connectivity`` on every run.
"""

from __future__ import annotations

from prefect import flow
from prefect.runtime import flow_run

from services.orders.monitor import ReconcileReport, SyncReport
from tasks import kill_switch as kill_switch_tasks
from tasks.market_gate import order_flow_skip_state
from tasks.order_flows import (
    CONNECTIVITY_KEY,
    PNL_HISTORY_KEY,
    archive,
    publish_connectivity,
    publish_state,
    reconcile_broker,
    retry,
    snapshot_pnl,
    sync,
)

__all__ = [
    "CONNECTIVITY_KEY",
    "PNL_HISTORY_KEY",
    "kill_switch_flow",
    "order_cleanup",
    "order_monitor",
    "order_retry",
    "reconcile_flow",
]


@flow(name="order-monitor")
def order_monitor(chart: bool = True) -> SyncReport:
    """Sync status, fills and commissions of active orders; cancel timed-out DAY limits; publish the state;
    store a P&L snapshot and publish the P&L-over-time chart."""
    skipped = order_flow_skip_state()
    publish_connectivity(skipped.message if skipped is not None else None)
    if skipped is not None:
        return skipped  # type: ignore[return-value]
    report = sync()
    publish_state()
    snapshot_pnl(chart)
    return report


@flow(name="order-retry")
def order_retry() -> list[str]:
    """Send again orders back in ``created`` after a submit error, and re-attach the protective orders the broker
    lost (the monitor marks them), bounded by retry_max_attempts."""
    if (skipped := order_flow_skip_state()) is not None:  # IB reset window / broker down: Completed "Skipped"
        return skipped  # type: ignore[return-value]
    return retry()


@flow(name="order-cleanup")
def order_cleanup() -> int:
    """Archive terminal orders older than archive_after_days; nothing is deleted."""
    if (skipped := order_flow_skip_state(broker=False)) is not None:  # IB reset window: Completed "Skipped"
        return skipped  # type: ignore[return-value]
    return archive()


@flow(name="reconcile")
def reconcile_flow() -> ReconcileReport:
    """Broker vs DB; a failure stores a flag in trading_state that blocks new orders (until a clean run). A run
    skipped by the gate leaves the flag as it was."""
    if (skipped := order_flow_skip_state()) is not None:  # IB reset window / broker down: Completed "Skipped"
        return skipped  # type: ignore[return-value]
    report = reconcile_broker()
    publish_state()
    return report


@flow(name="kill-switch")
def kill_switch_flow(engage: bool = True, reason: str = "", cancel_all: bool = False) -> list[str]:
    """Engage (``engage`` true, with a ``reason``) or release the kill switch from the Prefect UI, as
    ``trader halt`` / ``trader resume`` do; ``cancel_all`` then cancels every working order at the broker.
    Publishes the switch's history (artifact ``kill-switch-history``). Returns the orders it ended."""
    by = f"prefect flow run {flow_run.get_id() or 'local'}"
    ended: list[str] = []
    if engage:
        ended = kill_switch_tasks.engage(reason, by)
        if cancel_all:
            report = kill_switch_tasks.cancel_working(reason)
            ended += [o.key for o in report.outcomes if o.done]
    else:
        kill_switch_tasks.release(reason or None, by)
    kill_switch_tasks.publish_history()
    return ended
