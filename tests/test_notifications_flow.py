"""Notifications through Prefect's own automation engine: the session's real Prefect server (PostgreSQL-backed,
triggers and actions services on, as ``prefect server start`` runs them), ``trader bootstrap``'s automations and
webhook block, and a loopback HTTP receiver started here as the webhook target.

A flow run publishes one event of every kind through the installed Prefect sink (``tasks.events``; the kill
switch's from a real engage and release on a trader database), and another flow run fails: every enabled kind
reaches the receiver as Prefect's notification (the server posts it; nothing here posts to the receiver), with
the flow run's UI link; the kind switched off has no automation and never arrives, though its event was emitted
first.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from prefect import flow, get_client
from prefect.blocks.notifications import SlackWebhook
from prefect.runtime import flow_run
from pydantic import SecretStr

from deployments.bootstrap import bootstrap
from deployments.local_server import ServerInfo
from deployments.notifications import AUTOMATION_PREFIX, NOTICES
from services.errors import ConfigurationError
from services.events import EventKind, Resource, TraderEvent, publish, strategy_resource, use_sink
from services.orders import kill_switch
from services.settings import load_settings
from tasks.events import PrefectSink
from tests.waiting import eventually

pytestmark = [pytest.mark.postgres, pytest.mark.prefect]

DISABLED = EventKind.ORDER_EXPIRED


class Receiver:
    """A loopback webhook target: records every JSON body posted to it."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        received = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                with received._lock:
                    received.bodies.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def received(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.bodies)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    started = Receiver()
    yield started
    started.close()


REAL = (EventKind.KILL_SWITCH_ENGAGED, EventKind.KILL_SWITCH_RELEASED)  # sent by the kill switch itself


def _events(order_run: str) -> list[TraderEvent]:
    """One event of each other kind, the one switched off first."""
    order = Resource("trader.order.9001", "notify-test:SPY:BUY", role="order")
    strategy = strategy_resource("notify-test")
    kinds = [DISABLED, *(k for k in EventKind if k is not DISABLED and k not in REAL)]
    return [
        TraderEvent(
            kind,
            order if kind.value.startswith(("order_", "approval_")) else Resource(f"trader.test.{kind.value}"),
            f"{kind.value} message",
            {"test": True},
            (strategy,),
            flow_run_id=order_run if kind.value.startswith("order_") else None,
        )
        for kind in kinds
    ]


@flow(name="notify-order-run")
def order_run() -> str:
    return str(flow_run.get_id())


@flow(name="notify-emitter")
def emit_all(order_run_id: str, db_url: str) -> str:
    for event in _events(order_run_id):
        publish(event)
    kill_switch.engage(db_url, "notification test", changed_by="tester")  # the real sites, as the kill-switch flow
    kill_switch.release(db_url, changed_by="tester", reason="all clear")
    return str(flow_run.get_id())


@flow(name="notify-fails")
def failing_run() -> None:
    raise RuntimeError("boom for the notification test")


