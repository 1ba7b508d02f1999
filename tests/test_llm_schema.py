from __future__ import annotations

import json
from decimal import Decimal

import pytest

from services.llm.schema import ANALYSIS_JSON_SCHEMA, Analysis, AnalysisParseError, FailureKind, parse_analysis

GOOD = {
    "action": "SELL",
    "confidence": 0.61,
    "reasoning": "RSI 78 and close above the upper band.",
    "entry": 101.25,
    "stop": 104.1,
    "target": 95.0,
    "horizon_bars": 3,
}


def test_plain_json_parses_with_decimal_prices() -> None:
    result = parse_analysis(json.dumps(GOOD))
    assert result.action == "SELL" and result.confidence == pytest.approx(0.61)
    assert result.entry == Decimal("101.25") and isinstance(result.stop, Decimal) and result.stop == Decimal("104.1")


@pytest.mark.parametrize(
    "text",
    [
        "```json\n" + json.dumps(GOOD) + "\n```",
        "Here is my analysis:\n" + json.dumps(GOOD) + "\nGood luck.",
        json.dumps({**GOOD, "action": " sell "}),
    ],
)
def test_common_wrappings_are_tolerated(text: str) -> None:
    assert parse_analysis(text).action == "SELL"


@pytest.mark.parametrize(
    ("text", "kind", "fragment"),
    [
        ("", FailureKind.EMPTY, "no content"),
        ("   ", FailureKind.EMPTY, "no content"),
        ("BUY now!", FailureKind.INVALID_JSON, "Expecting value"),
        ('{"action": "BUY", ', FailureKind.INVALID_JSON, "line 1"),
        ("[1, 2]", FailureKind.OFF_SCHEMA, "expected a JSON object"),
        (json.dumps({**GOOD, "action": "SHORT"}), FailureKind.OFF_SCHEMA, "action"),
        (json.dumps({**GOOD, "confidence": 1.2}), FailureKind.OFF_SCHEMA, "confidence"),
        (json.dumps({**GOOD, "stop": -3}), FailureKind.OFF_SCHEMA, "stop"),
        (json.dumps({**GOOD, "horizon_bars": 0}), FailureKind.OFF_SCHEMA, "horizon_bars"),
        (json.dumps({**GOOD, "extra": 1}), FailureKind.OFF_SCHEMA, "extra"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "reasoning"}), FailureKind.OFF_SCHEMA, "reasoning"),
    ],
)
def test_bad_answers_raise_with_kind_and_reason(text: str, kind: FailureKind, fragment: str) -> None:
    with pytest.raises(AnalysisParseError) as err:
        parse_analysis(text)
    assert err.value.kind is kind and fragment in err.value.reason


def test_refusal_field_wins_over_content() -> None:
    with pytest.raises(AnalysisParseError) as err:
        parse_analysis(None, refusal="I cannot help with trading.")
    assert err.value.kind is FailureKind.REFUSAL and "cannot help" in err.value.reason


def test_json_schema_is_strict_mode_compatible_and_matches_the_model() -> None:
    schema = ANALYSIS_JSON_SCHEMA
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == set(schema["properties"]) == set(Analysis.model_fields)
    nullable = {k for k, v in schema["properties"].items() if "null" in v["type"]}
    assert nullable == {"entry", "stop", "target"}
