"""Start a strategy run through its deployment (a worker runs it), at most once per strategy and bar.

``trigger_strategy`` calls ``run_deployment`` with ``idempotency_key=f"{strategy}:{bar_time}"``: the server
inserts flow runs with ``ON CONFLICT DO NOTHING`` on ``(flow_id, idempotency_key)`` and returns the existing
run, so a second trigger for the same strategy and bar (a retried webhook, a double click, two schedulers)
creates no second run. Keys are scoped per flow (``strategy-run``), and strategy names are unique, so the
strategy name plus the bar time is enough. Without ``bar_time`` the key uses the current minute (UTC).

The per-strategy deployment ``strategy-run/<name>`` (``trader deploy``) is used when it exists; otherwise
the unscheduled ``strategy-run/strategy-run`` template from prefect.yaml with ``{"strategy": name}``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound

from deployments.sync import FLOW_NAME
from services.errors import ConfigurationError

TEMPLATE_DEPLOYMENT: Final = f"{FLOW_NAME}/{FLOW_NAME}"


def idempotency_key(strategy: str, bar_time: datetime | None = None) -> str:
    when = (bar_time or datetime.now(UTC).replace(second=0, microsecond=0)).astimezone(UTC)
    return f"{strategy}:{when.isoformat()}"


def trigger_strategy(strategy: str, bar_time: datetime | None = None, timeout: float = 0) -> FlowRun:
    """Create (or find) the flow run of ``strategy`` for ``bar_time``; wait up to ``timeout`` s (0: return at once)."""
    key = idempotency_key(strategy, bar_time)
    for name in (f"{FLOW_NAME}/{strategy}", TEMPLATE_DEPLOYMENT):
        try:
            run: FlowRun = run_deployment(  # type: ignore[assignment]
                name,
                parameters={"strategy": strategy},
                timeout=timeout,
                idempotency_key=key,
                as_subflow=False,
                tags=[f"strategy:{strategy}", "triggered"],
            )
            return run
        except ObjectNotFound:
            continue
    raise ConfigurationError(
        f"no deployment for {strategy!r}: run `trader deploy` (per-strategy) or `prefect deploy --all` (template)"
    )
