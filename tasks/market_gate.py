"""The run gate: a strategy run that must not trade ends early, in a Completed state.

0. **Lifecycle** (checked before anything else, by :func:`skip_state`): a strategy deleted or deactivated since
   its run was scheduled (or triggered by hand) -> ``"Skipped: strategy deleted"`` / ``"Skipped: strategy
   inactive"``. Pausing the deployment stops new scheduled runs; this check stops the ones already made.

The market-hours rules (``market_gate`` is pure and lives in ``services.market_hours``; "now" is the runtime
clock, i.e. the simulator's market time in the demo):

1. **IB reset window** (checked first, every day): 23:45-00:45 America/New_York. IB restarts its servers
   around midnight US/Eastern ("daily server reset", North America); requests in that hour fail or hang, so
   nothing is attempted. -> ``"skipped: IB reset window"``.
2. **Exchange session** from ``exchange_calendars`` (``services.calendar``); the calendar is chosen from the
   contract's ``primary_exchange`` (else ``exchange``), then the currency (see :func:`calendar_for`).
   -> ``"skipped: market closed"`` when:
   * the exchange-local date is not a session (weekend, holiday, e.g. 2017-12-25), or
   * daily (or longer) bars: now is before the session's open (the day's bar is final after the close, so
     a daily strategy scheduled at 16:05 ET runs), unless ``schedule.extended_hours``;
   * intraday bars: now is outside [open, close + ``CLOSE_GRACE``] (the grace lets the last bar of the
     day be evaluated), unless ``schedule.extended_hours``, which allows the extended window
     (04:00-20:00 exchange time for US stocks; the whole session day elsewhere).
   * 24/5 instruments (``CASH``: IDEALPRO forex) are gated by the weekend only (calendar ``24/5``).

3. **Order flows** (order-monitor, order-retry, order-cleanup, reconcile: :func:`order_flow_skip_state`): the
   same reset window (rule 1, no exchange session: orders are synced whenever IB answers), then, for the flows
   that talk to the broker, a broker session that is not connected -> ``"skipped: broker disconnected ..."``
   (the session heals in the background; the next scheduled run catches up).

A skipped run places nothing and fetches no bars: the flow returns :func:`skip_state`'s state right after
loading the definition. The state is ``Completed`` with name ``"Skipped"`` and the reason as its message, so
the UI shows ``Skipped`` (a COMPLETED type) and the reason.

Concurrency: :func:`limited` wraps Prefect's global concurrency limits strictly (a missing limit is an error,
never an unthrottled call). The limits are created by ``trader bootstrap`` (``deployments/bootstrap.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Final

from prefect.client.schemas.objects import State
from prefect.states import Completed

from models.strategy import StrategyDefinition
from services.errors import BrokerConnectionError, InputError
from services.market_hours import (
    CLOSE_GRACE,
    RESET_END,
    RESET_START,
    SKIP_CLOSED,
    SKIP_RESET,
    calendar_for,
    in_reset_window,
    market_gate,
)

__all__ = [
    "CLOSE_GRACE",
    "RESET_END",
    "RESET_START",
    "SKIPPED_STATE_NAME",
    "SKIP_CLOSED",
    "SKIP_DELETED",
    "SKIP_DISCONNECTED",
    "SKIP_INACTIVE",
    "SKIP_RESET",
    "calendar_for",
    "in_reset_window",
    "lifecycle_gate",
    "limited",
    "market_gate",
    "order_flow_gate",
    "order_flow_skip_state",
    "skip_state",
    "skipped",
]

SKIP_DISCONNECTED: Final = "skipped: broker disconnected"
SKIP_INACTIVE: Final = "Skipped: strategy inactive"
SKIP_DELETED: Final = "Skipped: strategy deleted"
SKIPPED_STATE_NAME: Final = "Skipped"


def lifecycle_gate(definition: StrategyDefinition | None) -> str | None:
    """Return why a run of this stored strategy (``None``: there is none, it was deleted) must not run."""
    if definition is None:
        return SKIP_DELETED
    if not definition.active:
        return SKIP_INACTIVE
    return None


def skip_state(definition: StrategyDefinition | None) -> State | None:
    """The final state for a run the gate stops (``Completed`` named "Skipped"), or ``None`` to go on.

    ``definition`` is the stored strategy as loaded at the start of the run, ``None`` when it no longer exists.
    The lifecycle is checked first, then the market hours. "Now" is the runtime clock
    (``get_runtime().clock()``): wall time in production, the simulator's market time in the demo and the tests.
    """
    from services.runtime import get_runtime

    reason = lifecycle_gate(definition)
    if reason is None and definition is not None:
        reason = market_gate(definition, get_runtime().clock())
    return None if reason is None else skipped(reason)


def skipped(reason: str) -> State:
    """The final state of a run a gate stops: ``Completed`` named "Skipped", the reason as its message."""
    return Completed(name=SKIPPED_STATE_NAME, message=reason)


def order_flow_gate(now: datetime, connectivity: Callable[[], str] | None) -> str | None:
    """Why an order flow run at ``now`` must be skipped (rule 3), or ``None``. ``connectivity`` returns the
    broker session's state (``"connected"`` to go on) or raises ``BrokerConnectionError``; None: no broker."""
    if now.tzinfo is None:
        raise InputError("order gate", f"naive datetime {now.isoformat()}: pass a timezone-aware datetime")
    if in_reset_window(now):
        return SKIP_RESET
    if connectivity is None:
        return None
    try:
        state = connectivity()
    except BrokerConnectionError as exc:
        return f"{SKIP_DISCONNECTED}: {exc}"
    return None if state == "connected" else f"{SKIP_DISCONNECTED} ({state})"


