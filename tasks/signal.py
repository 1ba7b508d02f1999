"""Step 6: the signal (BUY / SELL / HOLD / ABSTAIN with a reason), stored and linked to the flow run."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from models.enums import AnalystKind, SignalAction
from models.strategy import StrategyDefinition
from services.db import session_scope
from services.events import publish
from services.llm.outcome import AnalysisOutcome
from services.repositories import prompt_templates, signals
from services.runtime import get_runtime
from services.signals import Signal, abstain_streak_event, generate_signal
from tasks.artifacts import artifact_key, publish_table
from tasks.market_data import MarketData
from tasks.run_log import step_log
from tasks.timeouts import SIGNAL_TIMEOUT_S


@dataclass(frozen=True)
class StoredSignal:
    id: int
    signal: Signal


def _flow_run_id() -> str | None:
    run_id = flow_run.get_id()
    return str(run_id) if run_id else None


@task(name="6 signal", cache_policy=NO_CACHE, timeout_seconds=SIGNAL_TIMEOUT_S)
def decide(
    definition: StrategyDefinition,
    data: MarketData | None,
    outcome: AnalysisOutcome | None,
    failure: str | None = None,
) -> StoredSignal:
    """Apply the strategy's rules; an earlier step's ``failure`` (or a missing input) gives ABSTAIN with its reason."""
    runtime = get_runtime()
    now = runtime.clock()
    bar_time = data.last_bar_time.to_pydatetime() if data is not None else now
    if failure is not None or data is None or outcome is None:
        analyst = outcome.analyst if outcome is not None else AnalystKind.OFFLINE
        signal = Signal(SignalAction.ABSTAIN, failure or "an earlier step produced no result", analyst, bar_time)
    else:
        signal = generate_signal(
            outcome, definition, last_bar_time=bar_time, now=now, flagged_latest=data.latest_flagged
        )
    with session_scope(runtime.database_url) as session:
        row = signals.record(
            session,
            strategy_name=definition.name,
            symbol=definition.symbol,
            bar_time=bar_time.astimezone(dt.UTC),
            action=signal.action,
            analyst=signal.analyst,
            reason=signal.reason,
            confidence=signal.confidence,
            entry=signal.entry,
            stop=signal.stop,
            target=signal.target,
            risk_reward=float(signal.risk_reward) if signal.risk_reward is not None else None,
            prompt_template_name=definition.prompt.template,
            prompt_template_version=definition.prompt.version,
            flow_run_id=_flow_run_id(),
            llm_call_id=outcome.call_id if outcome is not None else None,
        )
        streak = runtime.settings.notifications.abstain_streak
        recent = [r.action for r in signals.list_for_strategy(session, definition.name, limit=max(streak, 0) + 1)]
        told = abstain_streak_event(definition.name, definition.symbol, recent, streak, signal.reason)
        if told is not None:
            publish(told, session=session)
        template = prompt_templates.get(session, definition.prompt.template, definition.prompt.version)
        if template is not None and outcome is not None:
            prompt_templates.mark_used(session, template)
        signal_id = row.id
    publish_table(
        artifact_key(definition.name, "signal"),
        [
            {
                "strategy": definition.name,
                "symbol": definition.symbol,
                "bar (UTC)": bar_time.isoformat(),
                "action": signal.action.value,
                "confidence": signal.confidence,
                "entry": None if signal.entry is None else str(signal.entry),
                "stop": None if signal.stop is None else str(signal.stop),
                "target": None if signal.target is None else str(signal.target),
                "risk/reward": None if signal.risk_reward is None else str(signal.risk_reward),
                "analyst": signal.analyst.value,
                "decision policy": definition.decision.policy.value,
                "votes": outcome.votes_text if outcome is not None else None,
                "reason": signal.reason,
                "signal id": signal_id,
            }
        ],
        f"{definition.name}: {signal.action.value}",
    )
    levels = ", ".join(
        f"{name} {value}"
        for name, value in (
            ("confidence", None if signal.confidence is None else f"{signal.confidence:.2f}"),
            ("entry", signal.entry),
            ("stop", signal.stop),
            ("target", signal.target),
            ("R/R", signal.risk_reward),
        )
        if value is not None
    )
    step_log(
        "signal", f"{signal.action.value}" + (f" ({levels})" if levels else "") + f" id {signal_id}: {signal.reason}"
    )
    return StoredSignal(signal_id, signal)
