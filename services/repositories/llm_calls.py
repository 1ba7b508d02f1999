"""LLM calls: one row per model request or cache hit, with tokens, latency and cost in USD."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models.enums import AnalystKind
from models.tables import LlmCall
from services.errors import Problem
from services.repositories._common import check_aware, check_decimal, check_text, raise_problems, require_aware

_SOURCE = "llm call"


def record(
    session: Session,
    *,
    model: str,
    analyst: AnalystKind | str,
    prompt_sha256: str,
    request_json: str,
    response_text: str | None = None,
    cache_key: str | None = None,
    prompt_tokens: int | None = None,
    completion_tokens: int | None = None,
    cost_usd: Decimal = Decimal(0),
    latency_ms: int | None = None,
    cached: bool = False,
    error: str | None = None,
    strategy_name: str | None = None,
    created_at: dt.datetime | None = None,
) -> LlmCall:
    """Store one call. ``cost_usd`` must be a ``Decimal`` with at most 8 decimal places."""
    problems: list[Problem] = []
    check_text(problems, "model", model, max_len=128)
    check_text(problems, "prompt_sha256", prompt_sha256, max_len=64)
    try:
        analyst = AnalystKind(analyst)
    except ValueError:
        problems.append(Problem("analyst", f"{analyst!r} is not one of {', '.join(a.value for a in AnalystKind)}"))
    cost = check_decimal(problems, "cost_usd", cost_usd)
    if cost is not None and cost < 0:
        problems.append(Problem("cost_usd", "must not be negative"))
    for name, value in (
        ("prompt_tokens", prompt_tokens),
        ("completion_tokens", completion_tokens),
        ("latency_ms", latency_ms),
    ):
        if value is not None and value < 0:
            problems.append(Problem(name, "must not be negative"))
    if cache_key is not None and len(cache_key) > 128:
        problems.append(Problem("cache_key", "longer than 128 characters"))
    check_aware(problems, "created_at", created_at)
    raise_problems(_SOURCE, problems)

    row = LlmCall(
        model=model,
        analyst=analyst,
        prompt_sha256=prompt_sha256,
        request_json=request_json,
        response_text=response_text,
        cache_key=cache_key,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        cost_usd=cost if cost is not None else Decimal(0),
        latency_ms=latency_ms,
        cached=cached,
        error=error,
        strategy_name=strategy_name,
    )
    if created_at is not None:
        row.created_at = created_at.astimezone(dt.UTC)
    session.add(row)
    session.flush()
    return row


def find_cached(session: Session, cache_key: str) -> LlmCall | None:
    """Return the newest successful call (a response, no error) stored under ``cache_key``, or ``None``."""
    return session.scalars(
        select(LlmCall)
        .where(LlmCall.cache_key == cache_key, LlmCall.error.is_(None), LlmCall.response_text.is_not(None))
        .order_by(LlmCall.created_at.desc(), LlmCall.id.desc())
        .limit(1)
    ).one_or_none()


def spent_since(session: Session, since: dt.datetime, *, strategy_name: str | None = None) -> Decimal:
    """Return the USD cost of calls created at or after ``since`` (``Decimal("0")`` when none), optionally of one
    strategy only."""
    since = require_aware(_SOURCE, "since", since)
    query = select(func.sum(LlmCall.cost_usd)).where(LlmCall.created_at >= since)
    if strategy_name is not None:
        query = query.where(LlmCall.strategy_name == strategy_name)
    total = session.scalar(query)
    return Decimal(0) if total is None else Decimal(total)


USAGE_COLUMNS = (
    LlmCall.id,
    LlmCall.created_at,
    LlmCall.model,
    LlmCall.analyst,
    LlmCall.strategy_name,
    LlmCall.prompt_tokens,
    LlmCall.completion_tokens,
    LlmCall.cost_usd,
    LlmCall.latency_ms,
    LlmCall.cached,
    LlmCall.error.is_not(None).label("failed"),
)


def usage_since(session: Session, since: dt.datetime, *, strategy_name: str | None = None) -> list[dict[str, Any]]:
    """The cost columns (:data:`USAGE_COLUMNS`, by name; no request or response text) of the calls created at or
    after ``since``, oldest first, optionally of one strategy only."""
    since = require_aware(_SOURCE, "since", since)
    query = select(*USAGE_COLUMNS).where(LlmCall.created_at >= since).order_by(LlmCall.created_at, LlmCall.id)
    if strategy_name is not None:
        query = query.where(LlmCall.strategy_name == strategy_name)
    return [dict(row) for row in session.execute(query).mappings()]


def recent(session: Session, *, limit: int = 50, strategy_name: str | None = None) -> Sequence[LlmCall]:
    """Return the newest calls first, optionally for one strategy."""
    query = select(LlmCall).order_by(LlmCall.created_at.desc(), LlmCall.id.desc()).limit(limit)
    if strategy_name is not None:
        query = query.where(LlmCall.strategy_name == strategy_name)
    return session.scalars(query).all()
