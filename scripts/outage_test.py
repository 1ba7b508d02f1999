"""Outage test: a warm worker keeps trading after the broker refused connections for N minutes, without a restart.

    uv run python scripts/outage_test.py --minutes 5

Set-up (throwaway, under a temporary directory): a PostgreSQL cluster (``tests/pg.py``) for the Prefect server,
``prefect server start`` on it, a SQLite trader DB with ``spy-sma-cross`` (offline analyst, dry run), its
deployment (``trader deploy``), the TWS simulator on ``data/samples`` (historical pacing off, as in the load
script), and ONE warm worker in this process (start-up reconcile on; the broker session built by the runtime
with the production reconnect backoff: capped at 60 s, attempts unbounded).

Then: a triggered strategy run before the outage must complete; the simulator refuses connections for
``--minutes`` (drops every socket, stops listening: IB Gateway's daily restart); runs triggered during the
outage fail fast (nothing hangs); once the simulator listens again the session reconnects by itself and a run
triggered after the outage must complete AND reach the broker (its historical request is counted at the
simulator). Exit 0 when all holds, 1 otherwise. ``tests/test_outage.py`` runs the same scenario with the backoff
scaled down and an outage longer than the old give-up horizon.
"""

from __future__ import annotations

import argparse
import contextvars
import logging
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import count
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MARKET_NOW = datetime(2017, 12, 29, 20, 50, tzinfo=UTC)  # 15:50 New York on a session day: the gate lets runs in
POOL = "trader-pool"
DEPLOYMENT = "strategy-run/spy-sma-cross"


@dataclass
class OutageResult:
    outage_s: float
    before: str = ""  # final state of the run before the outage
    during: list[str] = field(default_factory=list)  # states of the runs triggered during the outage, at its end
    during_final: list[str] = field(default_factory=list)  # their final states (task retries may outlast it)
    after: str = ""  # final state of the run after the outage
    hist_before_outage: int = 0  # historical requests counted at the simulator
    hist_after_outage_end: int = 0
    hist_at_end: int = 0
    reconnect_attempts: int = 0  # failed attempts of the session's reconnect loop during the outage
    reconnects: int = 0
    heal_s: float = float("nan")  # from the simulator listening again to the session connected
    sessions_built: int = 0  # broker sessions the runtime built (1: the same session healed, no restart)
    startup_reconcile: str | None = None
    worker_alive: bool = False
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        return [
            f"outage: {self.outage_s:.0f} s of refused connections",
            f"start-up reconcile: {self.startup_reconcile}",
            f"run before the outage: {self.before}",
            f"runs during the outage: {'; '.join(self.during) or 'none'} when it ended;"
            f" final: {'; '.join(self.during_final) or 'none'}",
            f"session: {self.reconnect_attempts} failed reconnect attempts, healed {self.heal_s:.1f} s after the"
            f" simulator listened again; reconnects {self.reconnects}; sessions built {self.sessions_built}",
            f"run after the outage: {self.after}",
            f"historical requests at the simulator: {self.hist_before_outage} before the outage,"
            f" {self.hist_after_outage_end} when it ended, {self.hist_at_end} at the end",
            f"warm worker still running: {self.worker_alive}",
            "RESULT: "
            + ("OK, trading resumed without a restart" if self.ok else "FAILED: " + "; ".join(self.problems)),
        ]


def seed(data_dir: Path) -> Any:
    """A trader DB (SQLite under ``data_dir``) with the prompt templates and spy-sma-cross; return the settings."""
    from services import strategies as store
    from services.db import init_database, session_scope
    from services.prompt_library import seed_templates
    from services.settings import load_settings

    settings = load_settings({"TRADER_DATA_DIR": str(data_dir)})
    init_database(settings)
    with session_scope(settings.database_url()) as session:
        seed_templates(session)
        store.save_definition(session, store.load_strategy_file(REPO / "examples/strategies/spy-sma-cross.yaml"))
    return settings


