"""A two-timeframe strategy end to end: SPY 1-hour bars with 1-day context, the flow on a real Prefect server, the
TWS simulator over the socket with the real ib_async client, the offline analyst; the chart HTML in headless
Chromium shows both timeframes' panes."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
import yaml
from prefect import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

from flows.strategy import strategy_run
from services import strategies as store
from services.broker.ib_adapter import IBBroker
from services.db import init_database, session_scope
from services.prompt_library import seed_templates
from services.runtime import Runtime, use_runtime
from services.settings import load_settings
from simulator import SimConfig, SimServer
from tests.expected_signal import offline_signal

REPO = Path(__file__).resolve().parents[1]
NAME = "spy-hourly-daily"
WHEN = datetime(2011, 1, 31, 20, 30, tzinfo=UTC)  # Monday 15:30 New York, inside the SPY 1-minute sample month

pytestmark = [pytest.mark.postgres, pytest.mark.prefect, pytest.mark.slow]


def _definition() -> store.StrategyDefinition:
    doc: dict[str, Any] = yaml.safe_load((REPO / "examples/strategies/spy-sma-cross.yaml").read_text())
    doc.update(name=NAME, bar_size="1 hour", lookback="10 D", timeframes=["1 day"])
    return store.parse_strategy(doc, source=NAME)


@pytest.fixture(scope="module")
def run(prefect_api, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("trader-data")
    settings = load_settings({"TRADER_DATA_DIR": str(data_dir)})
    init_database(settings)
    definition = _definition()
    with session_scope(settings.database_url()) as session:
        seed_templates(session)
        store.save_definition(session, definition)
    with SimServer.in_thread(SimConfig(data_dir=REPO / "data" / "samples")) as sim:
        runtime = Runtime(
            settings,
            broker_factory=lambda: IBBroker.from_settings(settings.ib, port=sim.port, client_id=32),
            clock=lambda: sim.clock.now,
        )
        with use_runtime(runtime):
            sim.clock.set(WHEN)
            requests_before = sim.stats.hist_requests
            result = strategy_run(NAME)
            requests = sim.stats.hist_requests - requests_before
            violations = sim.stats.pacing_violations
            broker = runtime.broker().broker
            assert isinstance(broker, IBBroker)
            limiter = broker.hist_limiter.stats
            expected = offline_signal(settings, definition, sim.port, WHEN)
        runtime.close()
    yield result, expected, requests, violations, limiter


async def _artifacts(run_id: str) -> dict[str, Any]:
    async with get_client() as client:
        found = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(run_id)]))
        )
    return {a.key: a for a in found}


def test_the_default_lookback_is_filled_in_and_stored() -> None:
    [daily] = _definition().timeframes
    assert (daily.bar_size.value, daily.lookback) == ("1 day", "1 Y")  # SMA 50 warm-up: ~150 daily bars


async def test_two_timeframes_run_end_to_end_within_the_pacing_limits(run) -> None:
    result, expected, requests, violations, limiter = run
    # the offline analyst decides on the main bars; the context changes the prompt and the chart, not that
    assert (result.action, result.reason) == (expected.action.value, expected.reason)
    assert result.action != "ABSTAIN", result.reason
    assert requests == 2 and violations == 0  # one request per timeframe, no 162 from the simulator
    assert limiter.admitted == 2  # both through the client-side historical limiter

    artifacts = await _artifacts(result.flow_run_id)
    bars = artifacts[f"{NAME}-bars"].data
    assert "### Higher timeframes (context)" in bars and "| 1 day | 1 Y |" in bars
    assert "| 1 hour, 10 D, TRADES |" in bars
    indicators = str(artifacts[f"{NAME}-indicators"].data)
    assert "1 day: sma_fast" in indicators and "1 day: rsi_14" in indicators
    prompt = result.prompt.read_text()
    assert "on 1 hour bars" in prompt
    assert 'Higher timeframe 1 day (context; the chart\'s "1 day" pane), as of 2011-01-28' in prompt
    assert "Last 5 bars of 1 day (oldest first):" in prompt


@pytest.mark.browser
async def test_the_chart_shows_a_pane_per_timeframe_in_chromium(run) -> None:
    from playwright.async_api import async_playwright

    result = run[0]
    assert result.chart_png is not None and result.chart_png.stat().st_size > 10_000
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        page = await browser.new_page(viewport={"width": 1200, "height": 1000})
        await page.goto(result.chart_html.as_uri())
        for title in ("1 hour (main)", "1 day (higher timeframe)"):
            await page.locator(".annotation-text", has_text=title).first.wait_for(timeout=30_000)
        candles = await page.evaluate("() => document.querySelectorAll('.trace.boxes, g.trace.ohlc').length")
        subplots = await page.evaluate("() => document.querySelectorAll('.cartesianlayer .subplot').length")
        await browser.close()
    assert candles == 2  # main and daily candlesticks drawn
    assert subplots == 5  # price, volume, RSI, ATR (the main panes: 4 without the daily one), the daily pane
