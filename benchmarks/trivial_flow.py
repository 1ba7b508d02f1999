"""The baseline of ``bench_cost.py``: Prefect's own cost of a flow run with six tasks that do nothing."""

from __future__ import annotations

from prefect import flow, task


@task(name="noop")
def noop(i: int) -> int:
    return i


@flow(name="trivial-six-tasks")
def trivial_six_tasks() -> int:
    """Six task runs in a row, as many as the strategy flow's steps; no artifacts, no I/O."""
    return sum(noop(i) for i in range(6))
