"""End to end: the strategy flow on a real Prefect server (PostgreSQL-backed), the TWS simulator over the
socket with the real ib_async client, the offline analyst, and the Prefect UI in headless Chromium."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

import pytest
from prefect import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
)
from sqlalchemy import select

from flows.strategy import strategy_run
from models.tables import Signal
from services import strategies as store
from services.broker.ib_adapter import IBBroker
from services.db import init_database, session_scope
from services.prompt_library import seed_templates
from services.runtime import Runtime, use_runtime
from services.settings import load_settings
from simulator import SimConfig, SimServer
from tests.expected_signal import offline_signal

REPO = Path(__file__).resolve().parents[1]
STEPS = ["contract", "bars", "indicators", "chart", "analysis", "signal"]

pytestmark = [pytest.mark.postgres, pytest.mark.prefect, pytest.mark.slow]


@pytest.fixture(scope="module")
def trader(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("trader-data")
    settings = load_settings({"TRADER_DATA_DIR": str(data_dir)})
    init_database(settings)
    with session_scope(settings.database_url()) as session:
        seed_templates(session)
        store.save_definition(session, store.load_strategy_file(REPO / "examples/strategies/spy-sma-cross.yaml"))
    with SimServer.in_thread(SimConfig(data_dir=REPO / "data" / "samples")) as sim:
        runtime = Runtime(
            settings,
            broker_factory=lambda: IBBroker.from_settings(settings.ib, port=sim.port, client_id=31),
            clock=lambda: sim.clock.now,
        )
        with use_runtime(runtime):
            yield sim, runtime
        runtime.close()


def _run_at(sim, when: datetime):
    sim.clock.set(when)
    return strategy_run("spy-sma-cross")


def _expected(trader, when: datetime):
    sim, runtime = trader
    with session_scope(runtime.database_url) as session:
        definition = store.get_definition(session, "spy-sma-cross")
    return offline_signal(runtime.settings, definition, sim.port, when)


@pytest.fixture(scope="module")
def latest_run(prefect_api, trader):
    sim, _ = trader
    return _run_at(sim, datetime(2017, 12, 29, 21, 0, tzinfo=UTC))


def test_the_run_decides_what_the_services_decide_on_the_same_bars(latest_run, trader):
    # 2017-12-29 close: SPY in the 2017 uptrend (SMA 20 above SMA 50), so the offline analyst's rules give BUY;
    # the expectation is computed independently of the flow (tests/expected_signal.py) and must agree exactly.
    expected = _expected(trader, datetime(2017, 12, 29, 21, 0, tzinfo=UTC))
    assert expected.action.value == "BUY", expected.reason
    assert (latest_run.action, latest_run.reason) == (expected.action.value, expected.reason)


async def _artifacts(run_id: str):
    async with get_client() as client:
        return await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(run_id)]))
        )


async def test_six_tasks_and_one_artifact_per_step(latest_run, trader):
    _, runtime = trader
    assert latest_run.flow_run_id is not None
    async with get_client() as client:
        run = await client.read_flow_run(UUID(latest_run.flow_run_id))
        task_runs = await client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(latest_run.flow_run_id)]))
        )
    assert run.state is not None and run.state.is_completed()
    assert run.name == "spy-sma-cross-SPY-20171229"
    assert {"strategy:spy-sma-cross", "symbol:SPY"} <= set(run.tags)
    names = sorted(tr.name.rsplit("-", 1)[0] for tr in task_runs)
    steps = ["1 resolve symbol", "2 market data", "3 indicators", "4 chart", "5 llm analysis", "6 signal"]
    assert latest_run.action == "BUY"  # pinned by test_the_run_decides_what_the_services_decide_on_the_same_bars
    assert names == [*steps, "6b decision chart", "7 order"]
    assert all(tr.state is not None and tr.state.is_completed() for tr in task_runs)

    artifacts = await _artifacts(latest_run.flow_run_id)
    expected = [*STEPS, "decision-chart", "order"]
    assert sorted(a.key for a in artifacts) == sorted(f"spy-sma-cross-{step}" for step in expected)
    chart = next(a for a in artifacts if a.key == "spy-sma-cross-chart")
    assert "data:image/png;base64," in chart.data
    analysis = next(a for a in artifacts if a.key == "spy-sma-cross-analysis")
    assert "OFFLINE analyst" in analysis.data

    with session_scope(runtime.database_url) as session:
        row = session.scalars(select(Signal).where(Signal.flow_run_id == latest_run.flow_run_id)).one()
        assert row.action.value == latest_run.action
        assert row.reason == latest_run.reason
        assert row.llm_call_id is not None  # the analysis record of this run (offline analysts are recorded too)
    assert latest_run.chart_png is not None and latest_run.chart_png.stat().st_size > 10_000
    assert latest_run.chart_html is not None and latest_run.chart_html.exists()
    decision = next(a for a in artifacts if a.key == "spy-sma-cross-decision-chart")  # a BUY: drawn with its levels
    assert "data:image/png;base64," in decision.data and "## Decision: BUY" in decision.data
    assert latest_run.decision_chart == latest_run.run_dir / "decision.png" and latest_run.decision_chart.exists()
    # drawn with the signal's marks, not a copy of the step-4 chart
    assert latest_run.decision_chart.read_bytes() != latest_run.chart_png.read_bytes()
    decision_html = (latest_run.run_dir / "decision.html").read_text()
    assert "signal BUY" in decision_html and "stop " in decision_html and "target " in decision_html
    assert "signal BUY" not in latest_run.chart_html.read_text()
    assert latest_run.prompt is not None and "SPY" in latest_run.prompt.read_text()


async def test_the_run_log_tells_the_story_one_line_per_step(latest_run):
    """The run page's log (the server's logs API) has one INFO line per step with its figures."""
    assert latest_run.flow_run_id is not None
    steps = ("resolve", "market data", "indicators", "chart", "analysis", "signal", "decision chart", "order")
    run_filter = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[UUID(latest_run.flow_run_id)]))
    deadline = time.monotonic() + 30  # the run's logs reach the server in batches
    async with get_client() as client:
        while True:
            logs = await client.read_logs(log_filter=run_filter)
            lines = {s: [log.message for log in logs if log.message.startswith(f"{s}: ")] for s in steps}
            if all(lines.values()) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
    assert {s: len(found) for s, found in lines.items()} == dict.fromkeys(steps, 1), lines
    assert all(log.level == logging.INFO for log in logs if log.message.startswith(tuple(f"{s}: " for s in steps)))
    story = {s: found[0] for s, found in lines.items()}
    assert story["resolve"].startswith("resolve: SPY conid 756733 on SMART")
    bars = (
        r"market data: \d+ bars 2016-12-\d\dT00:00:00\+00:00 \.\. 2017-12-29T00:00:00\+00:00 \(1 day, 1 Y\), 0 flagged"
    )
    assert re.match(bars, story["market data"]), story["market data"]
    assert "sma_fast 266.1675" in story["indicators"] and "rsi_14 " in story["indicators"]
    assert re.search(r"chart: 900x600 PNG \d+ KB", story["chart"])
    assert story["analysis"].startswith("analysis: offline rules (offline-rules-v1) -> BUY confidence ")
    assert "policy llm_only" in story["analysis"] and "cost 0 USD" in story["analysis"]
    assert "latency " in story["analysis"]
    assert story["signal"].startswith("signal: BUY (confidence ") and latest_run.reason in story["signal"]
    assert re.search(r"order: BUY \d+ LMT @ [\d.]+ \(open \d+\); sizing risk_based: risk ", story["order"])
    # 21:00 UTC is after the close: the send-time gate refuses, and the line says so and why
    assert latest_run.order is not None and latest_run.order.status == "risk_rejected"
    assert "; gate REJECTED: market_open: SPY market closed; status risk_rejected," in story["order"]


async def test_broken_rows_are_excluded_and_listed(prefect_api, trader):
    sim, _ = trader
    result = _run_at(sim, datetime(2015, 4, 15, 20, 0, tzinfo=UTC))  # 1 Y lookback covers 2015-03-05 and 03-30
    bars = next(a for a in await _artifacts(result.flow_run_id) if a.key == "spy-sma-cross-bars")
    assert "| rows excluded from the decision | 2 |" in bars.data
    for day in ("2015-03-05", "2015-03-30"):
        assert day in bars.data
    expected = _expected(trader, datetime(2015, 4, 15, 20, 0, tzinfo=UTC))  # same bars, same exclusions
    assert (result.action, result.reason) == (expected.action.value, expected.reason)


@pytest.mark.browser
async def test_prefect_ui_shows_chart_and_signal(prefect_api, latest_run):
    from playwright.async_api import async_playwright

    artifacts = {a.key: a for a in await _artifacts(latest_run.flow_run_id)}
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        page = await browser.new_page(viewport={"width": 1400, "height": 1000})
        await page.goto(f"{prefect_api.ui_url}/runs/flow-run/{latest_run.flow_run_id}")
        await page.get_by_text("spy-sma-cross-SPY-20171229").first.wait_for(timeout=30_000)

        await page.goto(f"{prefect_api.ui_url}/artifacts/artifact/{artifacts['spy-sma-cross-chart'].id}")
        image = page.locator("img[src^='data:image/png']").first
        await image.wait_for(timeout=30_000)
        width = await image.evaluate("img => img.complete ? img.naturalWidth : 0")
        assert width > 0

        await page.goto(f"{prefect_api.ui_url}/artifacts/artifact/{artifacts['spy-sma-cross-signal'].id}")
        await page.get_by_text(latest_run.action, exact=True).first.wait_for(timeout=30_000)
        await page.get_by_text("risk/reward").first.wait_for(timeout=10_000)
        await browser.close()
