"""Load test: N strategies on a one-minute schedule for M minutes, run by the warm worker.

    uv run python scripts/load_test.py --strategies 50 --minutes 3        (default: 200 x 10)

Set-up (all throwaway, under a temporary directory): a PostgreSQL cluster (``tests/pg.py``) holding the Prefect
server's database and the trader's database; ``prefect server start`` on it; the TWS simulator on ``data/samples``
with historical pacing switched OFF, in the simulator and in the broker client (IB allows 60 historical requests
per 10 minutes; this measures orchestration capacity, not IB's quota); N copies of ``spy-sma-cross`` with cron
``* * * * *`` (signals only unless ``--orders``); ``trader bootstrap`` (``ib-historical`` widened to N requests
per 30 s: the strict limit is taken but does not throttle); ``trader deploy``; the ``order-monitor`` deployment
(every minute, as in prefect.yaml); then ONE warm worker in this process (``--concurrency`` runs at a time, the
offline analyst, the market clock fixed at a session's 15:50 New York so the market gate lets the runs through).

Printed for the runs scheduled inside the measured window (M whole minutes from the first minute boundary after
the worker started): scheduled vs completed, lateness p50/p95/max (start time - scheduled time), run time, and
the order monitor's runs (lateness, run time).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._cpu import CpuMeter, postmaster_pid, thread_id  # noqa: E402

MARKET_NOW = datetime(2017, 12, 29, 20, 50, tzinfo=UTC)  # 15:50 New York on a session day
POOL = "trader-pool"


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _fmt(values: list[float]) -> str:
    if not values:
        return "n/a"
    return f"p50 {_pct(values, 0.5):.1f} s, p95 {_pct(values, 0.95):.1f} s, max {max(values):.1f} s"


def _scheduler_env(minutes: int) -> dict[str, str]:
    """Server settings: the default 60 s scheduler loop, runs for the test's minutes only (the default pre-creates
    up to 100 runs per deployment); the first pass creates every run of the window (see _wait_for_runs)."""
    horizon = f"PT{(minutes + 3) * 60}S"
    return {
        "PREFECT_SERVER_SERVICES_SCHEDULER_MAX_RUNS": str(minutes + 3),
        "PREFECT_SERVER_SERVICES_SCHEDULER_MIN_RUNS": "1",
        "PREFECT_SERVER_SERVICES_SCHEDULER_MIN_SCHEDULED_TIME": horizon,
        "PREFECT_SERVER_SERVICES_SCHEDULER_MAX_SCHEDULED_TIME": horizon,
    }


def _seed(database_url: str, data_dir: Path, strategies: int, orders: bool) -> Any:
    from models.strategy import StrategyDefinition
    from services import strategies as store
    from services.db import init_database, session_scope
    from services.prompt_library import seed_templates
    from services.settings import load_settings

    settings = load_settings({"TRADER_DATA_DIR": str(data_dir), "TRADER_DATABASE__URL": database_url})
    init_database(settings)
    spy = store.load_strategy_file(REPO / "examples/strategies/spy-sma-cross.yaml")
    doc = spy.model_dump()
    with session_scope(settings.database_url()) as session:
        seed_templates(session)
        for i in range(strategies):
            copy = doc | {"name": f"load-{i:03d}", "schedule": doc["schedule"] | {"cron": "* * * * *"}}
            if not orders:  # min confidence 1: the signal never becomes an order (signal-only load)
                copy["rules"] = copy["rules"] | {"min_confidence": "1"}
            store.save_definition(session, StrategyDefinition.model_validate(copy))
    return settings


def _warm_contract_cache(settings: Any, sim_port: int) -> None:
    """Store SPY's contract first: concurrent first runs of one symbol race on the contract cache's insert."""
    from services import strategies as store
    from services import symbols
    from services.broker.ib_adapter import IBBroker
    from services.db import session_scope
    from services.runtime import Runtime

    runtime = Runtime(settings, broker_factory=lambda: IBBroker.from_settings(settings.ib, port=sim_port, client_id=90))
    spy = store.load_strategy_file(REPO / "examples/strategies/spy-sma-cross.yaml")
    try:
        spec = symbols.spec_of(spy)
        symbols.resolve(lambda: session_scope(settings.database_url()), runtime.broker(), spec, ttl=timedelta(1))
    finally:
        runtime.close()


def _deploy(client: Any, settings: Any, strategies: int) -> Any:
    from prefect.client.schemas.actions import DeploymentScheduleCreate, GlobalConcurrencyLimitUpdate
    from prefect.client.schemas.schedules import CronSchedule

    from deployments.bootstrap import bootstrap
    from deployments.sync import APP_DIR, _pull_steps, desired_from_database, sync_deployments
    from tasks.market_gate import IB_HISTORICAL

    bootstrap(settings, client)
    client.update_global_concurrency_limit(
        IB_HISTORICAL,
        GlobalConcurrencyLimitUpdate(limit=strategies, slot_decay_per_second=strategies / 30.0, active=True),
    )
    report = sync_deployments(desired_from_database(settings.database_url()), work_pool=POOL, client=client)
    print(f"deployments: {len(report.created)} strategy deployments created")
    _wait_for_runs(client, strategies)
    flow_id = client.create_flow_from_name("order-monitor")
    return client.create_deployment(
        flow_id=flow_id,
        name="order-monitor",
        entrypoint="flows/orders.py:order_monitor",
        path=str(APP_DIR),
        pull_steps=_pull_steps(APP_DIR),
        work_pool_name=POOL,
        work_queue_name="orders",  # as in prefect.yaml: priority 1, ahead of the strategies
        schedules=[DeploymentScheduleCreate(schedule=CronSchedule(cron="* * * * *", timezone="UTC"), active=True)],
        concurrency_limit=1,
    )


def _wait_for_runs(client: Any, strategies: int, timeout: float = 600.0) -> None:
    """Wait for the scheduler's first passes: every strategy deployment has its next run (200 deployments once took
    over 180 s on this box)."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    scheduled = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        deployments = set()
        for offset in range(0, strategies * 2, 200):  # the API returns at most 200 runs per call
            page = client.read_flow_runs(
                flow_run_filter=scheduled, sort=FlowRunSort.EXPECTED_START_TIME_ASC, limit=200, offset=offset
            )
            deployments |= {r.deployment_id for r in page}
        if len(deployments) >= strategies:
            return
        time.sleep(2)
    raise SystemExit(f"the scheduler did not create runs for {strategies} deployments in {timeout:.0f} s")


