"""The Prefect side of the event port (:mod:`services.events`): a trader event becomes a Prefect event.

``install()`` runs where flows start (``flows/__init__.py``: every flow run's process imports it, the warm
worker's too) and in the CLI commands that change what a trader is told about (``trader halt`` / ``resume``).
The events worker adds the emitting run (flow run, flow, deployment) as related resources; an event about an
order is also linked to the run that made the order, which is what the notification's link opens.
"""

from __future__ import annotations

import logging
from typing import Any

from services.events import EventSink, LoggingSink, TraderEvent, current_sink, set_sink

log = logging.getLogger(__name__)


def prefect_resource(event: TraderEvent) -> dict[str, str]:
    resource = {"prefect.resource.id": event.resource.id}
    if event.resource.name:
        resource["prefect.resource.name"] = event.resource.name
    return resource


def prefect_related(event: TraderEvent) -> list[dict[str, str]]:
    related: list[dict[str, str]] = []
    if event.flow_run_id:
        related.append(
            {"prefect.resource.id": f"prefect.flow-run.{event.flow_run_id}", "prefect.resource.role": "flow-run"}
        )
    for other in event.related:
        item = {"prefect.resource.id": other.id, "prefect.resource.role": other.role or "related"}
        if other.name:
            item["prefect.resource.name"] = other.name
        related.append(item)
    return related


class PrefectSink:
    """Emits each event with ``prefect.events.emit_event``; without a Prefect API (no ``PREFECT_API_URL``) it
    only logs, so a command run without a server never starts one."""

    def __init__(self) -> None:
        self._fallback = LoggingSink()

    def publish(self, event: TraderEvent) -> None:
        from prefect.events import emit_event
        from prefect.settings import PREFECT_API_URL

        if not PREFECT_API_URL.value():
            self._fallback.publish(event)
            return
        payload: dict[str, Any] = {"message": event.message, "kind": event.kind.value, **event.payload}
        emit_event(
            event.name,
            resource=prefect_resource(event),
            related=prefect_related(event),
            payload=payload,
            occurred=event.occurred,
        )


def install() -> EventSink:
    """Make the Prefect sink the process's (once); return it."""
    sink = current_sink()
    if not isinstance(sink, PrefectSink):
        sink = PrefectSink()
        set_sink(sink)
    return sink
