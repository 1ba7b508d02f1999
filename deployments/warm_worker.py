"""A warm worker: poll a work pool's scheduled flow runs and run them IN this process, up to N at a time.

Why: a process worker (``prefect worker start --type process``) starts a fresh Python per flow run and
re-imports Prefect, pandas, TA-Lib, Plotly and the chart renderer each time (about 19 runs/min on 2 cores,
see docs/operations.md). Here the imports, the broker session, the DB engine and the chart renderer stay
warm, and each scheduled run still is its own Prefect flow run (own id, states, task runs, artifacts, logs):

1. ``POST /work_pools/{pool}/get_scheduled_flow_runs`` (``scheduled_before=now``, ``limit`` = free slots)
   every ``poll_seconds``: the endpoint Prefect's workers use; it also marks the pool's queues as polled;
2. claim a run by proposing ``Pending`` (Prefect's workers do the same: the server refuses a run another
   worker already claimed, and a deployment concurrency limit with ``CANCEL_NEW`` cancels it here);
3. load the deployment's flow once per entrypoint (``flows/strategy.py:strategy_run`` is imported as the
   package module ``flows.strategy`` when the file lies under ``sys.path``), then
   ``prefect.flow_engine.run_flow(flow, flow_run=..., return_type="state")`` in a thread pool of
   ``concurrency`` threads: the engine proposes Running, keeps the heartbeat and the deployment
   concurrency lease, and records the final state.

Start-up reconcile (``reconcile_at_start``, on for ``trader worker --warm``): before claiming anything the worker
creates a run of the ``reconcile`` deployment, claims it and runs it to its end in this thread, so a broker
that changed while no worker ran (fills, orders placed by hand) is compared with the DB first; a failure sets the
flag that makes the risk gate refuse new orders until a clean run (the deployment also runs every 15 minutes).
Without that deployment (``prefect deploy --all`` not run yet) the flow runs in-process without one.

Paused runs (a strategy's order awaiting approval, ``tasks/approval.py``) hold no slot: ``pause_flow_run`` blocks
its thread until the decision or the approval timeout, and the worker counts only runs that are not paused against
``concurrency`` (it asks the server which of its runs are Paused when its slots are full). Up to ``max_paused``
more threads exist for them; beyond that the worker waits. A resumed run takes a slot again (for a moment there can
be more than ``concurrency`` runs working). A crash of the worker loses its paused runs' waits: their orders stay
unsent (held orders are never sent without a decision) and end at their signal's expiry.

Limits of this worker (use the process worker where they matter): no per-run infrastructure or
``job_variables``, no cancellation of a running flow from the UI (a cancel request is recorded, the run
finishes), and a crash of the process takes every run in it down (Prefect's zombie detection marks them
Crashed after the missed heartbeats). All runs share the process runtime (``services.runtime``): one IB
client id, one LLM store.
"""

from __future__ import annotations

import contextvars
import importlib
import logging
import socket
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from httpx import HTTPStatusError
from prefect import get_client
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.objects import FlowRun, State
from prefect.client.schemas.responses import WorkerFlowRunResponse
from prefect.exceptions import Abort, ObjectNotFound
from prefect.flows import Flow
from prefect.states import Pending

from services.errors import ConfigurationError, InputError

log = logging.getLogger("trader.warm_worker")

HEARTBEAT_SECONDS = 30.0
RECONCILE_DEPLOYMENT = "reconcile/reconcile"


@dataclass
class WorkerStats:
    """What the worker did so far (read by the load script and the tests)."""

    claimed: int = 0
    completed: int = 0
    failed: int = 0
    skipped_claims: int = 0  # runs another worker claimed first, or the server cancelled (CANCEL_NEW)
    paused_seen: int = 0  # most runs seen paused (waiting for input) at once, holding no slot
    lateness_s: list[float] = field(default_factory=list)  # claim time - scheduled time, per claimed run
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)


