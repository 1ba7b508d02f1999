from __future__ import annotations

from pathlib import Path

import pytest

from models.enums import BarSize
from models.strategy import PromptRef
from services.bars.loader import load_bars
from services.errors import InputError
from services.indicators import compute_indicators
from services.llm.context import build_prompt_context, snapshot_from
from services.llm.prompts import SYSTEM_PROMPT, load_template, render_prompt
from services.strategies import load_strategy_file

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ROOT / "examples" / "prompts"


def test_render_and_hash_depend_on_the_context() -> None:
    a = render_prompt("Analyse {{ symbol }}", {"symbol": "SPY"})
    b = render_prompt("Analyse {{ symbol }}", {"symbol": "AAPL"})
    assert a.text == "Analyse SPY" and a.system == SYSTEM_PROMPT
    assert len(a.sha256) == 64 and a.sha256 != b.sha256
    assert render_prompt("Analyse {{ symbol }}", {"symbol": "SPY"}).sha256 == a.sha256


def test_undefined_variable_names_template_and_variable() -> None:
    with pytest.raises(InputError) as err:
        render_prompt("RSI is {{ indicators.rsi_14 }} for {{ symbl }}", {"indicators": {"rsi_14": 50}}, name="x.v1.j2")
    text = str(err.value)
    assert "prompt template x.v1.j2" in text and "'symbl' is undefined" in text


def test_syntax_error_names_the_line() -> None:
    with pytest.raises(InputError, match=r"line 2"):
        render_prompt("ok\n{% for x in %}\n", {}, name="bad.v1.j2")


def test_sandbox_blocks_attribute_escapes() -> None:
    with pytest.raises(InputError, match=r"sandbox: .*unsafe"):
        render_prompt("{{ ''.__class__.__mro__[1].__subclasses__() }}", {})


def test_missing_template_file_lists_the_available_ones(tmp_path: Path) -> None:
    (tmp_path / "daily-analyst.v1.j2").write_text("x")
    with pytest.raises(InputError) as err:
        load_template(tmp_path, PromptRef(template="daily-analyst", version=2))
    assert "daily-analyst.v2.j2" in str(err.value) and "available: daily-analyst.v1.j2" in str(err.value)


@pytest.mark.parametrize("strategy", ["spy-sma-cross.yaml", "aapl-rsi-reversion.yaml"])
def test_shipped_template_renders_real_data_without_secrets(strategy: str, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "sk-never-in-a-prompt-42"
    monkeypatch.setenv("TRADER_LLM__API_KEY", secret)
    definition = load_strategy_file(ROOT / "examples" / "strategies" / strategy)
    data = (
        ROOT
        / "data"
        / "samples"
        / ("AAPL.csv" if definition.symbol == "AAPL" else "yahoofinance-SPY-20080101-20180101.csv")
    )
    frame = load_bars(data).frame.tail(250).reset_index(drop=True)
    indicators = compute_indicators(frame, definition.indicators)
    name, body = load_template(PROMPTS, definition.prompt)
    context = build_prompt_context(definition, indicators)
    prompt = render_prompt(body, context, name=name)
    snapshot = snapshot_from(indicators, symbol=definition.symbol, bar_size=BarSize.DAY_1)
    assert f"Analyse {definition.symbol}" in prompt.text
    assert f"Last close: {float(snapshot.last_close)}" in prompt.text
    assert prompt.text.count("\n| 20") == 10  # the last 10 bars table
    for column in indicators.column_names():
        assert f"- {column}: " in prompt.text
    assert secret not in prompt.text and "api_key" not in prompt.text.lower()
    assert f"confidence >= {definition.rules.min_confidence}" in prompt.text
