from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from models.enums import BarSize
from models.strategy import PromptRef
from services.bars.loader import load_bars
from services.errors import InputError
from services.indicators import compute_indicators
from services.llm.analyst import analyze, build_request
from services.llm.context import build_prompt_context, snapshot_from
from services.llm.prompts import SYSTEM_PROMPT, check_template, load_template, render_prompt, sample_context
from services.llm.store import InMemoryLlmCallStore
from services.settings import load_settings
from services.strategies import load_strategy_file
from tests.llm_server import LoopbackLLMServer, answer

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ROOT / "examples" / "prompts"
SPY_FILE = "yahoofinance-SPY-20080101-20180101.csv"
NOW = dt.datetime(2017, 12, 29, 21, 10, tzinfo=dt.UTC)


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
def test_shipped_template_renders_real_data(strategy: str) -> None:
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
    assert f"confidence >= {definition.rules.min_confidence}" in prompt.text


# Templates that do unbounded work. On main these hang (nested loops, big powers), end in MemoryError (doubling) or
# render tens of MB; here each is refused with a located "limit" problem before it allocates.
HOSTILE = {
    "nested loops": "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
    "integer power": "{{ 2 ** 100000000 }}",
    "power of a power": "{{ (10 ** 1000) ** 1000 }}",
    "string doubling": (
        "{% set ns = namespace(s='a') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}"
    ),
    "list doubling": (
        "{% set ns = namespace(s=[1]) %}{% for i in range(60) %}{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s }}"
    ),
    "string times": '{{ "a" * 50000000 }}',
    "list times": "{{ ([0] * 100000000) | length }}",
    "center filter": '{{ "a" | center(1000000000) }}',
    "ljust method": '{{ "a".ljust(1000000000) }}',
    "format width": '{{ "{:>999999999}".format(1) }}',
    "percent width": '{{ "%0999999999d" % 1 }}',
    "join": '{% set s = "a" * 100000 %}{{ ([s] * 1000) | join }}',
    "replace": '{% set s = "a" * 100000 %}{{ s.replace("a", "aaaaaaaaaa") }}',
    "output": '{% for i in range(100000) %}{{ "x" * 100 }}{% endfor %}',
    "recursion": "{% macro f(n) %}{{ f(n) }}{{ f(n) }}{% endmacro %}{{ f(1) }}",
}


@pytest.mark.parametrize("body", HOSTILE.values(), ids=HOSTILE.keys())
def test_unbounded_templates_are_refused_with_a_limit_problem(body: str) -> None:
    with pytest.raises(InputError) as err:
        render_prompt(body, {}, name="hostile.v1.j2", seconds=0.5)
    assert [p.location for p in err.value.problems] == ["limit"], err.value.summary()
    assert "prompt template hostile.v1.j2" in err.value.summary()


def test_a_render_past_its_deadline_is_abandoned_naming_the_bound() -> None:
    loop = HOSTILE["nested loops"]
    with pytest.raises(InputError, match=r"limit: render exceeded 0\.3 s and was abandoned"):
        render_prompt(loop, {}, seconds=0.3)


def test_output_cap_counts_while_rendering() -> None:
    body = "{% for i in range(50) %}{{ 'x' * 100 }}{% endfor %}"
    assert len(render_prompt(body, {}).text) == 5_000
    with pytest.raises(InputError, match=r"limit: output exceeded 4,000 characters"):
        render_prompt(body, {}, max_chars=4_000)


def test_bounded_sandbox_still_renders_ordinary_templates() -> None:
    body = (
        "{{ symbol ~ ' ok' }} {{ '{:,}'.format(50000000) }} {{ [1, 2] | join(',') }} "
        "{{ range(3) | map('string') | join('-') }} {{ 2 ** 10 }} {{ 'ab' * 3 }} {{ '%.2f' % 1.5 }}"
    )
    assert render_prompt(body, {"symbol": "SPY"}).text == "SPY ok 50,000,000 1,2 0-1-2 1024 ababab 1.50"


def test_sandbox_refuses_mutation_so_append_cannot_grow_a_value() -> None:
    with pytest.raises(InputError, match="sandbox"):
        render_prompt("{% set l = [] %}{% for i in range(10) %}{{ l.append(i) }}{% endfor %}", {})


def test_sample_context_has_the_keys_of_the_real_context() -> None:
    definition = load_strategy_file(ROOT / "examples" / "strategies" / "spy-sma-cross.yaml")
    frame = load_bars(ROOT / "data" / "samples" / "yahoofinance-SPY-20080101-20180101.csv").frame.tail(250)
    real = build_prompt_context(definition, compute_indicators(frame.reset_index(drop=True), definition.indicators))
    sample = sample_context()
    assert set(sample) == set(real)
    for key in ("returns", "range", "risk"):
        assert set(sample[key]) == set(real[key])
    assert set(sample["bars"][0]) == set(real["bars"][0])


def test_trial_render_refuses_bounds_and_syntax_but_not_strategy_specific_variables() -> None:
    check_template("RSI {{ indicators.rsi_7 }} for {{ symbol }}; {{ my_own_variable }}", name="ok")
    with pytest.raises(InputError, match="limit: "):
        check_template("{{ symbol }} " + HOSTILE["string times"], name="big")
    with pytest.raises(InputError, match="line 1"):
        check_template("{% if %}", name="broken")
    name, body = load_template(PROMPTS, PromptRef(template="daily-analyst", version=1))
    check_template(body, name=name)


@pytest.mark.parametrize("strategy", ["spy-sma-cross.yaml", "aapl-rsi-reversion.yaml"])
def test_the_api_key_reaches_the_auth_header_and_never_the_prompt(
    strategy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key lives in the environment and in the settings the very call that renders the prompt gets; it must
    go out as the bearer token (proof that it was there to leak) and nowhere in the prompt or the request body."""
    secret = "sk-never-in-a-prompt-42"
    monkeypatch.setenv("TRADER_LLM__API_KEY", secret)
    definition = load_strategy_file(ROOT / "examples" / "strategies" / strategy)
    data = ROOT / "data" / "samples" / ("AAPL.csv" if definition.symbol == "AAPL" else SPY_FILE)
    indicators = compute_indicators(load_bars(data).frame.tail(250).reset_index(drop=True), definition.indicators)
    name, body = load_template(PROMPTS, definition.prompt)
    request = build_request(definition, indicators, body, template_name=name)
    with LoopbackLLMServer() as server:
        server.enqueue(answer({"action": "HOLD", "confidence": 0.5, "reasoning": "flat"}))
        settings = load_settings({"TRADER_LLM__API_KEY": secret, "TRADER_LLM__BASE_URL": server.base_url})
        assert settings.llm.api_key is not None and settings.llm.api_key.get_secret_value() == secret
        outcome = analyze(request, settings=settings.llm, store=InMemoryLlmCallStore(), chart_png=None, now=NOW)
        [sent] = server.requests
    assert sent.headers["authorization"] == f"Bearer {secret}"
    assert outcome.prompt.text and secret not in outcome.prompt.text and secret not in outcome.prompt.system
    assert secret not in json.dumps(sent.body) and "api_key" not in json.dumps(sent.body).lower()