def queue_reconcile_run(client: SyncPrefectClient) -> UUID | None:
    """Create a run of the ``reconcile`` deployment now (for a process worker starting: the orders queue has the
    highest priority, so it is taken first); None when the deployment does not exist."""
    try:
        deployment = client.read_deployment_by_name(RECONCILE_DEPLOYMENT)
    except ObjectNotFound:
        return None
    return client.create_flow_run_from_deployment(deployment.id, tags=["worker-start"]).id


def _flow_from_entrypoint(entrypoint: str, workdir: Path) -> Flow[..., Any]:
    """Import ``path/to/file.py:name`` (relative to ``workdir``) as a package module when possible."""
    if ":" not in entrypoint:
        raise InputError("warm worker", f"entrypoint {entrypoint!r} is not of the form 'path/file.py:flow'")
    file_part, name = entrypoint.rsplit(":", 1)
    path = Path(file_part)
    if not path.is_absolute():
        path = workdir / path
    path = path.resolve()
    module = None
    if path.suffix == ".py":
        for entry in sys.path:
            base = Path(entry or ".").resolve()
            if path.is_relative_to(base):
                parts = path.relative_to(base).with_suffix("").parts
                if all(part.isidentifier() for part in parts):
                    module = importlib.import_module(".".join(parts))
                    break
    if module is None:
        from prefect.flows import load_flow_from_entrypoint

        return load_flow_from_entrypoint(f"{path}:{name}", use_placeholder_flow=False)
    obj = getattr(module, name, None)
    if not isinstance(obj, Flow):
        raise InputError("warm worker", f"{entrypoint}: {name!r} is not a Prefect flow")
    return obj


def _workdir(pull_steps: list[dict[str, Any]] | None) -> Path:
    for step in pull_steps or []:
        args = step.get("prefect.deployments.steps.set_working_directory")
        if isinstance(args, dict) and args.get("directory"):
            return Path(str(args["directory"]))
    return Path.cwd()