def _step_times(client: Any, run_ids: list[Any]) -> str:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    by_step: dict[str, list[float]] = {}
    for start in range(0, len(run_ids), 25):  # the API returns at most 200 task runs per call
        chunk = run_ids[start : start + 25]
        for task_run in client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=chunk)), limit=200):
            step = task_run.name.rsplit("-", 1)[0]
            by_step.setdefault(step, []).append(task_run.total_run_time.total_seconds())
    return ", ".join(f"{step} {_pct(v, 0.5):.2f}/{_pct(v, 0.95):.2f}" for step, v in sorted(by_step.items()))


def _report(client: Any, window: tuple[datetime, datetime], monitor_id: Any, started: float) -> None:
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterDeploymentId,
        FlowRunFilterExpectedStartTime,
        FlowRunFilterTags,
    )

    in_window = FlowRunFilterExpectedStartTime(after_=window[0], before_=window[1] - timedelta(seconds=1))
    runs: list[Any] = []
    offset = 0
    while True:
        page = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(expected_start_time=in_window, tags=FlowRunFilterTags(all_=["strategy"])),
            limit=200,
            offset=offset,
        )
        runs.extend(page)
        if len(page) < 200:
            break
        offset += 200
    completed = [r for r in runs if r.state is not None and r.state.is_completed()]
    failed = [r for r in runs if r.state is not None and r.state.is_final() and not r.state.is_completed()]
    late = [(r.start_time - r.expected_start_time).total_seconds() for r in runs if r.start_time]
    durations = [r.total_run_time.total_seconds() for r in completed]
    minutes = (window[1] - window[0]).total_seconds() / 60
    print(f"\nwindow {window[0]:%H:%M}-{window[1]:%H:%M} UTC ({minutes:.0f} min)")
    print(f"strategy runs scheduled {len(runs)}, completed {len(completed)}, failed {len(failed)}, "
          f"not finished {len(runs) - len(completed) - len(failed)}")  # fmt: skip
    if completed:  # over the time the runs actually took: from the window's start to the last run's end
        busy = (max(r.end_time for r in completed if r.end_time) - window[0]).total_seconds() / 60
        print(f"throughput {len(completed) / max(busy, minutes):.0f} completed runs/min "
              f"({len(completed)} runs finished by {busy:.1f} min after the window's start)")  # fmt: skip
    print(f"lateness (start - scheduled): {_fmt(late)}")
    done_after = [(r.end_time - r.expected_start_time).total_seconds() for r in completed if r.end_time]
    print(f"signal ready (end - scheduled): {_fmt(done_after)}")
    print(f"run time: {_fmt(durations)}")
    print("step time p50 / p95 (s):", _step_times(client, [r.id for r in completed]))
    of_monitor = FlowRunFilterDeploymentId(any_=[monitor_id])
    monitor = client.read_flow_runs(
        flow_run_filter=FlowRunFilter(expected_start_time=in_window, deployment_id=of_monitor), limit=200
    )
    m_done = [r for r in monitor if r.state is not None and r.state.is_completed()]
    m_late = [(r.start_time - r.expected_start_time).total_seconds() for r in monitor if r.start_time]
    print(f"order monitor: scheduled {len(monitor)}, completed {len(m_done)}; lateness {_fmt(m_late)}; "
          f"run time {_fmt([r.total_run_time.total_seconds() for r in m_done])}")  # fmt: skip
    if failed:
        print(
            "failed runs, first states:",
            sorted({f"{r.state.name}: {(r.state.message or '')[:120]}" for r in failed})[:5],
        )
    print(f"total wall time {time.monotonic() - started:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--strategies", type=int, default=200)
    parser.add_argument("--minutes", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=16, help="warm worker: runs at the same time")
    parser.add_argument(
        "--orders", action="store_true", help="let BUY/SELL signals place (dry-run) orders; default: signals only"
    )
    parser.add_argument("--drain-seconds", type=int, default=120, help="after the window, let late runs finish")
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra Prefect server setting, e.g. PREFECT_SERVER_SERVICES_TRIGGERS_ENABLED=false (repeatable)",
    )
    args = parser.parse_args()
    if args.strategies < 1 or args.minutes < 1 or args.concurrency < 1:
        parser.error("--strategies, --minutes and --concurrency must be at least 1")
    bad = [item for item in args.server_env if "=" not in item or not item.startswith("PREFECT_")]
    if bad:
        parser.error(f"--server-env takes PREFECT_...=VALUE, got {bad}")
    server_env = dict(item.split("=", 1) for item in args.server_env)
    started = time.monotonic()

    from deployments.local_server import free_port, start_server, stop_server
    from tests.pg import PgCluster

    root = Path(tempfile.mkdtemp(prefix="trader-load-"))
    with PgCluster() as pg:
        _, prefect_async = pg.create_database("prefect_load")
        trader_url, _ = pg.create_database("trader_load")
        home = root / "prefect"
        server = start_server(
            home,
            port=free_port(),
            database_url=prefect_async,
            timeout_s=120,
            extra_env=_scheduler_env(args.minutes) | server_env,
        )
        os.environ |= {"PREFECT_API_URL": server.api_url, "PREFECT_HOME": str(home), "PREFECT_LOGGING_LEVEL": "WARNING"}
        os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
        try:
            _run(args, root, trader_url, started, server.pid or 0, postmaster_pid(pg.data_dir))
        finally:
            stop_server(home, timeout_s=30)


