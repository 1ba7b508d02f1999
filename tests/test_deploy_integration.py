"""Operations end to end: a PostgreSQL-backed Prefect server, `trader bootstrap`, `prefect deploy --all` of
prefect.yaml, `trader deploy` of the example strategies, idempotent triggers, and a real process worker that
picks scheduled (strategy, order monitor) and triggered runs up and finishes them (against the TWS simulator)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prefect import get_client
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterName,
    FlowRunFilter,
    FlowRunFilterDeploymentId,
    FlowRunFilterIdempotencyKey,
)
from sqlalchemy import select

from deployments.approvals import decide, resolve_run
from deployments.bootstrap import bootstrap
from deployments.sync import MANAGED_TAG, desired_from_database, managed_deployments, sync_deployments
from deployments.triggers import idempotency_key, trigger_strategy
from models.enums import OrderStatus
from models.strategy import StrategyDefinition
from models.tables import Signal
from services import strategies as store
from services.db import init_database, session_scope
from services.prompt_library import seed_templates
from services.repositories import orders as orders_repo
from services.repositories import strategies as repo
from services.settings import Settings, load_settings
from simulator import SimConfig, SimServer
from tests.expected_signal import offline_signal
from tests.fixed_clock_engine import job_variables as fixed_clock
from tests.prefect_server import prefect_server

REPO = Path(__file__).resolve().parents[1]
POOL = "trader-pool"
OPS = {
    "order-monitor",
    "order-retry",
    "order-cleanup",
    "reconcile",
    "kill-switch",
    "symbol-cache-refresh",
    "strategy-sync",
    "strategy-run",
}

pytestmark = [pytest.mark.postgres, pytest.mark.prefect, pytest.mark.slow]


@pytest.fixture(scope="module")
def api_url(pg_cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A PostgreSQL-backed server whose scheduler loops every 2 s (so schedules turn into runs quickly)."""
    home = tmp_path_factory.mktemp("prefect-deploy-home")
    fast = {"PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2"}
    with prefect_server(pg_cluster, home, "prefect_deploy", fast) as server:
        yield server.api_url


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    data_dir = tmp_path_factory.mktemp("trader-deploy-data")
    settings = load_settings({"TRADER_DATA_DIR": str(data_dir)})
    init_database(settings)
    with session_scope(settings.database_url()) as session:
        seed_templates(session)
        for path in sorted((REPO / "examples/strategies").glob("*.yaml")):
            store.save_definition(session, store.load_strategy_file(path))
    return settings


@pytest.fixture(scope="module")
def client(api_url: str) -> Iterator[SyncPrefectClient]:
    with get_client(sync_client=True) as sync_client:
        yield sync_client


@pytest.fixture(scope="module")
def bootstrapped(api_url: str, settings: Settings, client: SyncPrefectClient) -> None:
    first = bootstrap(settings, client)
    assert f"work pool {POOL}" in first.created


def test_bootstrap_creates_pool_limits_and_variables_once(
    bootstrapped: None, settings: Settings, client: SyncPrefectClient
) -> None:
    again = bootstrap(settings, client)
    assert again.created == [] and again.updated == []
    assert client.read_work_pool(POOL).type == "process"
    queues = {q.name: q.priority for q in client.read_work_queues(work_pool_name=POOL)}
    assert queues["orders"] == 1 and queues["default"] > 1, queues  # order flows before strategies
    hist = client.read_global_concurrency_limit_by_name("ib-historical")
    assert hist.limit == 6 and hist.slot_decay_per_second == pytest.approx(0.1)
    assert client.read_global_concurrency_limit_by_name("ib-messages").limit == 45
    assert client.read_global_concurrency_limit_by_name("llm-calls").slot_decay_per_second == pytest.approx(1.0)
    variable = client.read_variable_by_name("trader_work_pool")
    assert variable is not None and variable.value == POOL


