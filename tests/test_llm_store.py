"""The call stores: the in-memory one and the DB-backed one (real SQLite / PostgreSQL via conftest's db_url)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from models.enums import AnalystKind
from services.llm.store import DbLlmCallStore, InMemoryLlmCallStore, LlmCallRecord, LlmCallStore

T0 = dt.datetime(2024, 5, 6, 12, 0, tzinfo=dt.UTC)


def call(**kw: object) -> LlmCallRecord:
    values: dict[str, object] = {
        "model": "gpt-4o-mini",
        "analyst": AnalystKind.LLM,
        "prompt_sha256": "a" * 64,
        "request_json": "{}",
        "created_at": T0,
        "response_text": '{"action": "HOLD"}',
        "cache_key": "k1",
        "cost_usd": Decimal("0.00021"),
        "prompt_tokens": 1000,
        "completion_tokens": 100,
        "latency_ms": 850,
    }
    values.update(kw)
    return LlmCallRecord(**values)  # type: ignore[arg-type]


def exercise(store: LlmCallStore) -> None:
    store.record(call(created_at=T0 - dt.timedelta(days=1), cost_usd=Decimal("1.5"), cache_key="old"))
    store.record(call(cost_usd=Decimal("0.00021")))
    store.record(call(cache_key="k2", error="invalid_json: nope", cost_usd=Decimal("0.0001")))
    store.record(call(created_at=T0 + dt.timedelta(minutes=5), cached=True, cost_usd=Decimal(0), response_text="new"))
    assert store.spent_since(T0.replace(hour=0)) == Decimal("0.00031")
    assert store.spent_since(T0 - dt.timedelta(days=2)) == Decimal("1.50031")
    hit = store.find_cached("k1")
    assert hit is not None and hit.response_text == "new" and hit.created_at == T0 + dt.timedelta(minutes=5)
    assert hit.cost_usd == 0 and hit.analyst is AnalystKind.LLM
    assert store.find_cached("k2") is None  # errors are never replayed
    assert store.find_cached("missing") is None


def test_in_memory_store() -> None:
    exercise(InMemoryLlmCallStore())


def test_db_store_has_the_same_semantics(db_url: str) -> None:
    exercise(DbLlmCallStore(db_url))


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        call(created_at=dt.datetime(2024, 5, 6))
    with pytest.raises(ValueError, match="timezone-aware"):
        InMemoryLlmCallStore().spent_since(dt.datetime(2024, 5, 6))
