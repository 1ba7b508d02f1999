"""Step 1: resolve the strategy's contract (DB cache with TTL, else the broker)."""

from __future__ import annotations

import datetime as dt

from prefect import task
from prefect.cache_policies import NO_CACHE

from models.strategy import StrategyDefinition
from services import symbols
from services.broker.types import ContractInfo, ContractSpec
from services.db import session_scope
from services.runtime import get_runtime
from tasks.artifacts import artifact_key, key_values, publish_markdown
from tasks.retry import IO_RETRIES, IO_RETRY_DELAYS, retry_if_transient
from tasks.run_log import step_log
from tasks.timeouts import RESOLVE_TIMEOUT_S


@task(
    name="1 resolve symbol",
    cache_policy=NO_CACHE,
    timeout_seconds=RESOLVE_TIMEOUT_S,
    retries=IO_RETRIES,
    retry_delay_seconds=IO_RETRY_DELAYS,
    retry_condition_fn=retry_if_transient,
)
def resolve_symbol(definition: StrategyDefinition) -> ContractInfo:
    """Return the strategy's contract details; publishes the ``<strategy>-contract`` artifact."""
    runtime = get_runtime()
    ttl = dt.timedelta(seconds=runtime.settings.ib.contract_cache_ttl_s)
    spec = symbols.spec_of(definition)
    # The broker is only connected on a cache miss.
    resolution = symbols.resolve(lambda: session_scope(runtime.database_url), _LazySource(), spec, ttl=ttl)
    contract = resolution.contract
    publish_markdown(
        artifact_key(definition.name, "contract"),
        "## Step 1: contract\n\n"
        + key_values(
            [
                ("symbol", contract.symbol),
                ("conid", contract.conid),
                ("sec type", contract.sec_type),
                ("exchange / primary", f"{contract.exchange} / {contract.primary_exchange}"),
                ("currency", contract.currency),
                ("long name", contract.long_name),
                ("min tick", contract.min_tick),
                ("size increment", contract.size_increment),
                ("time zone", contract.time_zone_id),
                ("source", "cache hit" if resolution.cache_hit else "broker (cache miss, stored)"),
                ("fetched at (UTC)", resolution.fetched_at.isoformat()),
            ]
        ),
        f"Contract details for {definition.symbol}",
    )
    step_log(
        "resolve",
        f"{contract.symbol} conid {contract.conid} on {contract.exchange} (primary {contract.primary_exchange}), "
        f"{contract.sec_type} {contract.currency}, min tick {contract.min_tick}, "
        + ("cache hit" if resolution.cache_hit else "from the broker (cache miss)"),
    )
    return contract


class _LazySource:
    def qualify(self, spec: ContractSpec) -> ContractInfo:
        return get_runtime().broker().qualify(spec)
