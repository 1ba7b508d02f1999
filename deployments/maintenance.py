"""Maintenance flows run by deployments (prefect.yaml): the contract-details cache refresh and the strategy sync."""

from __future__ import annotations

from prefect import flow

from deployments.sync import sync_from_database
from services import symbols
from services.db import session_scope
from services.runtime import get_runtime
from tasks.deployment_sync import publish_sync_report


@flow(name="symbol-cache-refresh")
def symbol_cache_refresh() -> list[str]:
    """Re-qualify every cached contract with the broker and store the fresh details; return their symbols."""
    runtime = get_runtime()
    fresh = symbols.refresh_all(lambda: session_scope(runtime.database_url), runtime.broker(), now=runtime.clock())
    return [contract.symbol for contract in fresh]


@flow(name="strategy-sync")
def strategy_sync() -> list[dict[str, str]]:
    """Converge the per-strategy deployments with the database, as `trader deploy` does (the same code): create,
    update, pause, resume, remove; publish the ``strategy-sync`` artifact; return its rows.

    It catches what a `trader strategies activate|deactivate|delete` could not reach at once (no server then),
    and edits made straight in the database. Existing deployments keep their working directory.
    """
    runtime = get_runtime()
    report = sync_from_database(runtime.database_url, work_pool=runtime.settings.prefect.work_pool, app_dir=None)
    return publish_sync_report(report.groups())
