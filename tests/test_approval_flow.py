"""Order approval end to end: a PostgreSQL-backed Prefect server, a real worker, the TWS simulator, headless Chromium.

Three strategies with ``approval: always`` run once each on a warm worker of concurrency 1: every run pauses
with its order held (so a paused run holds no slot: all three wait at once); Chromium shows the resume form with
its description; an approval through the API (``trader approve``) resumes one run, which re-runs the gate and
sends the order to the simulator; a rejection (``trader reject``) and a timeout end theirs Completed "not
approved: ..." with nothing placed; the decisions are on the orders, in their events and their artifacts.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect import get_client
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.client.schemas.objects import StateType
from typer.testing import CliRunner

from deployments.bootstrap import bootstrap
from deployments.local_server import ServerInfo
from deployments.sync import desired_from_database, sync_deployments
from deployments.warm_worker import WarmWorker
from models.enums import OrderStatus
from models.strategy import Approval, StrategyDefinition
from models.tables import Order
from services import strategies as store
from services.broker.ib_adapter import IBBroker
from services.db import session_scope
from services.orders import approval
from services.repositories import orders as orders_repo
from services.runtime import Runtime, use_runtime
from services.settings import Settings
from simulator import SimConfig, SimServer
from tests.prefect_server import prefect_server
from tests.test_warm_worker import MARKET_NOW, POOL, REPO, trader_settings

pytestmark = [pytest.mark.postgres, pytest.mark.prefect, pytest.mark.slow]

NAMES = {"approve": "spy-ok", "reject": "spy-no", "timeout": "spy-late"}
TIMEOUT_MINUTES = 0.5


@pytest.fixture(scope="module")
def server(pg_cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerInfo]:
    with prefect_server(pg_cluster, tmp_path_factory.mktemp("approval-prefect"), "prefect_approval") as info:
        yield info


@pytest.fixture(scope="module")
def client(server: ServerInfo) -> Iterator[SyncPrefectClient]:
    with get_client(sync_client=True) as sync_client:
        yield sync_client


def approval_settings(data_dir: Path) -> Settings:
    """spy-sma-cross plus three copies that hold every order for approval (distinct lookbacks: IB refuses identical
    historical requests within 15 s), sent to the simulator (not a dry run)."""
    settings = trader_settings(data_dir)
    settings = settings.model_copy(update={"trading": settings.trading.model_copy(update={"dry_run": False})})
    spy = store.load_strategy_file(REPO / "examples/strategies/spy-sma-cross.yaml")
    with session_scope(settings.database_url()) as session:
        for i, (case, name) in enumerate(NAMES.items()):
            doc = spy.model_dump() | {"name": name, "lookback": f"{300 + i} D"}
            doc["risk"] = doc["risk"] | {"max_position": 1000}  # three held orders count against one position limit
            doc["approval"] = Approval(rule="always", timeout_minutes=60 if case != "timeout" else TIMEOUT_MINUTES)
            store.save_definition(session, StrategyDefinition.model_validate(doc))
    return settings


def wait_for(what: str, check: Callable[[], Any], seconds: float) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {seconds} s waiting for {what}")


def order_of(settings: Settings, run_id: UUID) -> tuple[Order, list[str]]:
    with session_scope(settings.database_url()) as session:
        rows = [o for o in orders_repo.list_orders(session) if o.flow_run_id == str(run_id) and o.parent_id is None]
        assert len(rows) == 1, rows
        trail = [e.detail or "" for e in orders_repo.events(session, rows[0].id)]
        session.expunge(rows[0])
        return rows[0], trail


async def show_resume_form(server: ServerInfo, run_id: UUID, screenshot: Path) -> str:
    """Open the paused run's page in headless Chromium, open its resume form; return the form's text."""
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 1100})
            await page.goto(f"{server.ui_url}/runs/flow-run/{run_id}")
            button = page.get_by_role("button", name="Resume").first
            await button.wait_for(timeout=60_000)
            await button.click()
            await page.get_by_text("Analyst reasoning").first.wait_for(timeout=30_000)
            await page.screenshot(path=str(screenshot), full_page=True)
            text: str = await page.inner_text("body")
            images = await page.locator("img[src^='data:image/png']").count()
            return text + f"\n[images: {images}]"
        finally:
            await browser.close()


@pytest.mark.browser
@pytest.mark.timeout(600)
def test_approve_reject_and_timeout_of_held_orders(
    server: ServerInfo, client: SyncPrefectClient, tmp_path: Path
) -> None:
    import asyncio

    from cli.main import app

    settings = approval_settings(tmp_path / "trader")
    bootstrap(settings, client)
    sync_deployments(desired_from_database(settings.database_url()), work_pool=POOL, client=client)
    runs = {
        case: client.create_flow_run_from_deployment(client.read_deployment_by_name(f"strategy-run/{name}").id).id
        for case, name in NAMES.items()
    }
    runner = CliRunner()
    env = {"PREFECT_API_URL": server.api_url, "TRADER_DATA_DIR": str(settings.data_dir)}

    with SimServer.in_thread(SimConfig(data_dir=REPO / "data" / "samples", now=MARKET_NOW)) as sim:
        runtime = Runtime(
            settings,
            broker_factory=lambda: IBBroker.from_settings(settings.ib, port=sim.port, client_id=61),
            clock=lambda: sim.clock.now,
        )
        worker = WarmWorker(POOL, concurrency=1, poll_seconds=0.5)
        with use_runtime(runtime):
            context = contextvars.copy_context()
            thread = threading.Thread(
                target=context.run,
                args=(worker.run,),
                kwargs={"max_seconds": 400, "until": lambda s: s.completed + s.failed >= 3},
            )
            thread.start()
            try:

                def state(case: str) -> Any:
                    return client.read_flow_run(runs[case]).state

                # concurrency 1, yet all three reach Paused: a paused run holds no slot of the warm worker
                wait_for("the approve and reject runs paused", lambda: all(
                    (s := state(c)) is not None and s.type is StateType.PAUSED for c in ("approve", "reject")
                ), 240)  # fmt: skip
                wait_for("the worker to count both as paused", lambda: worker.stats.paused_seen >= 2, 20)
                held = {case: order_of(settings, runs[case])[0] for case in ("approve", "reject")}
                for order in held.values():
                    assert order.status is OrderStatus.CREATED and approval.is_pending(order.approval)
                assert sim.state.orders_by_ref(held["approve"].idempotency_key) == []  # nothing sent yet

                listed = runner.invoke(app, ["approvals", "list"], env=env)
                assert listed.exit_code == 0, listed.output
                assert f"{held['approve'].id}  spy-ok  BUY" in listed.output and "(Paused)" in listed.output

                form = asyncio.run(show_resume_form(server, runs["approve"], tmp_path / "resume-form.png"))
                for expected in ("Approve BUY", "Signal", "Sizing", "Bracket", "Risk checks", "Analyst reasoning",
                                 "offline analyst", "decision", "approver"):  # fmt: skip
                    assert expected.lower() in form.lower(), f"{expected!r} not in the resume form:\n{form[-3000:]}"
                assert "[images: 0]" not in form  # the chart renders in the description

                rejected = runner.invoke(
                    app, ["reject", str(held["reject"].id), "--reason", "too close to the close", "--by", "bob"],
                    env=env,
                )  # fmt: skip
                assert rejected.exit_code == 0, rejected.output
                approved = runner.invoke(
                    app, ["approve", str(runs["approve"]), "--reason", "trend confirmed", "--by", "alice"], env=env
                )
                assert approved.exit_code == 0, approved.output
                again = runner.invoke(app, ["approve", str(held["reject"].id)], env=env)
                # a second answer is refused: the run is no longer paused, or (once it recorded the decision) the
                # order no longer waits
                assert again.exit_code in (1, 2), again.output
                assert "is not paused" in again.output or "no order waiting" in again.output, again.output

                finals = wait_for("all three runs final", lambda: (
                    all((s := state(c)) is not None and s.is_final() for c in runs) and {c: state(c) for c in runs}
                ), 300)  # fmt: skip
            finally:
                for run_id in runs.values():  # a failed assertion above: let paused runs end before the server stops
                    current = client.read_flow_run(run_id).state
                    if current is not None and current.type is StateType.PAUSED:
                        client.resume_flow_run(run_id, run_input={"decision": "reject", "reason": "test cleanup"})
                worker.stop()
                thread.join(120)
                runtime.close()
        assert not thread.is_alive()
        sent_to_sim = sim.state.orders_by_ref(held["approve"].idempotency_key)
        never_sent = [
            sim.state.orders_by_ref(order_of(settings, runs[c])[0].idempotency_key) for c in ("reject", "timeout")
        ]

    for case, final in finals.items():
        assert final.type is StateType.COMPLETED, (case, final)
    assert finals["approve"].name == "Completed" and not (finals["approve"].message or "").startswith("not approved")
    assert finals["reject"].message == "not approved: too close to the close"
    assert finals["timeout"].message == f"not approved: no decision within {TIMEOUT_MINUTES:g} minutes"
    assert sent_to_sim, "the approved order never reached the simulator"
    assert never_sent == [[], []]

    ok, ok_trail = order_of(settings, runs["approve"])
    assert ok.status in (OrderStatus.SUBMITTED, OrderStatus.FILLED, OrderStatus.PARTIALLY_FILLED), ok.status
    assert ok.approval is not None and (ok.approval["state"], ok.approval["by"]) == ("approved", "alice")
    assert ok.approval["reason"] == "trend confirmed"
    assert ok.risk_decision is not None and ok.risk_decision["history"], "the gate ran again at approval"
    assert any(e.startswith("approval approved by alice") for e in ok_trail), ok_trail
    no, no_trail = order_of(settings, runs["reject"])
    assert no.status is OrderStatus.CANCELLED and no.approval is not None
    assert (no.approval["state"], no.approval["by"], no.approval["reason"]) == (
        "rejected",
        "bob",
        "too close to the close",
    )
    assert "not approved: too close to the close (never sent)" in no_trail
    late, late_trail = order_of(settings, runs["timeout"])
    assert late.status is OrderStatus.CANCELLED and late.approval is not None
    assert (late.approval["state"], late.approval["by"]) == ("timed_out", "timeout")
    assert any(e.startswith("approval timed out by timeout") for e in late_trail), late_trail

    for case, who in (("approve", "alice"), ("reject", "bob"), ("timeout", "timeout")):
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[runs[case]]))
        )
        tables = [a for a in artifacts if a.key == f"{NAMES[case]}-order"]
        assert len(tables) == 2, [a.key for a in artifacts]  # held, then decided
        decided = max(tables, key=lambda a: a.created or 0)
        assert who in str(decided.data) and "approval" in str(decided.data)