def test_each_kind_arrives_through_prefect_automations(
    prefect_api: ServerInfo, receiver: Receiver, _sqlite_template: Path, tmp_path: Path
) -> None:
    db_url = f"sqlite:///{tmp_path / 'trader.db'}"
    shutil.copyfile(_sqlite_template, tmp_path / "trader.db")  # a migrated trader database
    settings = load_settings(
        {"TRADER_NOTIFICATIONS__WEBHOOK_URL": receiver.url, f"TRADER_NOTIFICATIONS__{DISABLED.value.upper()}": "false"}
    )
    first = bootstrap(settings)
    again = bootstrap(settings)  # idempotent: everything is found as it should be
    with get_client(sync_client=True) as client:
        names = {a.name for a in client.read_automations() if a.name.startswith(AUTOMATION_PREFIX)}
        counts = {n: len(client.read_automations_by_name(n)) for n in names}
        shown = client.read_block_document_by_name("trader-notifications", "custom-webhook", include_secrets=False)
    assert receiver.url not in json.dumps(shown.data)  # the URL is the block's secret, not shown in the UI
    try:
        assert names == {n.automation for n in NOTICES if n.switch != DISABLED.value}
        assert set(counts.values()) == {1}
        assert all(f"automation {n}" in first.created for n in names)
        assert all(f"automation {n}" in again.unchanged for n in names) and not again.created and not again.updated

        with use_sink(PrefectSink()):
            orders_run = order_run()
            emitter_run = emit_all(orders_run, db_url)
        failed = failing_run(return_state=True)
        assert failed.is_failed()
        failed_id = str(failed.state_details.flow_run_id)

        enabled = [k for k in EventKind if k is not DISABLED]

        def subjects_with(text: str) -> list[dict[str, Any]]:
            return [b for b in receiver.received() if text in b["body"]]

        first_lines = {f"{k.value} message" for k in enabled if k not in REAL} | {
            "kill switch engaged by tester: notification test (0 unsent orders ended)",
            "kill switch released by tester: all clear",
        }

        def all_arrived() -> bool:
            got = {b["body"].split("\n", 1)[0] for b in receiver.received()}
            messages = first_lines
            return messages <= got and any(f"/runs/flow-run/{failed_id}" in b["body"] for b in receiver.received())

        eventually(all_arrived, timeout_s=60, poll_s=0.2)
        bodies = receiver.received()
        for line in first_lines:
            (body,) = [b for b in bodies if b["body"].startswith(line)]
            run_id = orders_run if line.startswith("order_") else emitter_run
            assert f"/runs/flow-run/{run_id}" in body["body"], body
            assert body["text"] == f"{body['subject']}\n{body['body']}"
        # only this run's: another test's failed run may be told too while the automation exists
        (fail_body,) = [b for b in bodies if f"/runs/flow-run/{failed_id}" in b["body"]]
        assert "ended Failed" in fail_body["body"]
        assert "boom for the notification test" in fail_body["body"]
        assert f"/runs/flow-run/{failed_id}" in fail_body["body"]
        subjects = {b["subject"] for b in bodies}
        assert {"trader: kill switch ENGAGED", "trader: kill switch released"} <= subjects
        assert "trader: approval needed for notify-test:SPY:BUY" in subjects
        assert "trader: trader.test.abstain_streak keeps abstaining" in subjects  # no name: the id

        env = {"TRADER_NOTIFICATIONS__WEBHOOK_URL": receiver.url + "?v=2", "TRADER_NOTIFICATIONS__ORDER_FILLED": "0",
               f"TRADER_NOTIFICATIONS__{DISABLED.value.upper()}": "false"}  # fmt: skip
        switched = bootstrap(load_settings(env))  # a switch turned off and a new URL
        assert switched.deleted == ["automation trader: order_filled"]
        assert "block custom-webhook/trader-notifications" in switched.updated
        assert not switched.created and not switched.updated[1:]  # the automations point at the same block

        slack = SlackWebhook(url=SecretStr("https://hooks.slack.com/services/T000/B000/XXXX"))  # type: ignore[arg-type]
        slack_id = slack.save("trader-slack-test", overwrite=True)
        to_slack = bootstrap(load_settings({"TRADER_NOTIFICATIONS__BLOCK": "slack-webhook/trader-slack-test"}))
        assert "block slack-webhook/trader-slack-test" in to_slack.unchanged and len(to_slack.updated) >= 9
        with get_client(sync_client=True) as client:
            (filled,) = client.read_automations_by_name(f"{AUTOMATION_PREFIX}order_filled")
        assert [a.block_document_id for a in filled.actions] == [slack_id]  # type: ignore[union-attr]
        with pytest.raises(ConfigurationError, match="no such block"):
            bootstrap(load_settings({"TRADER_NOTIFICATIONS__BLOCK": "slack-webhook/not-there"}))
        assert not subjects_with(f"{DISABLED.value} message")
    finally:
        off = bootstrap(load_settings({}))  # no target: the automations go away again
        assert {f"automation {n}" for n in names} <= set(off.deleted)