def _run(
    args: argparse.Namespace, root: Path, trader_url: str, started: float, server_pid: int, postmaster: int
) -> None:
    from itertools import count

    from prefect import get_client

    from deployments.warm_worker import WarmWorker
    from services.broker.ib_adapter import IBBroker
    from services.broker.pacing import HistoricalLimiter
    from services.runtime import Runtime, use_runtime
    from simulator import SimConfig, SimServer

    settings = _seed(trader_url, root / "trader", args.strategies, args.orders)
    no_pacing = count(step=3600).__next__  # every request looks an hour after the previous one
    with get_client(sync_client=True) as client:
        monitor = _deploy(client, settings, args.strategies)
        config = SimConfig(data_dir=REPO / "data" / "samples", now=MARKET_NOW, pacing_time=no_pacing)
        with SimServer.in_thread(config) as sim:
            _warm_contract_cache(settings, sim.port)
            # client-side IB pacing off as well (60 requests / 10 min, identical requests 15 s apart)
            unpaced = HistoricalLimiter(10**9, per_contract_max=10**9, identical_gap_s=0.0)
            runtime = Runtime(
                settings,
                broker_factory=lambda: IBBroker.from_settings(
                    settings.ib, port=sim.port, client_id=91, hist_limiter=unpaced
                ),
                clock=lambda: MARKET_NOW,
            )
            worker = WarmWorker(POOL, concurrency=args.concurrency, poll_seconds=1.0)
            now = datetime.now(UTC)
            first = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
            window = (first, first + timedelta(minutes=args.minutes))
            stop_at = (window[1] - now).total_seconds() + args.drain_seconds
            if args.server_env:
                print("server settings:", ", ".join(args.server_env))
            print(f"{args.strategies} strategies x {args.minutes} min, warm worker concurrency {args.concurrency}; "
                  f"measuring runs scheduled {window[0]:%H:%M:%S}-{window[1]:%H:%M:%S} UTC")  # fmt: skip
            sim_thread = thread_id("tws-simulator")
            meter = CpuMeter(server_pid, postmaster, {"simulator": sim_thread} if sim_thread else None)
            with use_runtime(runtime):
                thread = threading.Thread(target=worker.run, kwargs={"max_seconds": stop_at}, daemon=True)
                thread.start()
                time.sleep(max(0.0, (window[0] - datetime.now(UTC)).total_seconds()))
                meter.start()
                finished_before = worker.stats.completed + worker.stats.failed
                while thread.is_alive():
                    thread.join(60)
                    s = worker.stats
                    print(f"  {datetime.now(UTC):%H:%M:%S} claimed {s.claimed}, completed {s.completed}, "
                          f"failed {s.failed}, claims lost {s.skipped_claims}", flush=True)  # fmt: skip
                cpu = meter.stop()
                metered_runs = worker.stats.completed + worker.stats.failed - finished_before
                runtime.close()
            print(f"sim: {sim.stats.hist_requests} historical requests")
        _report(client, window, monitor, started)
        _report_cpu(cpu, metered_runs, meter.available)


def _report_cpu(cpu: dict[str, float], runs: int, available: bool) -> None:
    """CPU seconds per finished run, by component, from the window's start to the worker's stop."""
    if not available or runs <= 0:
        print("cpu per run: n/a (needs /proc and at least one finished run)")
        return
    ours = {k: v for k, v in cpu.items() if k not in ("other", "simulator")}
    per_run = sum(ours.values()) / runs
    parts = ", ".join(f"{k} {v / runs:.2f}" for k, v in sorted(ours.items(), key=lambda kv: -kv[1]))
    sim, other = cpu.get("simulator", 0.0), cpu.get("other", 0.0)
    print(f"cpu per finished run ({runs} runs): {per_run:.2f} s = {parts}; not counted: the simulator "
          f"(IB's side) {sim:.0f} s, other processes on the box {other:.0f} s in total")  # fmt: skip
    cores = os.cpu_count() or 1
    print(f"capacity at this cost: about {60 * cores / per_run:.0f} runs/min on {cores} cores if nothing else ran")


if __name__ == "__main__":
    main()
