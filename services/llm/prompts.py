"""Prompt templates: Jinja2 in a sandbox with ``StrictUndefined``, rendered to text plus its sha256.

Templates live as files named ``<template>.v<version>.j2`` (see ``examples/prompts/``), addressed by a
strategy's ``PromptRef``. Rendering is sandboxed (a template cannot call arbitrary methods or reach
attributes like ``__class__``) and strict (a misspelt variable is an error, not an empty string). Every
template problem is an :class:`~services.errors.InputError` naming the template and the variable or line.

The context (see :mod:`services.llm.context`) holds market data, indicator values and risk settings only;
no setting, key or URL is ever put into it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Final

from jinja2 import StrictUndefined, Template, TemplateError, TemplateSyntaxError, UndefinedError
from jinja2.exceptions import SecurityError

from models.strategy import PromptRef
from services.errors import InputError, Problem
from services.files import MAX_PROMPT_FILE_BYTES, read_text_capped
from services.llm.sandbox import MAX_PROMPT_CHARS, MAX_RENDER_SECONDS, BoundedSandbox, RenderLimitError, render_bounded

__all__ = [
    "SYSTEM_PROMPT",
    "RenderedPrompt",
    "check_template",
    "load_template",
    "read_prompt_file",
    "render_prompt",
    "sample_context",
    "template_filename",
    "with_timeframe_sections",
]

SYSTEM_PROMPT: Final = (
    "You are a disciplined market analyst. You receive indicator values, recent bars and a chart image for one "
    "instrument. Answer with a single JSON object matching the given schema, nothing else. Use HOLD when the "
    "evidence is mixed. Prices are in the instrument's currency."
)

_ENV: Final = BoundedSandbox(
    undefined=StrictUndefined,
    autoescape=False,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)


# One section per higher timeframe, appended to a template that does not place ``timeframes`` itself.
TIMEFRAME_SECTION: Final = """
Higher timeframes (context for the trend; the answer above is still about {{ bar_size }} bars):
{% for tf in timeframes %}

