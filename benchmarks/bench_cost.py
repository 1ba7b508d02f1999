"""Cost per run: CPU seconds of the strategy flow vs Prefect's trivial six-task flow, by process (issue 17).

    uv run python benchmarks/bench_cost.py [--runs 30] [--concurrency 4] [--rounds 2]

One throwaway PostgreSQL cluster holds the Prefect server's database and the trader's; one ``prefect server
start`` on it; ONE warm worker in this process (``deployments/warm_worker.py``) runs both deployments from the
same work pool: ``trivial-six-tasks`` (``benchmarks/trivial_flow.py``: six tasks that do nothing) and
``--runs`` strategy deployments ``strategy-run/bench-cost-NNN`` (copies of ``spy-sma-cross``, signals only, the
offline analyst, the market clock at a session's 15:50 New York, the TWS simulator in a thread with IB's historical
pacing off as in ``scripts/load_test.py``; one run of each per batch: a strategy runs one at a time).

Each round queues ``--runs`` trivial runs, lets the worker finish them, then ``--runs`` strategy runs, and reads
the CPU of each process tree from /proc before and after each batch (``benchmarks/_cpu.py``): the Prefect server,
PostgreSQL, the worker process, Chromium (the chart renderer). The simulator's thread (IB's side) and the rest of
the box are printed apart and are not counted. CPU seconds, unlike wall times, do not depend much on what else
runs on the machine. Printed: CPU per run by process for both flows, the ratio strategy / trivial (goal <= 2.0)
and the capacity it implies: runs per minute on this machine's cores if nothing else ran. Then the idle rate (CPU
per second of each process with no run in flight, measured for ``--idle-seconds`` before the rounds) and both flows'
cost without it: the server's loops run whatever the runs do, and a batch that takes longer (on a loaded box, the
strategy batch) is otherwise charged more of them.
"""

from __future__ import annotations

import argparse
import contextvars
import os
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from itertools import count
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._cpu import CHROMIUM, OTHER, POSTGRES, SERVER, WORKER, CpuMeter, postmaster_pid, thread_id  # noqa: E402

POOL = "trader-pool"
STRATEGY = "bench-cost"
MARKET_NOW = datetime(2017, 12, 29, 20, 50, tzinfo=UTC)  # 15:50 New York on a session day
SIMULATOR = "simulator"
COUNTED = (SERVER, WORKER, CHROMIUM, POSTGRES)


def _seed(database_url: str, data_dir: Path, strategies: int) -> Any:
    from models.strategy import StrategyDefinition
    from services import strategies as store
    from services.db import init_database, session_scope
    from services.prompt_library import seed_templates
    from services.settings import load_settings

    settings = load_settings({"TRADER_DATA_DIR": str(data_dir), "TRADER_DATABASE__URL": database_url})
    init_database(settings)
    doc = store.load_strategy_file(REPO / "examples/strategies/spy-sma-cross.yaml").model_dump()
    doc["rules"] |= {"min_confidence": "1"}  # signals only: never an order
    with session_scope(settings.database_url()) as session:
        seed_templates(session)
        for i in range(strategies):
            store.save_definition(session, StrategyDefinition.model_validate(doc | {"name": f"{STRATEGY}-{i:03d}"}))
    return settings


def _deploy(client: Any, settings: Any, strategies: int) -> dict[str, list[Any]]:
    """Bootstrap (pool, limits), the strategy deployment (trader's sync) and the trivial flow's deployment."""
    from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate

    from deployments.bootstrap import bootstrap
    from deployments.sync import APP_DIR, _pull_steps, desired_from_database, sync_deployments
    from tasks.market_gate import IB_HISTORICAL

    bootstrap(settings, client)
    client.update_global_concurrency_limit(  # IB's quota is not what is measured (as in scripts/load_test.py)
        IB_HISTORICAL, GlobalConcurrencyLimitUpdate(limit=1000, slot_decay_per_second=1000.0, active=True)
    )
    sync_deployments(desired_from_database(settings.database_url()), work_pool=POOL, client=client)
    trivial = client.create_deployment(
        flow_id=client.create_flow_from_name("trivial-six-tasks"),
        name="bench",
        entrypoint="benchmarks/trivial_flow.py:trivial_six_tasks",
        path=str(APP_DIR),
        pull_steps=_pull_steps(APP_DIR),
        work_pool_name=POOL,
    )
    names = [f"strategy-run/{STRATEGY}-{i:03d}" for i in range(strategies)]
    return {"trivial": [trivial] * strategies, "strategy": [client.read_deployment_by_name(n).id for n in names]}


