"""Signals: the stored outcome of each strategy run."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.enums import AnalystKind, SignalAction
from models.tables import Signal, Strategy
from services.errors import Problem
from services.repositories._common import check_aware, check_decimal, check_text, raise_problems

_SOURCE = "signal"


def record(
    session: Session,
    *,
    strategy_name: str,
    symbol: str,
    bar_time: dt.datetime,
    action: SignalAction | str,
    analyst: AnalystKind | str,
    reason: str = "",
    confidence: float | None = None,
    entry: Decimal | None = None,
    stop: Decimal | None = None,
    target: Decimal | None = None,
    risk_reward: float | None = None,
    strategy_id: int | None = None,
    prompt_template_name: str | None = None,
    prompt_template_version: int | None = None,
    flow_run_id: str | None = None,
    llm_call_id: int | None = None,
    details: Mapping[str, Any] | None = None,
) -> Signal:
    """Store a signal. ``strategy_id`` is looked up by name when not given. ABSTAIN needs a reason."""
    problems: list[Problem] = []
    check_text(problems, "strategy_name", strategy_name, max_len=128)
    check_text(problems, "symbol", symbol, max_len=32)
    check_aware(problems, "bar_time", bar_time)
    try:
        action = SignalAction(action)
    except ValueError:
        problems.append(Problem("action", f"{action!r} is not one of {', '.join(a.value for a in SignalAction)}"))
    try:
        analyst = AnalystKind(analyst)
    except ValueError:
        problems.append(Problem("analyst", f"{analyst!r} is not one of {', '.join(a.value for a in AnalystKind)}"))
    if action == SignalAction.ABSTAIN and not reason.strip():
        problems.append(Problem("reason", "ABSTAIN must carry a reason"))
    if confidence is not None and not (math.isfinite(confidence) and 0.0 <= confidence <= 1.0):
        problems.append(Problem("confidence", f"must be within [0, 1], got {confidence!r}"))
    if risk_reward is not None and not math.isfinite(risk_reward):
        problems.append(Problem("risk_reward", f"must be finite, got {risk_reward!r}"))
    prices = {
        name: check_decimal(problems, name, value)
        for name, value in (("entry", entry), ("stop", stop), ("target", target))
    }
    for name, value in prices.items():
        if value is not None and value <= 0:
            problems.append(Problem(name, f"must be positive, got {value}"))
    raise_problems(f"{_SOURCE} for {strategy_name!r}", problems)

    if strategy_id is None:
        strategy_id = session.scalar(select(Strategy.id).where(Strategy.name == strategy_name))
    row = Signal(
        strategy_id=strategy_id,
        strategy_name=strategy_name,
        symbol=symbol.strip().upper(),
        bar_time=bar_time.astimezone(dt.UTC),
        action=action,
        analyst=analyst,
        reason=reason,
        confidence=confidence,
        entry=prices["entry"],
        stop=prices["stop"],
        target=prices["target"],
        risk_reward=risk_reward,
        prompt_template_name=prompt_template_name,
        prompt_template_version=prompt_template_version,
        flow_run_id=flow_run_id,
        llm_call_id=llm_call_id,
        details=dict(details or {}),
    )
    session.add(row)
    session.flush()
    return row


def list_for_strategy(
    session: Session, strategy_name: str, *, since: dt.datetime | None = None, limit: int = 100
) -> Sequence[Signal]:
    """Return the strategy's signals, newest bar first (at most ``limit``; from ``since`` on when given)."""
    problems: list[Problem] = []
    check_aware(problems, "since", since)
    if limit < 1:
        problems.append(Problem("limit", "must be >= 1"))
    raise_problems(_SOURCE, problems)
    query = select(Signal).where(Signal.strategy_name == strategy_name)
    if since is not None:
        query = query.where(Signal.bar_time >= since)
    return session.scalars(query.order_by(Signal.bar_time.desc(), Signal.id.desc()).limit(limit)).all()


def latest_for_strategy(session: Session, strategy_name: str) -> Signal | None:
    """Return the strategy's newest signal, or ``None``."""
    found = list_for_strategy(session, strategy_name, limit=1)
    return found[0] if found else None
