from __future__ import annotations

from decimal import Decimal

import pytest

from services.llm.pricing import DEFAULT_PRICE, ModelPrice, cost_usd, estimate_cost, price_for


def test_known_model_cost_is_exact_decimal() -> None:
    # gpt-4o: 2.50 in / 10.00 out per 1M tokens.
    assert cost_usd("gpt-4o", 1_234, 567) == Decimal("0.00875500")
    assert cost_usd("gpt-4o-mini", 1_000_000, 0) == Decimal("0.15")


def test_dated_snapshot_uses_the_longest_matching_name() -> None:
    price, known = price_for("gpt-4o-mini-2024-07-18")
    assert known and price == ModelPrice(Decimal("0.15"), Decimal("0.60"))


def test_unknown_model_uses_the_default_and_is_flagged() -> None:
    cost = estimate_cost("llava:13b", 1_000_000, 1_000_000)
    assert not cost.known and cost.usd == DEFAULT_PRICE.input_per_m + DEFAULT_PRICE.output_per_m
    custom = estimate_cost("llava:13b", 1_000_000, 0, default=ModelPrice(Decimal("0"), Decimal("0")))
    assert custom.usd == 0 and not custom.known


def test_negative_tokens_are_rejected() -> None:
    with pytest.raises(ValueError, match="negative"):
        cost_usd("gpt-4o", -1, 0)