def _batch(client: Any, worker: Any, deployment_ids: list[Any], meter: CpuMeter) -> tuple[dict[str, float], float]:
    """Queue one run of each deployment now, let the worker finish them; CPU by component and the wall time.

    One run per strategy deployment: a strategy's deployment runs one at a time (concurrency 1, CANCEL_NEW)."""
    runs = len(deployment_ids)
    done_before = worker.stats.completed + worker.stats.failed
    failed_before = worker.stats.failed
    meter.start()
    started = time.monotonic()
    for deployment_id in deployment_ids:
        client.create_flow_run_from_deployment(deployment_id)
    context = contextvars.copy_context()
    target = done_before + runs
    thread = threading.Thread(
        target=context.run,
        args=(worker.run,),
        kwargs={"max_seconds": 60 + 20 * runs, "until": lambda s: s.completed + s.failed >= target},
    )
    thread.start()
    thread.join()
    wall = time.monotonic() - started
    cpu = meter.stop()
    if worker.stats.failed > failed_before or worker.stats.completed + worker.stats.failed < target:
        states = sorted(str(r.state.name if r.state else None) for r in client.read_flow_runs(limit=200))
        raise SystemExit(f"{worker.stats} ({states}): a run failed or did not finish, the figures are void")
    return cpu, wall


def _add(into: dict[str, float], part: dict[str, float]) -> None:
    for name, value in part.items():
        into[name] = into.get(name, 0.0) + value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30, help="runs of each flow per round (= strategies)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of (trivial batch, strategy batch)")
    parser.add_argument("--concurrency", type=int, default=4, help="warm worker: runs at the same time")
    parser.add_argument("--idle-seconds", type=float, default=20.0, help="idle window for the background rate")
    args = parser.parse_args()
    if min(args.runs, args.rounds, args.concurrency) < 1:
        parser.error("--runs, --rounds and --concurrency must be at least 1")

    from deployments.local_server import free_port, start_server, stop_server
    from tests.pg import PgCluster

    root = Path(tempfile.mkdtemp(prefix="bench-cost-"))
    with PgCluster() as pg:
        _, prefect_async = pg.create_database("prefect_cost")
        trader_url, _ = pg.create_database("trader_cost")
        home = root / "prefect"
        server = start_server(home, port=free_port(), database_url=prefect_async, timeout_s=120)
        os.environ |= {"PREFECT_API_URL": server.api_url, "PREFECT_HOME": str(home), "PREFECT_LOGGING_LEVEL": "ERROR"}
        try:
            _run(args, root, trader_url, server.pid or 0, postmaster_pid(pg.data_dir))
        finally:
            stop_server(home, timeout_s=30)


def _run(args: argparse.Namespace, root: Path, trader_url: str, server_pid: int, postmaster: int) -> None:
    from prefect import get_client

    from deployments.warm_worker import WarmWorker
    from scripts.load_test import _warm_contract_cache
    from services.broker.ib_adapter import IBBroker
    from services.broker.pacing import HistoricalLimiter
    from services.runtime import Runtime, use_runtime
    from simulator import SimConfig, SimServer

    settings = _seed(trader_url, root / "trader", args.runs)
    no_pacing = count(step=3600).__next__  # every request looks an hour after the previous one
    unpaced = HistoricalLimiter(10**9, per_contract_max=10**9, identical_gap_s=0.0)
    config = SimConfig(data_dir=REPO / "data" / "samples", now=MARKET_NOW, pacing_time=no_pacing)
    totals: dict[str, dict[str, float]] = {"trivial": {}, "strategy": {}}
    walls: dict[str, float] = {"trivial": 0.0, "strategy": 0.0}
    with get_client(sync_client=True) as client, SimServer.in_thread(config) as sim:
        deployments = _deploy(client, settings, args.runs)
        _warm_contract_cache(settings, sim.port)
        runtime = Runtime(
            settings,
            broker_factory=lambda: IBBroker.from_settings(
                settings.ib, port=sim.port, client_id=92, hist_limiter=unpaced
            ),
            clock=lambda: MARKET_NOW,
        )
        sim_thread = thread_id("tws-simulator")
        meter = CpuMeter(server_pid, postmaster, {SIMULATOR: sim_thread} if sim_thread else None)
        worker = WarmWorker(POOL, concurrency=args.concurrency, poll_seconds=1.0)
        with use_runtime(runtime):
            for kind in ("trivial", "strategy"):  # warm-up: imports, Chromium, connections, GE's context
                _batch(client, worker, deployments[kind][:2], meter)
            idle = _idle_rate(meter, args.idle_seconds)
            for _ in range(args.rounds):
                for kind in ("trivial", "strategy"):
                    cpu, wall = _batch(client, worker, deployments[kind], meter)
                    _add(totals[kind], cpu)
                    walls[kind] += wall
            runtime.close()
    _print(totals, walls, args.runs * args.rounds, args.concurrency)
    _print_idle(totals, walls, idle, args.runs * args.rounds)


