"""Prefect-side setup for the trader (``trader bootstrap``; safe to run twice).

Creates or corrects, on the server at ``PREFECT_API_URL``:

* the **work pool** (``TRADER_PREFECT__WORK_POOL``, default ``trader-pool``) of type ``process`` with Prefect's
  default process job template (what ``prefect work-pool create --type process`` does), with a work queue
  ``orders`` at priority 1 (the order flows start before a backlog of strategy runs in ``default``);
* the **global concurrency / rate limits** the tasks take strictly (``tasks.market_gate.limited``):

  | name | limit (burst) | slot decay / s | meaning |
  |---|---|---|---|
  | ``ib-messages`` | ``TRADER_IB__MAX_MESSAGES_PER_S`` (45) | same | IB's 50 msg/s API cap, across all workers |
  | ``ib-historical`` | 6 | ``TRADER_IB__HIST_REQUESTS_PER_10MIN`` / 600 | IB: 60 requests / 10 min, bursts of 6 |
  | ``llm-calls`` | 4 | 1.0 | at most 4 concurrent starts, 60 LLM calls / min |

* the **variables** (non-secret, visible in the UI): ``trader_work_pool``, ``trader_trading_mode``,
  ``trader_dry_run``, ``trader_ib_reset_window``;
* the **notification automations** (``trader: <kind>``) and their block (:mod:`deployments.notifications`).

Secrets are NOT variables: keep the OpenAI key and the IB account in Prefect Secret blocks (``openai-api-key``,
``ib-account``) or ``TRADER_*`` environment variables of the worker, never in deployment parameters, and set
``PREFECT_SERVER_ENCRYPTION_KEY`` on the server (see docs/operations.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from prefect import get_client
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.actions import (
    GlobalConcurrencyLimitCreate,
    GlobalConcurrencyLimitUpdate,
    VariableCreate,
    VariableUpdate,
    WorkPoolCreate,
)
from prefect.exceptions import ObjectNotFound

from deployments.notifications import sync_notifications
from services.settings import Settings
from tasks.market_gate import IB_HISTORICAL, IB_MESSAGES, LLM_CALLS, RESET_END, RESET_START

WORK_POOL_TYPE: Final = "process"
ORDERS_QUEUE: Final = "orders"


@dataclass(frozen=True)
class Limit:
    name: str
    limit: int
    slot_decay_per_second: float


@dataclass
class BootstrapReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        groups = (("created", self.created), ("updated", self.updated), ("unchanged", self.unchanged))
        lines = [f"{label}: {', '.join(names) if names else '-'}" for label, names in groups]
        return lines + ([f"deleted: {', '.join(self.deleted)}"] if self.deleted else [])


def limits_for(settings: Settings) -> list[Limit]:
    ib = settings.ib
    return [
        Limit(IB_MESSAGES, ib.max_messages_per_s, float(ib.max_messages_per_s)),
        Limit(IB_HISTORICAL, 6, round(ib.hist_requests_per_10min / 600.0, 4)),
        Limit(LLM_CALLS, 4, 1.0),
    ]


def variables_for(settings: Settings) -> dict[str, Any]:
    return {
        "trader_work_pool": settings.prefect.work_pool,
        "trader_trading_mode": settings.trading.mode.value,
        "trader_dry_run": settings.trading.dry_run,
        "trader_ib_reset_window": f"{RESET_START:%H:%M}-{RESET_END:%H:%M} America/New_York",
    }


def _work_pool(client: SyncPrefectClient, name: str, report: BootstrapReport) -> None:
    label = f"work pool {name}"
    try:
        pool = client.read_work_pool(name)
    except ObjectNotFound:
        from prefect.workers.process import ProcessWorker

        template = ProcessWorker.get_default_base_job_template()
        client.create_work_pool(WorkPoolCreate(name=name, type=WORK_POOL_TYPE, base_job_template=template))
        report.created.append(label)
        return
    if pool.type != WORK_POOL_TYPE:
        from services.errors import ConfigurationError

        raise ConfigurationError(f"{label} exists with type {pool.type!r}, expected {WORK_POOL_TYPE!r}")
    report.unchanged.append(label)


def _orders_queue(client: SyncPrefectClient, pool: str, report: BootstrapReport) -> None:
    """The pool's ``orders`` queue at priority 1, ahead of ``default`` (the strategies).

    Workers take due runs by queue priority first (Prefect's default), so under a strategy backlog the order
    flows (monitor, retry, cleanup, reconcile: ``work_queue_name: orders`` in prefect.yaml) still start at once.
    """
    label = f"work queue {pool}/{ORDERS_QUEUE}"
    try:
        queue = client.read_work_queue_by_name(ORDERS_QUEUE, work_pool_name=pool)
    except ObjectNotFound:
        client.create_work_queue(
            ORDERS_QUEUE, description="order flows, ahead of the strategies", priority=1, work_pool_name=pool
        )
        report.created.append(label)
    else:
        if queue.priority == 1:
            report.unchanged.append(label)
        else:  # e.g. `prefect deploy` created it first, behind `default`
            client.update_work_queue(queue.id, priority=1)
            report.updated.append(label)
    # Creating a queue at priority 1 moves the others down; updating one does not: a tie would lose the order.
    queues = client.read_work_queues(work_pool_name=pool)
    lowest = max((q.priority or 1) for q in queues)
    for other in queues:
        if other.name != ORDERS_QUEUE and (other.priority or 1) <= 1:
            lowest += 1
            client.update_work_queue(other.id, priority=lowest)
            report.updated.append(f"work queue {pool}/{other.name}")


def _limit(client: SyncPrefectClient, want: Limit, report: BootstrapReport) -> None:
    label = f"limit {want.name}"
    try:
        have = client.read_global_concurrency_limit_by_name(want.name)
    except ObjectNotFound:
        client.create_global_concurrency_limit(
            GlobalConcurrencyLimitCreate(
                name=want.name, limit=want.limit, slot_decay_per_second=want.slot_decay_per_second, active=True
            )
        )
        report.created.append(label)
        return
    if (have.limit, round(have.slot_decay_per_second or 0.0, 4), have.active) == (
        want.limit,
        round(want.slot_decay_per_second, 4),
        True,
    ):
        report.unchanged.append(label)
        return
    client.update_global_concurrency_limit(
        want.name,
        GlobalConcurrencyLimitUpdate(limit=want.limit, slot_decay_per_second=want.slot_decay_per_second, active=True),
    )
    report.updated.append(label)


def _variable(client: SyncPrefectClient, name: str, value: Any, report: BootstrapReport) -> None:
    label = f"variable {name}"
    have = client.read_variable_by_name(name)
    if have is None:
        client.create_variable(VariableCreate(name=name, value=value))
        report.created.append(label)
    elif have.value != value:
        client.update_variable(VariableUpdate(name=name, value=value))
        report.updated.append(label)
    else:
        report.unchanged.append(label)


def bootstrap(settings: Settings, client: SyncPrefectClient | None = None) -> BootstrapReport:
    """Create or correct the work pool, the global limits, the variables and the notification automations
    (:mod:`deployments.notifications`); return what was done."""
    if client is None:
        with get_client(sync_client=True) as own:
            return bootstrap(settings, own)
    report = BootstrapReport()
    _work_pool(client, settings.prefect.work_pool, report)
    _orders_queue(client, settings.prefect.work_pool, report)
    for limit in limits_for(settings):
        _limit(client, limit, report)
    for name, value in variables_for(settings).items():
        _variable(client, name, value, report)
    sync_notifications(client, settings.notifications, report)
    return report


def server_reachable(timeout_s: float = 3.0) -> bool:
    """True when PREFECT_API_URL is set and its /health answers."""
    import httpx
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        return False
    try:
        return httpx.get(f"{url.rstrip('/')}/health", timeout=timeout_s).status_code == 200
    except httpx.HTTPError:
        return False
