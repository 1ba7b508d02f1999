"""The analysis an analyst (LLM or offline) returns, its JSON schema, and a tolerant parser.

The model is asked for strict JSON (``response_format`` json_schema, strict mode). Strict mode needs every
property listed in ``required`` with ``additionalProperties: false``; optional values are ``null``-able
instead. Ranges (confidence 0..1, positive prices) are checked by pydantic after parsing, because strict
mode does not promise to enforce them.

:func:`parse_analysis` accepts what models commonly wrap around the JSON (Markdown code fences, a sentence
before or after the object) and raises :class:`AnalysisParseError` with a :class:`FailureKind` and a
reason otherwise, so a malformed answer becomes an ABSTAIN with that reason, never a crash.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from enum import StrEnum
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.errors import SkipError

__all__ = [
    "ANALYSIS_JSON_SCHEMA",
    "Analysis",
    "AnalysisParseError",
    "FailureKind",
    "parse_analysis",
    "response_format",
]

SCHEMA_NAME: Final = "trade_analysis"
MAX_REASONING_CHARS: Final = 4000


class FailureKind(StrEnum):
    """Why no usable analysis came back. Every kind turns into an ABSTAIN carrying it."""

    EMPTY = "empty"  # no content at all
    INVALID_JSON = "invalid_json"
    OFF_SCHEMA = "off_schema"
    REFUSAL = "refusal"
    TIMEOUT = "timeout"  # the endpoint kept timing out (after retries)
    TRANSIENT = "transient"  # 429 / 5xx / connection errors after retries
    HTTP_ERROR = "http_error"  # a non-retryable 4xx
    BUDGET = "budget"  # daily budget exhausted: no call made


class AnalysisParseError(SkipError):
    """The model's answer could not be used; ``kind`` says how, ``reason`` says what exactly."""

    def __init__(self, kind: FailureKind, reason: str):
        super().__init__(f"{kind.value}: {reason}")
        self.kind = kind
        self.reason = reason


class Analysis(BaseModel):
    """One analysis. Prices are in the instrument's currency; ``horizon_bars`` counts bars of the strategy's size."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    action: Literal["BUY", "SELL", "HOLD"]
    confidence: float = Field(ge=0, le=1)
    reasoning: str = Field(min_length=1, max_length=MAX_REASONING_CHARS)
    entry: Decimal | None = Field(default=None, gt=0)
    stop: Decimal | None = Field(default=None, gt=0)
    target: Decimal | None = Field(default=None, gt=0)
    horizon_bars: int = Field(ge=1, le=10_000)


def _nullable_number(description: str) -> dict[str, Any]:
    return {"type": ["number", "null"], "description": description}


ANALYSIS_JSON_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {
        "action": {"type": "string", "enum": ["BUY", "SELL", "HOLD"]},
        "confidence": {"type": "number", "description": "0 to 1"},
        "reasoning": {"type": "string", "description": "Short justification citing the indicators."},
        "entry": _nullable_number("Entry price, or null for the last close."),
        "stop": _nullable_number("Protective stop price, or null."),
        "target": _nullable_number("Profit target price, or null."),
        "horizon_bars": {"type": "integer", "description": "Expected holding period in bars (>= 1)."},
    },
    "required": ["action", "confidence", "reasoning", "entry", "stop", "target", "horizon_bars"],
    "additionalProperties": False,
}


def response_format() -> dict[str, Any]:
    """Return the ``response_format`` argument for ``chat.completions.create`` (json_schema, strict)."""
    return {
        "type": "json_schema",
        "json_schema": {"name": SCHEMA_NAME, "strict": True, "schema": ANALYSIS_JSON_SCHEMA},
    }


_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)


def _json_candidate(text: str) -> str:
    # Strip a Markdown fence, else cut from the first "{" to the last "}" (models like to add a sentence).
    fenced = _FENCE.search(text)
    if fenced is not None:
        return fenced.group(1).strip()
    start, end = text.find("{"), text.rfind("}")
    if start != -1 and end > start:
        return text[start : end + 1]
    return text


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{loc}: {err['msg']}")
    more = len(exc.errors()) - 5
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def parse_analysis(text: str | None, *, refusal: str | None = None) -> Analysis:
    """Parse a model answer into an :class:`Analysis`; raise :class:`AnalysisParseError` saying why not.

    ``refusal`` is the API's separate refusal field (structured outputs put a refusal there instead of content).
    """
    if refusal:
        raise AnalysisParseError(FailureKind.REFUSAL, f"model refused: {refusal.strip()[:300]}")
    if text is None or not text.strip():
        raise AnalysisParseError(FailureKind.EMPTY, "the model returned no content")
    candidate = _json_candidate(text.strip())
    try:
        data = json.loads(candidate, parse_float=Decimal)
    except json.JSONDecodeError as exc:
        raise AnalysisParseError(
            FailureKind.INVALID_JSON, f"{exc.msg} at line {exc.lineno} column {exc.colno}: {text.strip()[:120]!r}"
        ) from None
    if not isinstance(data, dict):
        raise AnalysisParseError(FailureKind.OFF_SCHEMA, f"expected a JSON object, got {type(data).__name__}")
    if "action" in data and isinstance(data["action"], str):
        data["action"] = data["action"].strip().upper()
    if isinstance(data.get("confidence"), Decimal):
        data["confidence"] = float(data["confidence"])
    try:
        return Analysis.model_validate(data)
    except ValidationError as exc:
        raise AnalysisParseError(FailureKind.OFF_SCHEMA, _describe(exc)) from None
