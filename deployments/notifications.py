"""Notifications (part of ``trader bootstrap``): one Prefect automation per event kind, sending through a
notification block. Prefect's automation engine does the sending (triggers and actions services of the server);
our code only emits events (:mod:`services.events`, :mod:`tasks.events`).

* **Where to**: ``TRADER_NOTIFICATIONS__WEBHOOK_URL`` -> bootstrap keeps a Custom Webhook block
  ``trader-notifications`` posting JSON ``{"subject", "body", "text"}`` there (the URL kept as the block's secret);
  or
  ``TRADER_NOTIFICATIONS__BLOCK=TYPE/NAME`` names a block made beforehand (Slack webhook, email, ...). Neither:
  notifications are off and bootstrap removes its automations.
* **What**: one automation ``trader: <kind>`` per switch turned on in ``TRADER_NOTIFICATIONS__*`` (plus flow runs
  Failed / Crashed); a switch turned off has no automation (bootstrap deletes it). Re-running updates each in
  place (matched by name), never duplicates.
* **The message** carries the event's one-line message and a link to the flow run in the UI: the run that made
  the order (order events), else the run that emitted the event, else the resource's events page.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Final
from uuid import UUID

from prefect.events.actions import SendNotification
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
from prefect.exceptions import ObjectNotFound

from services.errors import ConfigurationError
from services.events import EVENT_NAMES, EventKind
from services.settings import NotificationSettings

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient

    from deployments.bootstrap import BootstrapReport

AUTOMATION_PREFIX: Final = "trader: "
WEBHOOK_BLOCK: Final = "trader-notifications"
WEBHOOK_BLOCK_TYPE: Final = "custom-webhook"
# The URL is a secret of the block (a Slack-style URL is a credential), filled in by the block when it sends.
WEBHOOK_URL_SECRET: Final = "webhook_url"
WEBHOOK_URL_TEMPLATE: Final = "{{" + WEBHOOK_URL_SECRET + "}}"
# What the generic webhook receives: {{subject}} / {{body}} are the block's own placeholders ("text" suits Slack).
WEBHOOK_JSON: Final = {"subject": "{{subject}}", "body": "{{body}}", "text": "{{subject}}\n{{body}}"}

NAME: Final = "{{ event.resource.name or event.resource.id }}"
RUN_LINK: Final = (
    "{% if flow_run %}Flow run {{ flow_run.name }}: {{ flow_run|ui_url }}"
    "{% else %}Events: {{ event.resource|ui_resource_events_url }}{% endif %}"
)
TRADER_BODY: Final = "{{ event.payload.message }}\n\n{{ event.event }} on {{ event.resource.id }}\n" + RUN_LINK
FLOW_RUN_BODY: Final = (
    "Flow run {{ flow_run.name }} ended {{ flow_run.state.name }}: {{ flow_run.state.message }}\n\n"
    "{{ flow_run|ui_url }}"
)


@dataclass(frozen=True)
class Notice:
    """One automation: its switch (a ``NotificationSettings`` field), the events it fires on, its message."""

    switch: str
    events: tuple[str, ...]
    subject: str
    body: str = TRADER_BODY
    resources: str = "trader.*"

    @property
    def automation(self) -> str:
        return AUTOMATION_PREFIX + self.switch

    def enabled(self, settings: NotificationSettings) -> bool:
        value: bool | int = getattr(settings, self.switch)
        return bool(value)  # abstain_streak: a count, 0 = off


def _one(kind: EventKind, subject: str) -> Notice:
    return Notice(kind.value, (EVENT_NAMES[kind],), subject)


NOTICES: Final = (
    _one(EventKind.ORDER_FILLED, "trader: order filled " + NAME),
    _one(EventKind.ORDER_REJECTED, "trader: order rejected " + NAME),
    _one(EventKind.ORDER_EXPIRED, "trader: order expired " + NAME),
    _one(EventKind.APPROVAL_PENDING, "trader: approval needed for " + NAME),
    _one(EventKind.ABSTAIN_STREAK, "trader: " + NAME + " keeps abstaining"),
    _one(EventKind.IB_RECONNECTED, "trader: IB reconnected after an outage"),
    _one(EventKind.LLM_BUDGET, "trader: LLM daily budget reached"),
    Notice(
        "kill_switch",
        (EVENT_NAMES[EventKind.KILL_SWITCH_ENGAGED], EVENT_NAMES[EventKind.KILL_SWITCH_RELEASED]),
        "trader: kill switch {{ 'ENGAGED' if event.event.endswith('.engaged') else 'released' }}",
    ),
    _one(EventKind.DAILY_LOSS, "trader: daily loss limit hit"),
    _one(EventKind.RECONCILE_FAILED, "trader: reconciliation failed"),
    Notice(
        "flow_run_failed",
        ("prefect.flow-run.Failed", "prefect.flow-run.Crashed"),
        "trader: flow run {{ flow_run.name }} {{ flow_run.state.name }}",
        FLOW_RUN_BODY,
        "prefect.flow-run.*",
    ),
)


def automation_for(notice: Notice, block_id: UUID) -> AutomationCore:
    return AutomationCore(
        name=notice.automation,
        description=f"ibkr-trader notification ({notice.switch}); kept by `trader bootstrap`",
        enabled=True,
        trigger=EventTrigger(
            expect=set(notice.events),
            match={"prefect.resource.id": notice.resources},
            posture=Posture.Reactive,
            threshold=1,
            within=timedelta(0),
        ),
        actions=[SendNotification(block_document_id=block_id, subject=notice.subject, body=notice.body)],
    )


def _target_block(client: SyncPrefectClient, settings: NotificationSettings, report: BootstrapReport) -> UUID | None:
    """The notification block's id: the named one, or the webhook block (created / corrected); None: off."""
    if settings.block is not None:
        slug, _, name = settings.block.partition("/")
        try:
            document = client.read_block_document_by_name(name, block_type_slug=slug)
        except ObjectNotFound:
            raise ConfigurationError(
                f"TRADER_NOTIFICATIONS__BLOCK={settings.block}: no such block; create it first (README: Notifications)"
            ) from None
        report.unchanged.append(f"block {settings.block}")
        assert document.id is not None
        return document.id
    if settings.webhook_url is None:
        return None
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    url = settings.webhook_url.get_secret_value()
    label = f"block {WEBHOOK_BLOCK_TYPE}/{WEBHOOK_BLOCK}"
    try:
        have = client.read_block_document_by_name(WEBHOOK_BLOCK, block_type_slug=WEBHOOK_BLOCK_TYPE)
    except ObjectNotFound:
        have = None
    want = {"url": WEBHOOK_URL_TEMPLATE, "json_data": WEBHOOK_JSON, "secrets": {WEBHOOK_URL_SECRET: url}}
    if have is not None and all(have.data.get(k) == v for k, v in want.items()):
        report.unchanged.append(label)
        assert have.id is not None
        return have.id
    block = CustomWebhookNotificationBlock(
        name="ibkr-trader",
        url=WEBHOOK_URL_TEMPLATE,
        json_data=dict(WEBHOOK_JSON),
        secrets={WEBHOOK_URL_SECRET: url},
    )
    block_id: UUID = block.save(WEBHOOK_BLOCK, overwrite=True)  # type: ignore[assignment]
    (report.updated if have is not None else report.created).append(label)
    return block_id


def _same(have: AutomationCore, want: AutomationCore) -> bool:
    fields = {"name", "description", "enabled", "trigger", "actions"}
    return bool(have.model_dump(include=fields, mode="json") == want.model_dump(include=fields, mode="json"))


def sync_notifications(client: SyncPrefectClient, settings: NotificationSettings, report: BootstrapReport) -> None:
    """Create, correct or delete the ``trader: *`` automations so they match ``settings``."""
    block_id = _target_block(client, settings, report)
    for notice in NOTICES:
        label = f"automation {notice.automation}"
        existing = client.read_automations_by_name(notice.automation)
        if block_id is None or not notice.enabled(settings):
            for automation in existing:
                client.delete_automation(automation.id)
            if existing:
                report.deleted.append(label)
            continue
        want = automation_for(notice, block_id)
        if not existing:
            client.create_automation(want)
            report.created.append(label)
            continue
        first, *extra = existing
        for automation in extra:  # e.g. one copied in the UI under the same name
            client.delete_automation(automation.id)
        if _same(first, want) and not extra:
            report.unchanged.append(label)
        else:
            client.update_automation(first.id, want)
            report.updated.append(label)
