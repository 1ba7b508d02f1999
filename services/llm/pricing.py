"""Model prices in USD per 1M tokens, and the cost of one call as ``Decimal``.

Source: OpenAI's published list prices (https://openai.com/api/pricing, standard tier, text input /
output; image input is billed as input tokens and is already inside ``prompt_tokens``), as known on
2025-08-15. Prices change: check the page and update :data:`PRICES` (and the date) when they do.
Users extend or override the table with ``TRADER_LLM__PRICES`` (:func:`price_table`). A model found in
neither is charged at :data:`DEFAULT_PRICE` and the result says ``known=False`` so the cost is flagged as an
estimate. A local endpoint (``LLMSettings.is_local``: a compatible server without a key or on a loopback /
private address) costs 0 and is outside the budget (:func:`call_cost`).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Final

from services.settings import LLMSettings

__all__ = [
    "DEFAULT_PRICE",
    "PRICES",
    "PRICES_AS_OF",
    "Cost",
    "ModelPrice",
    "call_cost",
    "cost_usd",
    "estimate_cost",
    "price_for",
    "price_table",
]

PRICES_AS_OF: Final = "2025-08-15"
_MILLION: Final = Decimal(1_000_000)


@dataclass(frozen=True)
class ModelPrice:
    """USD per 1M input tokens and per 1M output tokens."""

    input_per_m: Decimal
    output_per_m: Decimal


def _p(inp: str, out: str) -> ModelPrice:
    return ModelPrice(Decimal(inp), Decimal(out))


PRICES: Final[dict[str, ModelPrice]] = {
    "gpt-4o": _p("2.50", "10.00"),
    "gpt-4o-mini": _p("0.15", "0.60"),
    "gpt-4.1": _p("2.00", "8.00"),
    "gpt-4.1-mini": _p("0.40", "1.60"),
    "gpt-4.1-nano": _p("0.10", "0.40"),
    "o4-mini": _p("1.10", "4.40"),
    "o3": _p("2.00", "8.00"),
    "gpt-5": _p("1.25", "10.00"),
    "gpt-5-mini": _p("0.25", "2.00"),
    "gpt-5-nano": _p("0.05", "0.40"),
}

# Deliberately on the expensive side, so an unknown model cannot quietly outspend the daily budget.
DEFAULT_PRICE: Final = _p("5.00", "15.00")


@dataclass(frozen=True)
class Cost:
    usd: Decimal
    known: bool  # False: the model is not in the table and the default price was used


def price_for(
    model: str, *, table: dict[str, ModelPrice] | None = None, default: ModelPrice = DEFAULT_PRICE
) -> tuple[ModelPrice, bool]:
    """Return ``(price, known)``: exact name, else the longest table name that prefixes it (dated snapshots)."""
    prices = PRICES if table is None else table
    name = model.strip().lower()
    if name in prices:
        return prices[name], True
    prefixes = [k for k in prices if name.startswith(k + "-")]
    if prefixes:
        return prices[max(prefixes, key=len)], True
    return default, False


def estimate_cost(
    model: str,
    prompt_tokens: int,
    completion_tokens: int,
    *,
    table: dict[str, ModelPrice] | None = None,
    default: ModelPrice = DEFAULT_PRICE,
) -> Cost:
    """Return the cost of a call and whether the model's price was known."""
    if prompt_tokens < 0 or completion_tokens < 0:
        raise ValueError("token counts cannot be negative")
    price, known = price_for(model, table=table, default=default)
    usd = (price.input_per_m * prompt_tokens + price.output_per_m * completion_tokens) / _MILLION
    return Cost(usd.quantize(Decimal("0.00000001")), known)


def cost_usd(
    model: str,
    prompt_tokens: int,
    completion_tokens: int,
    *,
    table: dict[str, ModelPrice] | None = None,
    default: ModelPrice = DEFAULT_PRICE,
) -> Decimal:
    """Return the USD cost of a call (8 decimal places, matching the DB column's scale)."""
    return estimate_cost(model, prompt_tokens, completion_tokens, table=table, default=default).usd


def price_table(settings: LLMSettings) -> dict[str, ModelPrice]:
    """:data:`PRICES` with the user's ``TRADER_LLM__PRICES`` entries added (theirs win)."""
    extra = {name: ModelPrice(p.input_per_m, p.output_per_m) for name, p in settings.prices.items()}
    return {**PRICES, **extra}


def call_cost(settings: LLMSettings, model: str, prompt_tokens: int, completion_tokens: int) -> Cost:
    """The cost of one call to the configured endpoint: 0 (and known) for a local endpoint, else the table's."""
    if settings.is_local:
        if prompt_tokens < 0 or completion_tokens < 0:
            raise ValueError("token counts cannot be negative")
        return Cost(Decimal(0), True)
    return estimate_cost(model, prompt_tokens, completion_tokens, table=price_table(settings))
