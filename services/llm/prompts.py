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
from jinja2.sandbox import SandboxedEnvironment

from models.strategy import PromptRef
from services.errors import InputError, Problem

__all__ = ["SYSTEM_PROMPT", "RenderedPrompt", "load_template", "render_prompt", "template_filename"]

SYSTEM_PROMPT: Final = (
    "You are a disciplined market analyst. You receive indicator values, recent bars and a chart image for one "
    "instrument. Answer with a single JSON object matching the given schema, nothing else. Use HOLD when the "
    "evidence is mixed. Prices are in the instrument's currency."
)

_ENV: Final = SandboxedEnvironment(
    undefined=StrictUndefined,
    autoescape=False,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)


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


def load_template(directory: Path, ref: PromptRef) -> tuple[str, str]:
    """Return ``(name, body)`` of the template file for ``ref`` in ``directory``; raise ``InputError`` if missing."""
    name = template_filename(ref)
    path = directory / name
    try:
        return name, path.read_text(encoding="utf-8")
    except FileNotFoundError:
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
    template_body: str, context: Mapping[str, Any], *, name: str = "<inline>", system: str = SYSTEM_PROMPT
) -> RenderedPrompt:
    """Render ``template_body`` with ``context``; raise ``InputError`` naming the template and the problem."""
    source = f"prompt template {name}"
    try:
        template = _compile(template_body)
    except TemplateSyntaxError as exc:
        raise InputError(source, [Problem(f"line {exc.lineno}", exc.message or str(exc))]) from None
    try:
        text = template.render(**dict(context))
    except UndefinedError as exc:
        # StrictUndefined says "'bars_summary' is undefined" or "'dict object' has no attribute 'x'".
        raise InputError(source, [Problem("variable", exc.message or str(exc))]) from None
    except SecurityError as exc:
        raise InputError(source, [Problem("sandbox", str(exc))]) from None
    except (TemplateError, TypeError, ValueError, ArithmeticError) as exc:
        raise InputError(source, [Problem("render", f"{type(exc).__name__}: {exc}")]) from None
    if not text.strip():
        raise InputError(source, "renders to an empty prompt")
    return RenderedPrompt(text=text, sha256=_digest(system, text), system=system, template=name)
