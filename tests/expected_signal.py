"""The signal a strategy run must produce, computed in the test without the flow: fetch the same bars from the same
simulator with a second client, then validation, indicators, the offline analyst and the signal rules called
directly (``services.*``). A test pins a run's action and reason to this instead of accepting every action.

The request names its ``end`` (the market "now") explicitly, so it is not the flow's identical request (IB and the
simulator refuse identical historical requests within 15 s) while asking for the same window.
"""

from __future__ import annotations

from datetime import datetime

from models.strategy import StrategyDefinition
from services.bars.validation import validate_bars
from services.broker.ib_adapter import IBBroker
from services.broker.types import BarRequest
from services.db import session_scope
from services.indicators import compute_indicators
from services.llm.analyst import analyze, build_request
from services.llm.store import InMemoryLlmCallStore
from services.repositories import prompt_templates
from services.runtime import Runtime
from services.settings import Settings
from services.signals import Signal, generate_signal
from services.symbols import spec_of

EXPECTATION_CLIENT_ID = 97


def offline_signal(settings: Settings, definition: StrategyDefinition, sim_port: int, now: datetime) -> Signal:
    """The offline analyst's signal for ``definition`` at market time ``now`` on the bars the simulator serves."""
    assert settings.llm.resolved_provider == "offline", "the expectation is the offline analyst's"
    runtime = Runtime(
        settings,
        broker_factory=lambda: IBBroker.from_settings(settings.ib, port=sim_port, client_id=EXPECTATION_CLIENT_ID),
        clock=lambda: now,
    )
    try:
        broker = runtime.broker()
        contract = broker.qualify(spec_of(definition))
        request = BarRequest(
            bar_size=definition.bar_size,
            duration=definition.lookback,
            end=now,
            what_to_show=definition.what_to_show,
            use_rth=definition.use_rth,
        )
        frame = broker.historical_bars(contract, request)
    finally:
        runtime.close()
    bars = validate_bars(frame, bar_size=definition.bar_size, policy=settings.trading.bad_row_policy).frame
    indicators = compute_indicators(bars, definition.indicators)
    with session_scope(settings.database_url()) as session:
        template = prompt_templates.require(session, definition.prompt.template, definition.prompt.version)
        body, name = template.body, f"{template.name} v{template.version}"
    request_ = build_request(definition, indicators, body, template_name=name)
    outcome = analyze(request_, settings=settings.llm, store=InMemoryLlmCallStore(), chart_png=None, now=now)
    flagged = bool(bars["flagged"].iloc[-1]) if "flagged" in bars else False
    last = bars["timestamp"].iloc[-1].to_pydatetime()
    return generate_signal(outcome, definition, last_bar_time=last, now=now, flagged_latest=flagged)
