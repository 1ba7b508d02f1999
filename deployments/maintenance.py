"""Maintenance flows run by deployments (prefect.yaml): the contract-details cache refresh."""

from __future__ import annotations

from prefect import flow

from services import symbols
from services.db import session_scope
from services.runtime import get_runtime


@flow(name="symbol-cache-refresh")
def symbol_cache_refresh() -> list[str]:
    """Re-qualify every cached contract with the broker and store the fresh details; return their symbols."""
    runtime = get_runtime()
    fresh = symbols.refresh_all(lambda: session_scope(runtime.database_url), runtime.broker(), now=runtime.clock())
    return [contract.symbol for contract in fresh]
