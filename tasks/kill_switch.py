"""The kill switch from the Prefect UI: the ``kill-switch`` flow's tasks (engage / release, history artifact)."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from services.orders import kill_switch
from services.orders.monitor import CancelAllReport, cancel_all
from services.runtime import get_runtime
from tasks.artifacts import publish_table

HISTORY_KEY = "kill-switch-history"


@task(name="engage kill switch", cache_policy=NO_CACHE)
def engage(reason: str, changed_by: str) -> list[str]:
    """Engage the kill switch (every unsent order ends); return the keys of the orders it ended."""
    runtime = get_runtime()
    result = kill_switch.engage(runtime.database_url, reason, changed_by=changed_by, now=runtime.clock())
    return list(result.ended)


@task(name="release kill switch", cache_policy=NO_CACHE)
def release(reason: str | None, changed_by: str) -> None:
    runtime = get_runtime()
    kill_switch.release(runtime.database_url, changed_by=changed_by, reason=reason, now=runtime.clock())


@task(name="cancel every working order", cache_policy=NO_CACHE)
def cancel_working(reason: str) -> CancelAllReport:
    """Cancel every working order through the broker (after the switch is engaged)."""
    runtime = get_runtime()
    return cancel_all(runtime.database_url, runtime.broker, f"halt: {reason}")


@task(name="publish kill-switch history", cache_policy=NO_CACHE)
def publish_history() -> None:
    rows = [
        {"at (UTC)": h.at.isoformat(timespec="seconds"), "change": "ENGAGED" if h.engaged else "released",
         "by": h.changed_by or "", "reason": h.reason or "", "unsent orders ended": h.ended_orders}
        for h in kill_switch.history(get_runtime().database_url)
    ]  # fmt: skip
    publish_table(HISTORY_KEY, rows, "kill switch: every engage and release, newest first")