class WarmWorker:
    """Run a work pool's scheduled flow runs inside this process (see the module docstring)."""

    def __init__(
        self,
        pool: str,
        *,
        concurrency: int = 8,
        poll_seconds: float = 1.0,
        name: str | None = None,
        work_queues: list[str] | None = None,
        reconcile_at_start: bool = False,
        max_paused: int = 64,
    ) -> None:
        if concurrency < 1:
            raise InputError("--concurrency", f"must be at least 1, got {concurrency}")
        if poll_seconds <= 0:
            raise InputError("--poll-seconds", f"must be positive, got {poll_seconds}")
        self.pool = pool
        self.concurrency = concurrency
        self.poll_seconds = poll_seconds
        self.name = name or f"warm-{socket.gethostname()}-{id(self):x}"
        self.work_queues = work_queues
        self.reconcile_at_start = reconcile_at_start
        self.max_paused = max_paused
        self.startup_reconcile: str | None = None  # the start-up reconcile's final state, e.g. "Completed"
        self.stats = WorkerStats()
        self._flows: dict[tuple[str, str], Flow[..., Any]] = {}
        self._deployments: dict[UUID, tuple[str, Path]] = {}
        self._running: dict[UUID, Future[None]] = {}
        self._stop = threading.Event()
        self._load_lock = threading.Lock()

    def stop(self) -> None:
        self._stop.set()

    def run(self, *, max_seconds: float | None = None, until: Callable[[WorkerStats], bool] | None = None) -> None:
        """Poll and run until :meth:`stop`, ``max_seconds`` or ``until(stats)``; then wait for runs in flight."""
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        with (
            get_client(sync_client=True) as client,
            ThreadPoolExecutor(self.concurrency + self.max_paused, "warm-run") as pool,
        ):
            self._check_pool(client)
            if self.reconcile_at_start:
                self.startup_reconcile = self._reconcile_once(client)
            last_beat = 0.0
            while not self._stop.is_set():
                if time.monotonic() - last_beat >= HEARTBEAT_SECONDS:
                    self._heartbeat(client)
                    last_beat = time.monotonic()
                self._reap()
                free = min(
                    self.concurrency - self._working(client), self.concurrency + self.max_paused - len(self._running)
                )
                if free > 0:
                    self._poll_once(client, pool, free)
                if until is not None and until(self.stats):
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    break
                self._stop.wait(self.poll_seconds)
            for future in list(self._running.values()):
                future.result()
            self._reap()

    def _reconcile_once(self, client: SyncPrefectClient) -> str:
        """Run one reconcile to its end before anything is claimed; return its final state's name."""
        state: State[Any] | None
        try:
            deployment = client.read_deployment_by_name(RECONCILE_DEPLOYMENT)
        except ObjectNotFound:
            from flows.orders import reconcile_flow

            log.warning("deployment %s not found (prefect deploy --all): reconciling in-process", RECONCILE_DEPLOYMENT)
            state = reconcile_flow(return_state=True)
        else:
            created = client.create_flow_run_from_deployment(deployment.id, tags=["worker-start"])
            claimed = self._claim(client, created)
            if claimed is None:  # another worker took it, or a reconcile is active (CANCEL_NEW)
                log.info("start-up reconcile run %s not claimed here", created.id)
                return "not claimed"
            self._execute(claimed)
            state = client.read_flow_run(created.id).state
        name = (state.name or state.type.value) if state is not None else "unknown"
        log.info("start-up reconcile: %s%s", name, f" ({state.message})" if state is not None and state.message else "")
        return name

    def _missing_pool(self) -> ConfigurationError:
        return ConfigurationError(f"work pool {self.pool!r} not found on the Prefect server: run `trader bootstrap`")

    def _check_pool(self, client: SyncPrefectClient) -> None:
        try:
            client.read_work_pool(self.pool)
        except ObjectNotFound:
            raise self._missing_pool() from None

    def _heartbeat(self, client: SyncPrefectClient) -> None:
        try:
            client.send_worker_heartbeat(self.pool, self.name, heartbeat_interval_seconds=HEARTBEAT_SECONDS)
        except Exception as exc:  # the heartbeat only feeds the UI's worker list
            log.warning("worker heartbeat failed: %s", exc)

    def _reap(self) -> None:
        for run_id, future in list(self._running.items()):
            if future.done():
                del self._running[run_id]

    def _working(self, client: SyncPrefectClient) -> int:
        """Runs in flight that hold a slot: all but the Paused ones (waiting for input in their thread)."""
        if len(self._running) < self.concurrency:
            return len(self._running)  # free slots anyway: no need to ask the server
        from prefect.client.schemas.filters import (
            FlowRunFilter,
            FlowRunFilterId,
            FlowRunFilterState,
            FlowRunFilterStateType,
        )
        from prefect.client.schemas.objects import StateType

        try:
            paused = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    id=FlowRunFilterId(any_=list(self._running)),
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED])),
                )
            )
        except Exception as exc:  # the server is away: count every run (claim nothing more)
            log.warning("could not read paused runs: %s", exc)
            return len(self._running)
        self.stats.paused_seen = max(self.stats.paused_seen, len(paused))
        return len(self._running) - len(paused)

    def _poll_once(self, client: SyncPrefectClient, pool: ThreadPoolExecutor, free: int) -> None:
        for response in self._due_runs(client, limit=free):  # the server's order: queue priority, then time
            flow_run = response.flow_run
            if flow_run.id in self._running:
                continue
            claimed = self._claim(client, flow_run)
            if claimed is None:
                continue
            # Each run gets a copy of the caller's context (Prefect settings such as a temporary API URL).
            self._running[flow_run.id] = pool.submit(contextvars.copy_context().run, self._execute, claimed)

    def _due_runs(self, client: SyncPrefectClient, *, limit: int) -> list[WorkerFlowRunResponse]:
        """The pool's due runs by queue priority, then oldest first; at most ``limit`` (the free slots).

        Same endpoint as ``client.get_scheduled_flow_runs_for_work_pool``, plus the server's ``limit`` (that
        client method does not pass it): with a backlog of hundreds of late runs, a poll every second would
        otherwise make the server load and serialize up to 200 runs each time to start a handful.
        """
        body: dict[str, Any] = {"scheduled_before": datetime.now(UTC).isoformat(), "limit": limit}
        if self.work_queues is not None:
            body["work_queue_names"] = list(self.work_queues)
        try:
            response = client.request(
                "POST", "/work_pools/{name}/get_scheduled_flow_runs", path_params={"name": self.pool}, json=body
            )
        except HTTPStatusError as exc:
            if exc.response.status_code == 404:
                raise self._missing_pool() from None
            raise
        return WorkerFlowRunResponse.model_validate_list(response.json())

    def _claim(self, client: SyncPrefectClient, flow_run: FlowRun) -> FlowRun | None:
        from prefect.utilities.engine import propose_state_sync

        try:
            state = propose_state_sync(client, Pending(), flow_run_id=flow_run.id)
        except Abort:
            self.stats.add(skipped_claims=1)
            return None
        if not state.is_pending():
            self.stats.add(skipped_claims=1)
            return None
        scheduled = flow_run.expected_start_time or flow_run.next_scheduled_start_time
        if scheduled is not None:
            with self.stats._lock:
                self.stats.lateness_s.append((datetime.now(UTC) - scheduled).total_seconds())
        self.stats.add(claimed=1)
        return client.read_flow_run(flow_run.id)

    def _flow_for(self, client: SyncPrefectClient, flow_run: FlowRun) -> Flow[..., Any]:
        if flow_run.deployment_id is None:
            raise ConfigurationError(f"flow run {flow_run.id} has no deployment; the warm worker runs deployments")
        with self._load_lock:
            if flow_run.deployment_id not in self._deployments:
                deployment = client.read_deployment(flow_run.deployment_id)
                if not deployment.entrypoint:
                    raise ConfigurationError(f"deployment {deployment.name!r} has no entrypoint")
                self._deployments[flow_run.deployment_id] = (deployment.entrypoint, _workdir(deployment.pull_steps))
            entrypoint, workdir = self._deployments[flow_run.deployment_id]
            key = (entrypoint, str(workdir))
            if key not in self._flows:
                self._flows[key] = _flow_from_entrypoint(entrypoint, workdir)
            return self._flows[key]

    def _execute(self, flow_run: FlowRun) -> None:
        from prefect.flow_engine import run_flow
        from prefect.logging.loggers import flow_run_logger
        from prefect.states import Crashed

        run_logger = flow_run_logger(flow_run=flow_run)
        with get_client(sync_client=True) as client:
            try:
                flow = self._flow_for(client, flow_run)
            except Exception as exc:
                run_logger.error("the warm worker could not load the flow: %s", exc, exc_info=True)
                client.set_flow_run_state(flow_run.id, Crashed(message=f"flow could not be loaded: {exc}"), force=True)
                self.stats.add(failed=1)
                return
        try:
            state = run_flow(flow, flow_run=flow_run, return_type="state", error_logger=run_logger.logger)
        except BaseException as exc:  # the engine records the state; keep the worker alive
            run_logger.error("flow run ended with %s", type(exc).__name__)
            self.stats.add(failed=1)
            if not isinstance(exc, Exception):
                raise
            return
        ok = getattr(state, "is_completed", lambda: False)()
        self.stats.add(completed=1 if ok else 0, failed=0 if ok else 1)


def serve_warm(pool: str, *, concurrency: int, poll_seconds: float, reconcile_at_start: bool = True) -> WorkerStats:
    """``trader worker --warm``: reconcile once, then run until interrupted (Ctrl-C / SIGTERM stop polling; runs in
    flight finish)."""
    import signal

    worker = WarmWorker(pool, concurrency=concurrency, poll_seconds=poll_seconds, reconcile_at_start=reconcile_at_start)

    def _stop(_signum: int, _frame: object) -> None:
        worker.stop()

    signal.signal(signal.SIGTERM, _stop)
    try:
        worker.run()
    except KeyboardInterrupt:
        worker.stop()
    return worker.stats