def order_flow_skip_state(*, broker: bool = True) -> State | None:
    """The final state for an order flow run the gate stops, or ``None`` to go on (see rule 3). With ``broker``
    the runtime's session is built / rebuilt here (:meth:`services.runtime.Runtime.broker`)."""
    from services.runtime import get_runtime

    runtime = get_runtime()
    reason = order_flow_gate(runtime.clock(), (lambda: runtime.broker().connectivity.value) if broker else None)
    return None if reason is None else skipped(reason)


# Global concurrency limits (created by deployments/bootstrap.py). Names are part of the contract.
IB_MESSAGES: Final = "ib-messages"
IB_HISTORICAL: Final = "ib-historical"
LLM_CALLS: Final = "llm-calls"


BOOTSTRAP_HINT: Final = "run `trader bootstrap` against this Prefect server to create the global limits"


def prefect_api_configured() -> bool:
    """True when ``PREFECT_API_URL`` names a server (the global limits live there)."""
    from prefect.settings import PREFECT_API_URL

    return bool(PREFECT_API_URL.value())


@contextmanager
def limited(name: str, occupy: int = 1, *, timeout_seconds: float | None = 300.0) -> Iterator[None]:
    """Hold ``occupy`` slots of the global rate limit ``name`` (created by ``trader bootstrap``), strictly.

    * ``PREFECT_API_URL`` set (a worker, the demo, the integration tests): ``rate_limit(..., strict=True)``;
      a missing limit raises :class:`~services.errors.ConfigurationError` naming ``trader bootstrap`` (never
      an unthrottled call); waiting longer than ``timeout_seconds`` raises Prefect's
      ``AcquireConcurrencySlotTimeoutError`` (a ``TimeoutError``).
    * No ``PREFECT_API_URL`` (unit tests calling ``.fn``, a bare script): there is no server to hold a
      cross-process limit, so nothing is taken; the per-process client-side pacing in ``services/broker``
      still applies. Prefect's ephemeral server is never started for a limit.
    """
    if not prefect_api_configured():
        yield
        return
    from prefect.concurrency._asyncio import ConcurrencySlotAcquisitionError
    from prefect.concurrency.sync import rate_limit

    from services.errors import ConfigurationError

    try:
        rate_limit(name, occupy=occupy, timeout_seconds=timeout_seconds, strict=True)
    except ConcurrencySlotAcquisitionError as exc:
        if "must be created" in str(exc):
            raise ConfigurationError(f"global limit {name!r} does not exist: {BOOTSTRAP_HINT}") from exc
        raise
    yield