def _final_state(client: Any, run_id: Any, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        state = client.read_flow_run(run_id).state
        if state is not None and state.is_final():
            return f"{state.name}" + (f" ({state.message})" if state.message and not state.is_completed() else "")
        if time.monotonic() > deadline:
            return f"not final after {timeout_s:.0f} s ({state.name if state else 'no state'})"
        time.sleep(0.25)


def _state_now(client: Any, run_id: Any) -> str:
    state = client.read_flow_run(run_id).state
    if state is None:
        return "no state"
    return f"{state.name}" + (f" ({state.message[:120]})" if state.message and state.is_failed() else "")


def _wait(check: Callable[[], bool], timeout_s: float, poll_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(poll_s)
    return True


def scenario(
    client: Any,
    settings: Any,
    *,
    outage_s: float,
    reconnect: Any | None = None,
    trigger_every_s: float = 60.0,
    run_timeout_s: float = 240.0,
    client_id: int = 81,
) -> OutageResult:
    """Run the outage scenario against the Prefect server ``client`` talks to (bootstrapped here)."""
    from deployments.bootstrap import bootstrap
    from deployments.sync import desired_from_database, sync_deployments
    from deployments.warm_worker import WarmWorker
    from services.broker.ib_adapter import IBBroker
    from services.broker.pacing import HistoricalLimiter
    from services.broker.types import Connectivity
    from services.runtime import Runtime, use_runtime
    from simulator import SimConfig, SimServer

    result = OutageResult(outage_s)
    bootstrap(settings, client)
    sync_deployments(desired_from_database(settings.database_url()), work_pool=POOL, client=client)
    deployment = client.read_deployment_by_name(DEPLOYMENT)

    def trigger() -> Any:
        return client.create_flow_run_from_deployment(deployment.id, tags=["outage-test"]).id

    no_pacing = count(step=3600).__next__  # simulator: every request looks an hour after the previous one
    config = SimConfig(data_dir=REPO / "data" / "samples", now=MARKET_NOW, pacing_time=no_pacing)
    with SimServer.in_thread(config) as sim:
        built: list[IBBroker] = []

        def factory() -> IBBroker:
            overrides: dict[str, Any] = {"port": sim.port, "client_id": client_id}
            if reconnect is not None:
                overrides["reconnect"] = reconnect
            # client-side historical pacing off too (identical requests 15 s apart would only slow the runs)
            unpaced = HistoricalLimiter(10**9, per_contract_max=10**9, identical_gap_s=0.0)
            broker = IBBroker.from_settings(settings.ib, hist_limiter=unpaced, **overrides)
            built.append(broker)
            return broker

        runtime = Runtime(settings, broker_factory=factory, clock=lambda: MARKET_NOW)
        worker = WarmWorker(POOL, concurrency=2, poll_seconds=0.5, reconcile_at_start=True)

        with use_runtime(runtime):
            context = contextvars.copy_context()  # the worker thread sees this PREFECT_API_URL
            thread = threading.Thread(target=context.run, args=(worker.run,), name="warm-worker", daemon=True)
            thread.start()
            try:
                result.before = _final_state(client, trigger(), run_timeout_s)
                result.startup_reconcile = worker.startup_reconcile
                result.hist_before_outage = sim.stats.hist_requests
                session = built[-1] if built else None
                sim.refuse_connections(outage_s)
                started = time.monotonic()
                print(f"{datetime.now(UTC):%H:%M:%S} simulator refuses connections for {outage_s:.0f} s", flush=True)
                if session is not None and not _wait(lambda: session.connectivity is not Connectivity.CONNECTED, 10):
                    result.problems.append("the session never noticed the outage")
                during: list[Any] = []
                next_at = started
                while time.monotonic() < started + outage_s - 1.0:  # one run every trigger_every_s
                    if time.monotonic() >= next_at:
                        during.append(trigger())
                        next_at += trigger_every_s
                    if built:
                        result.reconnect_attempts = max(result.reconnect_attempts, built[-1].reconnect_attempts)
                    time.sleep(0.2)
                _wait(lambda: time.monotonic() >= started + outage_s, outage_s)
                listening = time.monotonic()
                result.hist_after_outage_end = sim.stats.hist_requests
                print(f"{datetime.now(UTC):%H:%M:%S} simulator listens again", flush=True)
                # their states when the simulator listens again (a run still retrying may complete later)
                result.during = [_state_now(client, run_id) for run_id in during]
                heal_limit = (reconnect.max_s if reconnect is not None else 60.0) * 1.5 + 30.0
                if _wait(lambda: runtime.broker_status() is not None and _connected(runtime), heal_limit, 0.1):
                    result.heal_s = time.monotonic() - listening
                else:
                    result.problems.append(f"the session did not reconnect within {heal_limit:.0f} s")
                # the deployment allows one active run (CANCEL_NEW): let the outage's runs end first
                result.during_final = [_final_state(client, run_id, run_timeout_s) for run_id in during]
                result.after = _final_state(client, trigger(), run_timeout_s)
                result.hist_at_end = sim.stats.hist_requests
                status = runtime.broker_status()
                result.reconnects = status.reconnects if status is not None else 0
                result.sessions_built = len(built)
                result.worker_alive = thread.is_alive()
            finally:
                worker.stop()
                thread.join(run_timeout_s)
                runtime.close()
    if not result.before.startswith("Completed"):
        result.problems.append(f"the run before the outage ended {result.before}")
    if not result.after.startswith("Completed"):
        result.problems.append(f"the run after the outage ended {result.after}")
    if result.hist_at_end <= result.hist_after_outage_end:
        result.problems.append("the run after the outage sent no historical request to the simulator")
    if not result.during:
        result.problems.append("no run was triggered during the outage")
    if any(s.startswith("Completed") for s in result.during):
        result.problems.append("a run completed during the outage: the outage was not real")
    if not result.worker_alive:
        result.problems.append("the warm worker stopped")
    return result


def _connected(runtime: Any) -> bool:
    status = runtime.broker_status()
    return status is not None and status.state.value == "connected"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=5.0, help="how long the simulator refuses connections")
    parser.add_argument("--trigger-every", type=float, default=60.0, help="seconds between runs during the outage")
    args = parser.parse_args()
    if args.minutes <= 0:
        parser.error("--minutes must be positive")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("services.broker.ib_adapter").setLevel(logging.INFO)
    logging.getLogger("trader.warm_worker").setLevel(logging.INFO)

    from prefect import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from deployments.local_server import free_port, start_server, stop_server
    from tests.pg import PgCluster

    root = Path(tempfile.mkdtemp(prefix="trader-outage-"))
    with PgCluster() as pg:
        _, prefect_async = pg.create_database("prefect_outage")
        home = root / "prefect"
        server = start_server(home, port=free_port(), database_url=prefect_async, timeout_s=120)
        os.environ |= {"PREFECT_API_URL": server.api_url, "PREFECT_HOME": str(home), "PREFECT_LOGGING_LEVEL": "WARNING"}
        os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
        try:
            settings = seed(root / "trader")
            with temporary_settings({PREFECT_API_URL: server.api_url}), get_client(sync_client=True) as client:
                result = scenario(client, settings, outage_s=args.minutes * 60, trigger_every_s=args.trigger_every)
        finally:
            stop_server(home, timeout_s=30)
    for line in result.lines():
        print(line, flush=True)
    sys.exit(0 if result.ok else 1)


if __name__ == "__main__":
    main()
