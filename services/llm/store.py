"""Where LLM calls are recorded: a Protocol, an in-memory store (tests, one-off runs) and a DB-backed store.

Every analysis writes one record: a model call (with tokens, cost, latency), a cache hit (``cached=True``,
cost 0), an offline run (``analyst=offline``, cost 0) or a call that was not made or failed (``error`` set).
``find_cached`` returns only records with a response and no error, so a malformed answer is never replayed.
``spent_since`` sums ``cost_usd`` of records created at or after an instant (the daily budgets: all strategies, or
one); ``usage_since`` returns their cost columns (:class:`CallUsage`, for ``services.llm.costs``).
"""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import TYPE_CHECKING, Literal, Protocol

from models.enums import AnalystKind

if TYPE_CHECKING:
    from sqlalchemy.engine import URL, Engine
    from sqlalchemy.orm import Session, sessionmaker

    from models.tables import LlmCall

__all__ = [
    "BudgetUse",
    "CallUsage",
    "DbLlmCallStore",
    "InMemoryLlmCallStore",
    "LlmCallRecord",
    "LlmCallStore",
    "budget_day",
    "budgets_today",
]


@dataclass(frozen=True)
class LlmCallRecord:
    """One row of the ``llm_calls`` table. ``cost_usd`` in USD (8 decimals); ``created_at`` timezone-aware UTC."""

    model: str
    analyst: AnalystKind
    prompt_sha256: str
    request_json: str
    created_at: dt.datetime
    response_text: str | None = None
    cache_key: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost_usd: Decimal = Decimal(0)
    latency_ms: int | None = None
    cached: bool = False
    error: str | None = None
    strategy_name: str | None = None
    id: int | None = None

    def __post_init__(self) -> None:
        if self.created_at.tzinfo is None:
            raise ValueError("created_at must be timezone-aware")
        if self.cost_usd < 0:
            raise ValueError("cost_usd must not be negative")


@dataclass(frozen=True)
class CallUsage:
    """The cost columns of one record (no request or response text)."""

    id: int
    created_at: dt.datetime
    model: str
    analyst: AnalystKind
    strategy_name: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    cost_usd: Decimal
    latency_ms: int | None
    cached: bool
    failed: bool  # the record has an error (a failed or refused call)

    @classmethod
    def of(cls, call: LlmCallRecord) -> CallUsage:
        return cls(
            id=call.id or 0,
            created_at=call.created_at,
            model=call.model,
            analyst=call.analyst,
            strategy_name=call.strategy_name,
            prompt_tokens=call.prompt_tokens,
            completion_tokens=call.completion_tokens,
            cost_usd=call.cost_usd,
            latency_ms=call.latency_ms,
            cached=call.cached,
            failed=call.error is not None,
        )


class LlmCallStore(Protocol):
    """Records LLM calls, finds cached responses and sums the spend."""

    def record(self, call: LlmCallRecord) -> int:
        """Store ``call`` and return its id."""
        ...

    def find_cached(self, cache_key: str) -> LlmCallRecord | None:
        """Return the newest successful record (response, no error) under ``cache_key``."""
        ...

    def spent_since(self, since: dt.datetime, *, strategy_name: str | None = None) -> Decimal:
        """Return the USD cost of records created at or after ``since`` (of one strategy when named)."""
        ...

    def usage_since(self, since: dt.datetime, *, strategy_name: str | None = None) -> list[CallUsage]:
        """Return the cost columns of records created at or after ``since``, oldest first (of one strategy)."""
        ...


class InMemoryLlmCallStore:
    """A thread-safe list of records. For tests and runs without a database."""

    def __init__(self) -> None:
        self._calls: list[LlmCallRecord] = []
        self._lock = threading.Lock()

    @property
    def calls(self) -> list[LlmCallRecord]:
        with self._lock:
            return list(self._calls)

    def record(self, call: LlmCallRecord) -> int:
        with self._lock:
            stored = replace(call, id=len(self._calls) + 1)
            self._calls.append(stored)
            return len(self._calls)

    def find_cached(self, cache_key: str) -> LlmCallRecord | None:
        with self._lock:
            hits = [
                c for c in self._calls if c.cache_key == cache_key and c.error is None and c.response_text is not None
            ]
        return max(hits, key=lambda c: (c.created_at, c.id or 0)) if hits else None

    def spent_since(self, since: dt.datetime, *, strategy_name: str | None = None) -> Decimal:
        return sum((c.cost_usd for c in self.usage_since(since, strategy_name=strategy_name)), Decimal(0))

    def usage_since(self, since: dt.datetime, *, strategy_name: str | None = None) -> list[CallUsage]:
        if since.tzinfo is None:
            raise ValueError("since must be timezone-aware")
        with self._lock:
            calls = [
                CallUsage.of(c)
                for c in self._calls
                if c.created_at >= since and (strategy_name is None or c.strategy_name == strategy_name)
            ]
        return sorted(calls, key=lambda c: (c.created_at, c.id))


