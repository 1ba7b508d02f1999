"""Strategy runs against a hung step and an unbounded prompt template: both end as ABSTAIN with the reason.

On main no task had a timeout (a hung broker call held the run, and its worker slot, for the broker's own
120 s call limit or forever) and an unbounded template hung the analysis step.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from models.tables import PromptTemplate, Signal
from services.bars.loader import load_bars
from services.broker.memory import MemoryBroker, stock
from services.broker.types import ContractInfo, ContractSpec
from services.db import init_database, session_scope
from services.repositories.prompt_templates import body_sha256
from services.runtime import Runtime, use_runtime
from services.settings import Settings, load_settings
from services.strategies import load_strategy_file, save_definition
from tasks.timeouts import (
    ANALYSIS_TIMEOUT_S,
    CHART_TIMEOUT_S,
    INDICATORS_TIMEOUT_S,
    MARKET_DATA_TIMEOUT_S,
    ORDER_TIMEOUT_S,
    RESOLVE_TIMEOUT_S,
    SIGNAL_TIMEOUT_S,
)

REPO = Path(__file__).resolve().parents[1]
SPY_FILE = REPO / "data" / "samples" / "yahoofinance-SPY-20080101-20180101.csv"
NOW = datetime(2017, 12, 29, 20, 0, tzinfo=UTC)  # Friday 15:00 New York: the market is open


class HangingQualifyBroker(MemoryBroker):
    """A broker whose contract lookup never answers (a hung IB request)."""

    async def qualify(self, spec: ContractSpec) -> ContractInfo:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


def test_every_task_in_tasks_has_its_timeout() -> None:
    from tasks.analysis import analyse
    from tasks.chart import draw_chart, draw_decision_chart
    from tasks.indicators import calculate_indicators
    from tasks.market_data import fetch_market_data
    from tasks.orders import place_order
    from tasks.resolve_symbol import resolve_symbol
    from tasks.signal import decide

    assert {t.name: t.timeout_seconds for t in (resolve_symbol, fetch_market_data, calculate_indicators)} == {
        "1 resolve symbol": RESOLVE_TIMEOUT_S,
        "2 market data": MARKET_DATA_TIMEOUT_S,
        "3 indicators": INDICATORS_TIMEOUT_S,
    }
    steps = (draw_chart, analyse, decide, draw_decision_chart, place_order)
    assert {t.name: t.timeout_seconds for t in steps} == {
        "4 chart": CHART_TIMEOUT_S,
        "5 llm analysis": ANALYSIS_TIMEOUT_S,
        "6 signal": SIGNAL_TIMEOUT_S,
        "6b decision chart": CHART_TIMEOUT_S,
        "7 order": ORDER_TIMEOUT_S,
    }


@pytest.fixture
def settings(tmp_path: Path) -> Iterator[Settings]:
    settings = load_settings({"TRADER_DATA_DIR": str(tmp_path)})
    init_database(settings)
    with session_scope(settings.database_url()) as session:
        save_definition(session, load_strategy_file(REPO / "examples/strategies/spy-sma-cross.yaml"))
    yield settings


def _signals(settings: Settings) -> list[tuple[str, str]]:
    with session_scope(settings.database_url()) as session:
        return [(str(s.action), s.reason) for s in session.scalars(select(Signal))]


@pytest.mark.prefect
@pytest.mark.slow
# pytest-timeout's "thread" method leaves SIGALRM free: Prefect then stops the task in the main thread with an
# alarm, as in a process worker (with the signal method taken, Prefect could only inject an exception after the
# blocked call returns).
@pytest.mark.timeout(240, method="thread")
def test_a_hung_step_ends_the_run_as_abstain_naming_step_and_limit(
    prefect_api: object, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.strategy import strategy_run
    from tasks.resolve_symbol import resolve_symbol

    monkeypatch.setattr(resolve_symbol, "timeout_seconds", 1.0)  # the production limit is 120 s
    spy = load_bars(SPY_FILE).frame
    broker = HangingQualifyBroker([stock("SPY", 756733)], {"SPY": spy})
    runtime = Runtime(settings, broker_factory=lambda: broker, clock=lambda: NOW)
    try:
        with use_runtime(runtime):
            result = strategy_run("spy-sma-cross")
    finally:
        runtime.close()
    assert result.action == "ABSTAIN"
    assert result.reason == "StepTimeoutError: step '1 resolve symbol' timed out after 1 s"
    assert _signals(settings) == [("ABSTAIN", result.reason)]


@pytest.mark.prefect
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_an_unbounded_stored_template_ends_the_run_as_abstain(prefect_api: object, settings: Settings) -> None:
    from flows.strategy import strategy_run

    # A body stored before templates were trial-rendered (the repository now refuses it), written as a row.
    body = "Analyse {{ symbol }}\n{% for a in 'x' * 100000 %}{% for b in 'x' * 100000 %}{% endfor %}{% endfor %}"
    with session_scope(settings.database_url()) as session:
        session.add(PromptTemplate(name="daily-analyst", version=1, body=body, body_sha256=body_sha256(body)))
    spy = load_bars(SPY_FILE).frame
    broker = MemoryBroker([stock("SPY", 756733)], {"SPY": spy})
    broker.clock.set(NOW)
    runtime = Runtime(settings, broker_factory=lambda: broker, clock=lambda: NOW)
    try:
        with use_runtime(runtime):
            result = strategy_run("spy-sma-cross")
    finally:
        runtime.close()
    assert result.action == "ABSTAIN"
    assert result.reason == (
        "InputError: prompt template daily-analyst v1: limit: render exceeded 2 s and was abandoned"
    )
    assert _signals(settings) == [("ABSTAIN", result.reason)]