def test_prefect_deploy_all_from_the_repository_root(
    bootstrapped: None, api_url: str, client: SyncPrefectClient, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env |= {"PREFECT_API_URL": api_url, "PREFECT_HOME": str(tmp_path), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    done = subprocess.run(
        [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    deployments = {d.name: d for d in client.read_deployments(deployment_filter=DeploymentFilter())}
    assert set(deployments) >= OPS
    monitor = deployments["order-monitor"]
    assert [s.schedule.cron for s in monitor.schedules] == ["* * * * *"]  # type: ignore[union-attr]
    assert monitor.global_concurrency_limit is not None and monitor.global_concurrency_limit.limit == 1
    assert monitor.concurrency_options is not None
    assert monitor.concurrency_options.collision_strategy.value == "CANCEL_NEW"
    assert monitor.work_pool_name == POOL and monitor.work_queue_name == "orders"
    assert deployments["strategy-run"].work_queue_name == "default"
    assert monitor.pull_steps == [{"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}]
    cleanup = deployments["order-cleanup"].schedules[0].schedule
    assert (cleanup.cron, cleanup.timezone) == ("0 4 * * 0", "America/New_York")  # type: ignore[union-attr]
    reconcile = deployments["reconcile"]
    assert [s.schedule.cron for s in reconcile.schedules] == ["*/15 * * * *"]  # type: ignore[union-attr]
    assert reconcile.work_queue_name == "orders"
    assert deployments["strategy-run"].schedules == []
    sync = deployments["strategy-sync"]  # hourly, on the orders queue (a safety step: no wait behind strategy runs)
    assert [(s.schedule.cron, s.active) for s in sync.schedules] == [("7 * * * *", True)]  # type: ignore[union-attr]
    assert sync.work_queue_name == "orders" and sync.entrypoint == "deployments/maintenance.py:strategy_sync"


def _runs(client: SyncPrefectClient, deployment_id: Any) -> list[Any]:
    return list(
        client.read_flow_runs(
            flow_run_filter=FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(any_=[deployment_id]))
        )
    )


def test_strategy_deployments_follow_the_database(
    bootstrapped: None, settings: Settings, client: SyncPrefectClient
) -> None:
    url = settings.database_url()
    first = sync_deployments(desired_from_database(url), work_pool=POOL, client=client)
    assert first.created == ["aapl-rsi-reversion", "spy-sma-cross"]
    second = sync_deployments(desired_from_database(url), work_pool=POOL, client=client)
    assert second.unchanged == ["aapl-rsi-reversion", "spy-sma-cross"] and not second.changed

    spy = client.read_deployment_by_name("strategy-run/spy-sma-cross")
    assert spy.parameters == {"strategy": "spy-sma-cross"}
    assert MANAGED_TAG in spy.tags and "symbol:SPY" in spy.tags
    schedule = store.load_strategy_file(REPO / "examples/strategies/spy-sma-cross.yaml").schedule
    assert [(s.schedule.cron, s.schedule.timezone, s.active) for s in spy.schedules] == [  # type: ignore[union-attr]
        (schedule.cron, schedule.timezone, True)
    ]
    assert spy.global_concurrency_limit is not None and spy.global_concurrency_limit.limit == 1

    with session_scope(url) as session:
        repo.set_active(session, "aapl-rsi-reversion", False)
    paused = sync_deployments(desired_from_database(url), work_pool=POOL, client=client)
    assert paused.paused == ["aapl-rsi-reversion"] and paused.unchanged == ["spy-sma-cross"]
    aapl = client.read_deployment_by_name("strategy-run/aapl-rsi-reversion")
    assert [s.active for s in aapl.schedules] == [False] and aapl.paused

    # The scheduler (every 2 s here) creates runs for the active schedule only.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not _runs(client, spy.id):
        time.sleep(1)
    assert _runs(client, spy.id), "the active strategy got no scheduled run"
    assert _runs(client, aapl.id) == [], "a deactivated strategy must get no run"

    with session_scope(url) as session:
        copy = store.load_strategy_file(REPO / "examples/strategies/spy-sma-cross.yaml").model_copy(
            update={"name": "spy-copy"}
        )
        store.save_definition(session, copy)
    assert sync_deployments(desired_from_database(url), work_pool=POOL, client=client).created == ["spy-copy"]
    with session_scope(url) as session:
        repo.delete(session, "spy-copy")
    removed = sync_deployments(desired_from_database(url), work_pool=POOL, client=client)
    assert removed.removed == ["spy-copy"]
    assert sorted(d.name for d in managed_deployments(client)) == ["aapl-rsi-reversion", "spy-sma-cross"]


def test_the_same_key_twice_creates_one_flow_run(bootstrapped: None, client: SyncPrefectClient) -> None:
    names = DeploymentFilter(name=DeploymentFilterName(any_=["spy-sma-cross"]))
    if not client.read_deployments(deployment_filter=names):
        pytest.fail("needs the strategy deployments (test_strategy_deployments_follow_the_database)")
    bar = datetime(2017, 12, 29, 21, 0, tzinfo=UTC)
    first = trigger_strategy("spy-sma-cross", bar)
    second = trigger_strategy("spy-sma-cross", bar)
    other = trigger_strategy("spy-sma-cross", datetime(2017, 12, 28, 21, 0, tzinfo=UTC))
    assert first.id == second.id != other.id
    key = idempotency_key("spy-sma-cross", bar)
    runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(idempotency_key=FlowRunFilterIdempotencyKey(any_=[key])))
    assert [r.id for r in runs] == [first.id]
    for run in (first, other):  # not for the worker below
        client.delete_flow_run(run.id)


def test_a_process_worker_start_queues_a_reconcile_run(bootstrapped: None, client: SyncPrefectClient) -> None:
    """`trader worker` (process mode) queues a run of the reconcile deployment before it polls: a new worker checks
    the broker against the DB at once, not only at the next quarter hour."""
    from deployments.warm_worker import RECONCILE_DEPLOYMENT, queue_reconcile_run

    reconcile = client.read_deployment_by_name(RECONCILE_DEPLOYMENT)
    before = {r.id for r in _runs(client, reconcile.id)}
    queued = queue_reconcile_run(client)
    assert queued is not None and queued not in before
    run = client.read_flow_run(queued)
    assert run.deployment_id == reconcile.id and "worker-start" in run.tags
    assert run.state is not None and run.state.is_scheduled()  # due now, for the first worker to poll
    client.delete_flow_run(queued)  # not for the worker below


def _completed_run(client: SyncPrefectClient, deployment_id: Any, *, auto_scheduled: bool) -> Any | None:
    for run in _runs(client, deployment_id):
        if run.auto_scheduled == auto_scheduled and run.state is not None and run.state.is_completed():
            return run
    return None


@pytest.mark.timeout(900)  # four fresh-Python flow runs on a shared 2-core box: a generous deadline, not a goal
def test_a_process_worker_runs_scheduled_and_triggered_runs(
    bootstrapped: None, api_url: str, settings: Settings, client: SyncPrefectClient, tmp_path: Path
) -> None:
    """A real `prefect worker start --type process` picks up, from the pool, and completes: a strategy run made by
    the scheduler from a near-term (every-minute) strategy schedule, an `order-monitor` run scheduled by
    prefect.yaml's cron, and a triggered strategy run. Meanwhile a run of a strategy with ``approval: always``
    pauses in its own process with its order held, and an approval through the resume API (what ``trader approve``
    sends) resumes it: the order reaches the simulator."""
    monitor = {d.name: d for d in client.read_deployments(deployment_filter=DeploymentFilter())}.get("order-monitor")
    if monitor is None:
        pytest.fail("needs the prefect.yaml deployments (test_prefect_deploy_all_from_the_repository_root)")
    url = settings.database_url()
    with session_scope(url) as session:
        minute = store.load_strategy_file(REPO / "examples/strategies/spy-sma-cross.yaml").model_copy(
            update={"name": "spy-minute"}
        )
        minute = minute.model_copy(update={"schedule": minute.schedule.model_copy(update={"cron": "* * * * *"})})
        store.save_definition(session, minute)
        held = minute.model_dump() | {
            "name": "spy-held",
            "lookback": "301 D",
            "schedule": minute.schedule.model_dump() | {"cron": "0 0 1 1 *"},
        }
        held["approval"] = {"rule": "always", "timeout_minutes": 10}  # distinct lookback: IB's identical-request rule
        store.save_definition(session, StrategyDefinition.model_validate(held))
    created = sync_deployments(desired_from_database(url), work_pool=POOL, client=client).created
    assert sorted(created) == ["spy-held", "spy-minute"]
    scheduled_id = client.read_deployment_by_name("strategy-run/spy-minute").id
    aapl_id = client.read_deployment_by_name("strategy-run/aapl-rsi-reversion").id

    # The two runs this test asserts on decide at fixed market times (tests/fixed_clock_engine.py), not the wall
    # clock: Wednesday 2017-12-27 16:05 New York (after the close: the daily strategy runs) and Saturday
    # 2017-12-30 (market closed: a "Skipped" run).
    session_now = datetime(2017, 12, 27, 21, 5, tzinfo=UTC)
    saturday = datetime(2017, 12, 30, 17, 0, tzinfo=UTC)
    spy_id = client.read_deployment_by_name("strategy-run/spy-sma-cross").id
    run = trigger_strategy("spy-sma-cross", datetime(2017, 12, 27, 21, 0, tzinfo=UTC))
    client.update_flow_run(run.id, job_variables=fixed_clock(session_now))  # before any worker can claim it
    held_run = trigger_strategy("spy-held", datetime(2017, 12, 27, 20, 50, tzinfo=UTC))
    # 15:50 New York (market open: the gate passes and the order is held); not a dry run: the approved order goes
    # to the simulator; its own clientId, as the paused run stays connected
    to_sim = fixed_clock(datetime(2017, 12, 27, 20, 50, tzinfo=UTC))
    to_sim["env"] |= {"TRADER_TRADING__DRY_RUN": "false", "TRADER_IB__CLIENT_ID": "43"}
    client.update_flow_run(held_run.id, job_variables=to_sim)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "TRADER_"))}
    with SimServer.in_thread(SimConfig(data_dir=REPO / "data" / "samples", now=session_now)) as sim:
        env |= {
            "PREFECT_API_URL": api_url,
            "PREFECT_HOME": str(tmp_path / "worker-home"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "PREFECT_WORKER_PREFETCH_SECONDS": "2",
            "TRADER_DATA_DIR": str(settings.data_dir),
            "TRADER_IB__PORT": str(sim.port),
            "TRADER_IB__CLIENT_ID": "41",
        }
        log = (tmp_path / "worker.log").open("w")
        worker = subprocess.Popen(
            [sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL, "--type", "process"],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            # the next minute's scheduled run plus a fresh Python per run: allow up to eight minutes
            deadline = time.monotonic() + 480
            state = weekend_state = scheduled = monitored = weekend = held_state = None
            paused_seen = approved = False
            while time.monotonic() < deadline:
                state = client.read_flow_run(run.id).state
                held_state = client.read_flow_run(held_run.id).state
                if not approved and held_state is not None and held_state.is_paused():
                    paused_seen = True
                    _, waiting_run = resolve_run(url, str(held_run.id))  # its order waits, linked to this run
                    decide(client, waiting_run, "approve", reason="process worker test", approver="tester")
                    approved = True
                if weekend is None and state is not None and state.is_final():
                    # only now: the deployment's concurrency limit (1, CANCEL_NEW) would cancel a second run
                    weekend = client.create_flow_run_from_deployment(
                        spy_id, parameters={"strategy": "spy-sma-cross"}, job_variables=fixed_clock(saturday)
                    )
                weekend_state = client.read_flow_run(weekend.id).state if weekend is not None else None
                scheduled = scheduled or _completed_run(client, scheduled_id, auto_scheduled=True)
                monitored = monitored or _completed_run(client, monitor.id, auto_scheduled=True)
                finals = [s is not None and s.is_final() for s in (state, weekend_state, held_state)]
                if all(finals) and scheduled and monitored:
                    break
                time.sleep(2)
            with session_scope(url) as session:
                definition = store.get_definition(session, "spy-sma-cross")
                held_orders = [
                    (o.idempotency_key, o.status, dict(o.approval or {}))
                    for o in orders_repo.list_orders(session)
                    if o.flow_run_id == str(held_run.id) and o.parent_id is None
                ]
            at_sim = [o for key, _, _ in held_orders for o in sim.state.orders_by_ref(key)]
            expected = offline_signal(settings, definition, sim.port, session_now)  # same bars, without the flow
        finally:
            worker.terminate()
            try:
                worker.wait(20)
            except subprocess.TimeoutExpired:
                worker.kill()
            log.close()
            with session_scope(url) as session:
                repo.delete(session, "spy-minute")
                repo.delete(session, "spy-held")
            sync_deployments(desired_from_database(url), work_pool=POOL, client=client)
    output = (tmp_path / "worker.log").read_text()[-4000:]
    assert state is not None and state.is_final(), f"triggered run not finished: {state}\n{output}"
    assert state.is_completed() and state.name == "Completed", f"{state}\n{output}"
    assert weekend_state is not None and weekend_state.is_completed(), f"{weekend_state}\n{output}"
    assert (weekend_state.name, weekend_state.message) == ("Skipped", "skipped: market closed")
    assert scheduled is not None, f"no scheduled run of the every-minute strategy completed\n{output}"
    assert monitored is not None, f"no scheduled order-monitor run completed\n{output}"
    assert _runs(client, aapl_id) == [], "the deactivated strategy must get no run"
    assert paused_seen and held_state is not None and held_state.is_completed(), f"{held_state}\n{output}"
    [(_, held_status, held_doc)] = held_orders
    assert (held_doc["state"], held_doc["by"], held_doc["reason"]) == ("approved", "tester", "process worker test")
    assert held_status in (OrderStatus.SUBMITTED, OrderStatus.FILLED) and len(at_sim) == 1, f"{held_status}\n{output}"
    print(f"worker: triggered {state.name} ({state.message}); scheduled {scheduled.name} {scheduled.state.name}; "
          f"order-monitor {monitored.name} {monitored.state.name}")  # fmt: skip
    with session_scope(settings.database_url()) as session:
        signal = session.scalars(select(Signal).where(Signal.flow_run_id == str(run.id))).one()
        skipped_signals = session.scalars(select(Signal).where(Signal.flow_run_id == str(weekend.id))).all()
    assert (signal.action, signal.reason) == (expected.action, expected.reason)
    assert skipped_signals == []  # a skipped run decides nothing
