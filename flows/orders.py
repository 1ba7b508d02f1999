"""Order flows: order-monitor, order-retry, order-cleanup, reconcile (thin: the logic is in services.orders).

Each flow first asks the order gate (``tasks.market_gate.order_flow_skip_state``): in IB's daily reset window,
or while the broker session is down (it heals in the background), the run ends Completed "Skipped" with the
reason; the next scheduled run catches up. The order monitor publishes ``broker-connectivity`` on every run.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from sqlalchemy import select

from models.tables import Strategy
from services.broker.types import ContractInfo
from services.charts import render_png
from services.db import session_scope
from services.orders.monitor import (
    OrderInstrument,
    ReconcileReport,
    SyncReport,
    cleanup,
    reconcile,
    retry_contract,
    retry_orders,
    sync_orders,
)
from services.orders.pnl import CHART_HEIGHT, CHART_WIDTH, PnlReport, pnl_markdown, take_snapshot
from services.orders.submit import SendContext
from services.positions import rebuild
from services.repositories import orders as orders_repo
from services.repositories import pnl as pnl_repo
from services.runtime import get_runtime
from services.strategies import from_row
from tasks import kill_switch as kill_switch_tasks
from tasks.artifacts import key_values, markdown_table, publish_markdown, publish_table
from tasks.market_gate import order_flow_skip_state


def _timeouts() -> dict[str, int]:
    with session_scope(get_runtime().database_url) as session:
        rows = session.scalars(select(Strategy)).all()
        return {row.name: from_row(row).risk.limit_timeout_minutes for row in rows}


@task(name="publish order state", cache_policy=NO_CACHE)
def publish_state() -> None:
    """Tables of active orders and positions (realized P&L) and a P&L summary, under stable keys."""
    with session_scope(get_runtime().database_url) as session:
        active: list[dict[str, Any]] = [
            {"id": o.id, "key": o.idempotency_key, "status": o.status.value, "side": o.side.value,
             "qty": str(o.quantity), "filled": str(o.filled_quantity), "limit": str(o.limit_price or ""),
             "mode": o.run_mode.value if o.run_mode is not None else ""}
            for o in orders_repo.active(session)
        ]  # fmt: skip
        states = rebuild(session)
        rows: list[dict[str, Any]] = [
            {"symbol": s.symbol, "qty": str(s.quantity), "avg cost": f"{s.avg_cost:.4f}",
             "realized": f"{s.realized_pnl:.2f}", "commissions": f"{s.commissions:.2f}"}
            for s in states.values()
        ]  # fmt: skip
    publish_table("orders-active", active, f"{len(active)} active orders")
    publish_table("positions", rows, f"{len(rows)} positions")
    publish_markdown("pnl", "# P&L\n\n" + markdown_table(rows), "realized P&L per symbol")


PNL_HISTORY_KEY = "pnl-history"


@task(name="pnl snapshot", cache_policy=NO_CACHE)
def snapshot_pnl(chart: bool = True) -> PnlReport:
    """Store this run's ``pnl_snapshots`` row and publish the account P&L over time (``pnl-history``)."""
    runtime = get_runtime()
    report = take_snapshot(runtime.database_url, runtime.broker(), runtime.clock())
    with session_scope(runtime.database_url) as session:
        history = pnl_repo.recent(session, limit=500)
    render = (lambda fig: render_png(fig, width=CHART_WIDTH, height=CHART_HEIGHT)) if chart else None
    publish_markdown(PNL_HISTORY_KEY, pnl_markdown(history, render), f"account P&L, {len(history)} snapshots")
    return report


CONNECTIVITY_KEY = "broker-connectivity"


@task(name="publish broker connectivity", cache_policy=NO_CACHE)
def publish_connectivity(skipped: str | None) -> None:
    """The broker session's state, last change and outage figures (``broker-connectivity``)."""
    status = get_runtime().broker_status()
    rows = status.rows() if status is not None else [("state", "no session (never connected in this process)")]
    rows.append(("this run", skipped or "ran"))
    state = status.state.value if status is not None else "none"
    publish_markdown(CONNECTIVITY_KEY, "# Broker connectivity\n\n" + key_values(rows), f"broker {state}")


@task(name="sync orders", cache_policy=NO_CACHE)
def _sync() -> SyncReport:
    runtime = get_runtime()
    return sync_orders(runtime.database_url, runtime.broker(), runtime.clock(), _timeouts())


@flow(name="order-monitor")
def order_monitor(chart: bool = True) -> SyncReport:
    """Sync status, fills and commissions of active orders; cancel timed-out DAY limits; publish the state;
    store a P&L snapshot and publish the P&L-over-time chart."""
    skipped = order_flow_skip_state()
    publish_connectivity(skipped.message if skipped is not None else None)
    if skipped is not None:
        return skipped  # type: ignore[return-value]
    report = _sync()
    publish_state()
    snapshot_pnl(chart)
    return report


@flow(name="order-retry")
def order_retry() -> list[str]:
    """Send again orders back in ``created`` after a submit error, and re-attach the protective orders the broker
    lost (the monitor marks them), bounded by retry_max_attempts."""
    if (skipped := order_flow_skip_state()) is not None:  # IB reset window / broker down: Completed "Skipped"
        return skipped  # type: ignore[return-value]
    runtime = get_runtime()
    broker = runtime.broker()
    now = runtime.clock()
    ttl = dt.timedelta(seconds=runtime.settings.ib.contract_cache_ttl_s)

    def contract_for(what: OrderInstrument) -> ContractInfo:
        return retry_contract(runtime.database_url, broker, what, ttl=ttl, now=now)

    trading = runtime.settings.trading
    ctx = SendContext(trading=trading, now=now, dry_run=False)
    results = retry_orders(runtime.database_url, broker, contract_for, trading.retry_max_attempts, ctx)
    return [f"{r.key}: {r.status.value}" for r in results]


@flow(name="order-cleanup")
def order_cleanup() -> int:
    """Archive terminal orders older than archive_after_days; nothing is deleted."""
    if (skipped := order_flow_skip_state(broker=False)) is not None:  # IB reset window: Completed "Skipped"
        return skipped  # type: ignore[return-value]
    runtime = get_runtime()
    return cleanup(runtime.database_url, runtime.clock(), runtime.settings.trading.archive_after_days)


@flow(name="reconcile")
def reconcile_flow() -> ReconcileReport:
    """Broker vs DB; a failure stores a flag in trading_state that blocks new orders (until a clean run). A run
    skipped by the gate leaves the flag as it was."""
    if (skipped := order_flow_skip_state()) is not None:  # IB reset window / broker down: Completed "Skipped"
        return skipped  # type: ignore[return-value]
    runtime = get_runtime()
    report = reconcile(runtime.database_url, runtime.broker(), runtime.clock())
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
