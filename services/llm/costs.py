"""What the LLM calls cost, grouped by strategy, model, UTC day or call: ``trader llm costs`` and step 5's artifact.

Read from the call records' cost columns (:class:`~services.llm.store.CallUsage`, the ``llm_calls`` table). A
record is a request to the model (it has a latency and is neither a cache hit nor the offline analyst), a cache hit,
an offline analysis, or a call refused before it was made (budget). Tokens are those the server reported (cache
hits not counted again); latency is the mean over requests.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal, get_args

from models.enums import AnalystKind
from services.llm.store import CallUsage

__all__ = ["GROUPINGS", "CostRow", "Grouping", "summarize"]

Grouping = Literal["strategy", "model", "day", "call"]
GROUPINGS: tuple[str, ...] = get_args(Grouping)


@dataclass(frozen=True)
class CostRow:
    """The calls of one strategy / model / UTC day / single call."""

    key: str
    calls: int
    requests: int
    cache_hits: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: Decimal
    mean_latency_ms: int | None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (cost as a string, exact)."""
        return {
            "key": self.key,
            "calls": self.calls,
            "requests": self.requests,
            "cache_hits": self.cache_hits,
            "errors": self.errors,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost_usd": str(self.cost_usd),
            "mean_latency_ms": self.mean_latency_ms,
        }


def _key(call: CallUsage, by: Grouping) -> str:
    if by == "strategy":
        return call.strategy_name or "(none)"
    if by == "model":
        return call.model
    if by == "day":
        return call.created_at.astimezone(dt.UTC).date().isoformat()
    return f"#{call.id} {call.created_at.isoformat(timespec='seconds')} {call.strategy_name or ''}".rstrip()


def _is_request(call: CallUsage) -> bool:
    return call.analyst is AnalystKind.LLM and not call.cached and call.latency_ms is not None


def summarize(calls: Iterable[CallUsage], by: Grouping) -> list[CostRow]:
    """One row per group, in key order (oldest first for calls and days); raise ``ValueError`` for an unknown ``by``."""
    if by not in GROUPINGS:
        raise ValueError(f"group by one of {', '.join(GROUPINGS)}, not {by!r}")
    groups: dict[str, list[CallUsage]] = {}
    for call in calls:
        groups.setdefault(_key(call, by), []).append(call)
    rows = []
    for key, members in groups.items():
        requests = [c for c in members if _is_request(c)]
        latencies = [c.latency_ms for c in requests if c.latency_ms is not None]
        rows.append(
            CostRow(
                key=key,
                calls=len(members),
                requests=len(requests),
                cache_hits=sum(1 for c in members if c.cached),
                errors=sum(1 for c in members if c.failed),
                prompt_tokens=sum(c.prompt_tokens or 0 for c in members if not c.cached),
                completion_tokens=sum(c.completion_tokens or 0 for c in members if not c.cached),
                cost_usd=sum((c.cost_usd for c in members), Decimal(0)),
                mean_latency_ms=round(sum(latencies) / len(latencies)) if latencies else None,
            )
        )
    return rows if by == "call" else sorted(rows, key=lambda r: r.key)