Higher timeframe {{ tf.bar_size }} (context; the chart's "{{ tf.bar_size }}" pane), as of {{ tf.as_of }}: \
last close {{ tf.last_close }}.
{% if tf.flagged_count %}
Note: {{ tf.flagged_count }} {{ tf.bar_size }} bar(s) failed validation and were left out.
{% endif %}
Returns: 1 bar {{ tf.returns["1_bars_pct"] if tf.returns["1_bars_pct"] is not none else "n/a" }} %, \
5 bars {{ tf.returns["5_bars_pct"] if tf.returns["5_bars_pct"] is not none else "n/a" }} %, \
20 bars {{ tf.returns["20_bars_pct"] if tf.returns["20_bars_pct"] is not none else "n/a" }} %.
Range over the last {{ tf.range.bars }} bars: low {{ tf.range.low }}, high {{ tf.range.high }}; \
the close sits at {{ tf.range.position_pct if tf.range.position_pct is not none else "n/a" }} % of that range.
Indicators ({{ tf.bar_size }}, newest bar):
{% for name, value in tf.indicators | dictsort %}
- {{ name }}: {{ value if value is not none else "not available yet" }}
{% endfor %}
Last {{ tf.bars | length }} bars of {{ tf.bar_size }} (oldest first):
| time | open | high | low | close | volume |
|---|---|---|---|---|---|
{% for bar in tf.bars %}
| {{ bar.time }} | {{ bar.open }} | {{ bar.high }} | {{ bar.low }} | {{ bar.close }} | \
{{ bar.volume if bar.volume is not none else "" }} |
{% endfor %}
{% endfor %}
"""


def with_timeframe_sections(template_body: str, context: Mapping[str, Any]) -> str:
    """Return the body with :data:`TIMEFRAME_SECTION` appended when the context has higher timeframes and the
    template does not use ``timeframes`` itself; otherwise the body unchanged (single-timeframe prompts are
    exactly what the template renders)."""
    if not context.get("timeframes") or "timeframes" in template_body:
        return template_body
    return template_body.rstrip("\n") + "\n" + TIMEFRAME_SECTION


@dataclass(frozen=True)
class RenderedPrompt:
    """A rendered prompt. ``sha256`` covers the system prompt and the text (what the model sees)."""

    text: str
    sha256: str
    system: str = SYSTEM_PROMPT
    template: str = "<inline>"


def template_filename(ref: PromptRef) -> str:
    """Return the file name of a prompt reference, e.g. ``daily-analyst.v1.j2``."""
    return f"{ref.template}.v{ref.version}.j2"


def read_prompt_file(path: Path) -> str:
    """Return the text of a template file (at most :data:`~services.files.MAX_PROMPT_FILE_BYTES`); raise InputError."""
    return read_text_capped(path, MAX_PROMPT_FILE_BYTES, what="a prompt template")


def load_template(directory: Path, ref: PromptRef) -> tuple[str, str]:
    """Return ``(name, body)`` of the template file for ``ref`` in ``directory``; raise ``InputError`` if missing."""
    name = template_filename(ref)
    path = directory / name
    try:
        return name, read_prompt_file(path)
    except InputError:
        if path.exists():
            raise
        available = sorted(p.name for p in directory.glob("*.j2")) if directory.is_dir() else []
        raise InputError(
            f"prompt template {name}", f"no file {path} (available: {', '.join(available) or 'none'})"
        ) from None


@lru_cache(maxsize=64)
def _compile(body: str) -> Template:
    # Compiling costs ~10 ms; the body (not the name) is the key, so an edited file is recompiled.
    return _ENV.from_string(body)


def _digest(system: str, text: str) -> str:
    return hashlib.sha256(f"{system}\n\x00\n{text}".encode()).hexdigest()


def render_prompt(
    template_body: str,
    context: Mapping[str, Any],
    *,
    name: str = "<inline>",
    system: str = SYSTEM_PROMPT,
    max_chars: int = MAX_PROMPT_CHARS,
    seconds: float = MAX_RENDER_SECONDS,
) -> RenderedPrompt:
    """Render ``template_body`` with ``context`` within ``max_chars`` characters and ``seconds``.

    Raise ``InputError`` naming the template and the problem; a breached bound is the problem ``limit``.
    """
    source = f"prompt template {name}"
    try:
        template = _compile(template_body)
    except TemplateSyntaxError as exc:
        raise InputError(source, [Problem(f"line {exc.lineno}", exc.message or str(exc))]) from None
    try:
        text = render_bounded(template, context, max_chars=max_chars, seconds=seconds)
    except RenderLimitError as exc:
        raise InputError(source, [Problem("limit", str(exc))]) from None
    except UndefinedError as exc:
        # StrictUndefined says "'bars_summary' is undefined" or "'dict object' has no attribute 'x'".
        raise InputError(source, [Problem("variable", exc.message or str(exc))]) from None
    except SecurityError as exc:
        raise InputError(source, [Problem("sandbox", str(exc))]) from None
    except RecursionError:
        raise InputError(source, [Problem("limit", "recursion too deep")]) from None
    except MemoryError:
        raise InputError(source, [Problem("limit", "ran out of memory")]) from None
    except (TemplateError, TypeError, ValueError, ArithmeticError) as exc:
        raise InputError(source, [Problem("render", f"{type(exc).__name__}: {exc}")]) from None
    if not text.strip():
        raise InputError(source, "renders to an empty prompt")
    return RenderedPrompt(text=text, sha256=_digest(system, text), system=system, template=name)


class _SampleIndicators(dict[str, float]):
    # Strategies name their own indicator columns; any name a template asks for gets a sample value.
    def __missing__(self, key: str) -> float:
        return 50.0


def sample_context() -> dict[str, Any]:
    """A context shaped like :func:`services.llm.context.build_prompt_context` with sample values (trial renders)."""
    bar = {"time": "2026-01-02", "open": 100.0, "high": 101.5, "low": 99.5, "close": 101.0, "volume": 1_000_000}
    return {
        "strategy": "sample-strategy",
        "description": "sample description",
        "symbol": "SPY",
        "currency": "USD",
        "bar_size": "1 day",
        "as_of": "2026-01-02",
        "last_close": 101.0,
        "bars": [dict(bar) for _ in range(10)],
        "bar_count": 250,
        "flagged_count": 1,
        "returns": {"1_bars_pct": 0.5, "5_bars_pct": -1.2, "20_bars_pct": 3.4},
        "range": {"high": 110.0, "low": 90.0, "position_pct": 55.0, "bars": 250},
        "indicators": _SampleIndicators({"sma_20": 100.5, "rsi_14": 55.0}),
        "timeframes": [
            {
                "bar_size": "1 week",
                "as_of": "2025-12-29",
                "last_close": 101.0,
                "bars": [dict(bar) for _ in range(5)],
                "bar_count": 52,
                "flagged_count": 0,
                "returns": {"1_bars_pct": 1.0, "5_bars_pct": 2.0, "20_bars_pct": 5.0},
                "range": {"high": 110.0, "low": 85.0, "position_pct": 64.0, "bars": 52},
                "indicators": _SampleIndicators({"sma_20": 98.0, "rsi_14": 60.0}),
            }
        ],
        "risk": {
            "stop_loss_pct": "2",
            "take_profit_pct": "4",
            "allow_short": False,
            "min_confidence": "0.55",
            "min_risk_reward": "1.5",
        },
    }


def check_template(body: str, *, name: str) -> None:
    """Trial-render ``body`` with :func:`sample_context` before it is stored; raise ``InputError`` on a problem.

    Syntax errors and breached bounds (size, time) are problems. A variable the sample context lacks is not: the
    real context depends on the strategy, and the render at run time is strict (and bounded) anyway.
    """
    try:
        render_prompt(body, sample_context(), name=name)
    except InputError as exc:
        wanted = [p for p in exc.problems if p.location.startswith("line ") or p.location == "limit"]
        if wanted:
            raise InputError(exc.source, wanted) from None