class DbLlmCallStore:
    """The ``llm_calls`` table through ``services.repositories.llm_calls``; one committed unit of work per call.

    Each record commits on its own, so the spend is visible to the next budget check even when the rest of the
    run fails.
    """

    def __init__(self, target: Engine | sessionmaker[Session] | str | URL) -> None:
        self._target = target

    def record(self, call: LlmCallRecord) -> int:
        from services.db import session_scope
        from services.repositories import llm_calls

        with session_scope(self._target) as session:
            row = llm_calls.record(
                session,
                model=call.model,
                analyst=call.analyst,
                prompt_sha256=call.prompt_sha256,
                request_json=call.request_json,
                response_text=call.response_text,
                cache_key=call.cache_key,
                prompt_tokens=call.prompt_tokens,
                completion_tokens=call.completion_tokens,
                cost_usd=call.cost_usd,
                latency_ms=call.latency_ms,
                cached=call.cached,
                error=call.error,
                strategy_name=call.strategy_name,
                created_at=call.created_at,
            )
            return int(row.id)

    def find_cached(self, cache_key: str) -> LlmCallRecord | None:
        from services.db import session_scope
        from services.repositories import llm_calls

        with session_scope(self._target) as session:
            row = llm_calls.find_cached(session, cache_key)
            return None if row is None else _record_of(row)

    def spent_since(self, since: dt.datetime, *, strategy_name: str | None = None) -> Decimal:
        from services.db import session_scope
        from services.repositories import llm_calls

        with session_scope(self._target) as session:
            return llm_calls.spent_since(session, since, strategy_name=strategy_name)

    def usage_since(self, since: dt.datetime, *, strategy_name: str | None = None) -> list[CallUsage]:
        from services.db import session_scope
        from services.repositories import llm_calls

        with session_scope(self._target) as session:
            rows = llm_calls.usage_since(session, since, strategy_name=strategy_name)
            return [
                CallUsage(
                    **r
                    | {
                        "analyst": AnalystKind(r["analyst"]),
                        "cost_usd": Decimal(r["cost_usd"]),
                        "cached": bool(r["cached"]),
                        "failed": bool(r["failed"]),
                    }
                )
                for r in rows
            ]


def budget_day(now: dt.datetime) -> dt.datetime:
    """00:00 UTC of ``now``: the day the LLM budgets count (global and per strategy)."""
    return now.astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)


@dataclass(frozen=True)
class BudgetUse:
    """Today's spend against one daily budget: the global one, or a strategy's own ``llm.daily_budget_usd``."""

    scope: Literal["global", "strategy"]
    spent: Decimal
    limit: Decimal


def budgets_today(
    store: LlmCallStore, now: dt.datetime, *, daily_budget: Decimal, strategy_name: str, strategy_budget: Decimal | None
) -> list[BudgetUse]:
    """The global budget's use today (UTC), then the strategy's when it sets one."""
    day = budget_day(now)
    uses = [BudgetUse("global", store.spent_since(day), daily_budget)]
    if strategy_budget is not None:
        uses.append(BudgetUse("strategy", store.spent_since(day, strategy_name=strategy_name), strategy_budget))
    return uses


def _record_of(row: LlmCall) -> LlmCallRecord:
    return LlmCallRecord(
        id=row.id,
        model=row.model,
        analyst=AnalystKind(row.analyst),
        prompt_sha256=row.prompt_sha256,
        request_json=row.request_json,
        created_at=row.created_at,
        response_text=row.response_text,
        cache_key=row.cache_key,
        prompt_tokens=row.prompt_tokens,
        completion_tokens=row.completion_tokens,
        cost_usd=row.cost_usd,
        latency_ms=row.latency_ms,
        cached=row.cached,
        error=row.error,
        strategy_name=row.strategy_name,
    )
