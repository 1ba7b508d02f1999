"""The order flows' tasks (:mod:`flows.orders`): sync, retry, cleanup and reconcile (the logic is in
``services.orders``), and the artifacts they publish: ``orders-active``, ``positions``, ``pnl``, ``pnl-history``,
``broker-connectivity``."""

from __future__ import annotations

import datetime as dt
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

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
from services.repositories import strategies as strategies_repo
from services.runtime import get_runtime
from services.strategies import from_row
from tasks.artifacts import key_values, markdown_table, publish_markdown, publish_table


def _timeouts() -> dict[str, int]:
    with session_scope(get_runtime().database_url) as session:
        rows = strategies_repo.list_strategies(session)
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
def sync() -> SyncReport:
    """Status, fills and commissions of the active orders; timed-out DAY limits cancelled; lost children marked."""
    runtime = get_runtime()
    return sync_orders(runtime.database_url, runtime.broker(), runtime.clock(), _timeouts())


@task(name="retry orders", cache_policy=NO_CACHE)
def retry() -> list[str]:
    """Send again the orders back in ``created`` after a submit error and re-attach the protective orders the
    broker lost, each through the send path (the gate at that moment), bounded by retry_max_attempts."""
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


@task(name="archive orders", cache_policy=NO_CACHE)
def archive() -> int:
    """Archive terminal orders older than archive_after_days; nothing is deleted. Return how many."""
    runtime = get_runtime()
    return cleanup(runtime.database_url, runtime.clock(), runtime.settings.trading.archive_after_days)


@task(name="reconcile", cache_policy=NO_CACHE)
def reconcile_broker() -> ReconcileReport:
    """Broker vs DB; a failure stores the flag in trading_state that blocks new orders (until a clean run)."""
    runtime = get_runtime()
    return reconcile(runtime.database_url, runtime.broker(), runtime.clock())
