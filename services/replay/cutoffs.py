"""Training-data cutoffs per model: a replay decision dated before the cutoff may be contaminated.

A model trained on text up to its cutoff may "remember" what happened after a historical decision date, so a
replayed LLM decision dated before the cutoff is marked ``possibly_contaminated``. Source: the model pages of
OpenAI's platform documentation ("knowledge cutoff"), as known on 2025-08-15; update with new models. Unknown
models are treated as contaminated for every date up to :data:`UNKNOWN_CUTOFF` (the day the table was written),
the conservative choice.
"""

from __future__ import annotations

import datetime as dt
from typing import Final

__all__ = ["CUTOFFS", "UNKNOWN_CUTOFF", "cutoff_for", "possibly_contaminated"]

CUTOFFS: Final[dict[str, dt.date]] = {
    "gpt-4o": dt.date(2023, 10, 1),
    "gpt-4o-mini": dt.date(2023, 10, 1),
    "gpt-4.1": dt.date(2024, 6, 1),
    "gpt-4.1-mini": dt.date(2024, 6, 1),
    "gpt-4.1-nano": dt.date(2024, 6, 1),
    "o3": dt.date(2024, 6, 1),
    "o4-mini": dt.date(2024, 6, 1),
    "gpt-5": dt.date(2024, 10, 1),
    "gpt-5-mini": dt.date(2024, 6, 1),
    "gpt-5-nano": dt.date(2024, 6, 1),
}
UNKNOWN_CUTOFF: Final = dt.date(2025, 8, 15)


def cutoff_for(model: str) -> tuple[dt.date, bool]:
    """Return ``(cutoff, known)``: exact name, else the longest table name prefixing it (dated snapshots)."""
    name = model.strip().lower()
    if name in CUTOFFS:
        return CUTOFFS[name], True
    prefixes = [k for k in CUTOFFS if name.startswith(k + "-")]
    if prefixes:
        return CUTOFFS[max(prefixes, key=len)], True
    return UNKNOWN_CUTOFF, False


def possibly_contaminated(model: str, decision_date: dt.date) -> bool:
    """True when ``decision_date`` is before the model's training cutoff (it may know the outcome)."""
    return decision_date < cutoff_for(model)[0]
