"""``trader worker``: run the work pool's flow runs (a Prefect process worker, or ``--warm``: in this process)."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from cli.common import cli_errors, console, fail, settings


@cli_errors
def worker(
    warm: Annotated[
        bool, typer.Option("--warm", help="Run flow runs inside this process (warm imports; for volume).")
    ] = False,
    pool: Annotated[str | None, typer.Option(help="Work pool (default: TRADER_PREFECT__WORK_POOL).")] = None,
    concurrency: Annotated[int, typer.Option(help="Flow runs at the same time (--warm).", min=1)] = 8,
    poll_seconds: Annotated[float, typer.Option(help="Seconds between polls (--warm).", min=0.1)] = 1.0,
) -> None:
    """Execute scheduled runs of the pool: `--warm` in this process, else `prefect worker start --type process`.

    Both start with a reconcile: `--warm` runs it to its end before claiming runs; the process worker queues a run
    of the `reconcile` deployment (orders queue, highest priority) before it starts polling."""
    from deployments.bootstrap import server_reachable

    if not server_reachable():
        raise fail("error: no Prefect server: set PREFECT_API_URL (e.g. `trader server start` prints it)")
    name = pool or settings().prefect.work_pool
    if not warm:
        from prefect import get_client

        from deployments.warm_worker import queue_reconcile_run

        with get_client(sync_client=True) as client:
            queued = queue_reconcile_run(client)
        console.print(f"reconcile run {queued} queued" if queued else "reconcile not deployed: no start-up run")
        argv = [sys.executable, "-m", "prefect", "worker", "start", "--pool", name, "--type", "process"]
        console.print(" ".join(argv[1:]), markup=False)
        os.execv(sys.executable, argv)
    from deployments.warm_worker import serve_warm
    from services.runtime import get_runtime

    console.print(f"warm worker on pool {name}: up to {concurrency} runs at a time, polling every {poll_seconds} s")
    try:
        stats = serve_warm(name, concurrency=concurrency, poll_seconds=poll_seconds)
    finally:
        get_runtime().close()
    console.print(f"stopped: {stats.claimed} claimed, {stats.completed} completed, {stats.failed} failed", markup=False)