def _idle_rate(meter: CpuMeter, seconds: float) -> dict[str, float]:
    """CPU seconds per wall second of each process while no run is in flight (the server's own loops)."""
    meter.start()
    time.sleep(seconds)
    return {name: value / seconds for name, value in meter.stop().items()}


def _print_idle(
    totals: dict[str, dict[str, float]], walls: dict[str, float], idle: dict[str, float], runs: int
) -> None:
    """The same figures without the idle rate times each batch's wall time (a slower batch is charged more of the
    server's background loops; on a loaded box the strategy batch's wall time grows most)."""
    rate = sum(idle.get(name, 0.0) for name in COUNTED)
    net = {
        kind: sum(totals[kind].get(name, 0.0) for name in COUNTED) / runs - rate * walls[kind] / runs for kind in totals
    }
    parts = ", ".join(f"{name} {idle.get(name, 0.0):.3f}" for name in COUNTED)
    print(f"idle (no run in flight): {rate:.3f} CPU s per wall second ({parts})")
    ratio = net["strategy"] / net["trivial"] if net["trivial"] > 0 else float("nan")
    print(f"net of the idle rate x wall time: trivial {net['trivial']:.3f}, strategy {net['strategy']:.3f} s per run, "
          f"ratio {ratio:.2f}")  # fmt: skip


def _print(totals: dict[str, dict[str, float]], walls: dict[str, float], runs: int, concurrency: int) -> None:
    print(f"\ncost per run: {runs} runs of each flow, warm worker concurrency {concurrency}, PostgreSQL-backed server")
    print(f"{'CPU s per run':36s} {'trivial':>9s} {'strategy':>9s}")
    per_run = {kind: {name: value / runs for name, value in cpu.items()} for kind, cpu in totals.items()}
    for name in COUNTED:
        print(f"{name:36s} {per_run['trivial'].get(name, 0.0):9.3f} {per_run['strategy'].get(name, 0.0):9.3f}")
    counted = {kind: sum(per_run[kind].get(name, 0.0) for name in COUNTED) for kind in per_run}
    print(f"{'total (counted)':36s} {counted['trivial']:9.3f} {counted['strategy']:9.3f}")
    for name in (SIMULATOR, OTHER):
        label = "simulator (IB's side)" if name == SIMULATOR else "other processes (box)"
        print(f"{label + ', not counted':36s} {per_run['trivial'].get(name, 0.0):9.3f} "
              f"{per_run['strategy'].get(name, 0.0):9.3f}")  # fmt: skip
    print(f"{'wall s per run':36s} {walls['trivial'] / runs:9.3f} {walls['strategy'] / runs:9.3f}")
    ratio = counted["strategy"] / counted["trivial"] if counted["trivial"] else float("nan")
    print(f"ratio strategy / trivial = {ratio:.2f} (goal <= 2.0: {'met' if ratio <= 2.0 else 'MISSED'})")
    cores = os.cpu_count() or 1
    print(f"capacity at this cost: about {60 * cores / counted['strategy']:.0f} strategy runs/min on {cores} cores "
          f"({60 * cores / counted['trivial']:.0f} trivial runs/min) if nothing else ran")  # fmt: skip


if __name__ == "__main__":
    main()
