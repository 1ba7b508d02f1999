"""A Jinja2 sandbox that bounds what a template can make: output size, value sizes and wall time.

Jinja2's :class:`~jinja2.sandbox.SandboxedEnvironment` stops attribute escapes but not unbounded work: nested
``range`` loops run for hours, ``2 ** 10 ** 9`` or ``"a" * 10 ** 9`` allocate gigabytes, a string doubled in a
loop ends in ``MemoryError``. Here every render has a budget:

* **Output**: :func:`render_bounded` renders through ``generate()`` and counts; more than ``max_chars``
  characters abandon the render.
* **Values**: the operators and calls that multiply size (``*``, ``**``, ``+``, ``%``, ``~``, ``join``,
  ``replace``, ``center``/``ljust``/``rjust``/``zfill``/``indent``/``wordwrap`` widths, ``str.format`` widths) are
  checked *before* they run, so nothing larger than the budget is ever allocated; every call's and filter's
  result is checked after. Integers are capped at :data:`MAX_INT_BITS` bits. ``lipsum`` is removed.
* **Time**: a deadline is checked cooperatively on every loop iteration (a check is compiled into each ``for``
  body), every call, filter, attribute and item access, and every intercepted operator. Templates have no
  other way to loop or recurse, so CPU-bound work stops within one step of the deadline. (A thread cannot be
  killed; these checks run in the rendering thread itself.) The deadline applies to renders through
  :func:`render_bounded`; a direct ``Template.render`` gets the size checks only.

Mutation of lists and dicts is refused (``ImmutableSandboxedEnvironment``), so ``append`` cannot grow a value
behind the checks. Every breach raises :class:`RenderLimitError`.
"""

from __future__ import annotations

import functools
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Final

from jinja2 import TemplateError, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import _PassArg

__all__ = [
    "MAX_INT_BITS",
    "MAX_PROMPT_CHARS",
    "MAX_RENDER_SECONDS",
    "BoundedSandbox",
    "RenderLimitError",
    "render_bounded",
]

MAX_PROMPT_CHARS: Final = 200_000  # ~50k tokens; the shipped template renders ~3 kB
MAX_RENDER_SECONDS: Final = 2.0  # the shipped template renders in a few ms
MAX_INT_BITS: Final = 4_096  # ~1,233 decimal digits

# Format widths/precisions of 7+ digits ("%0999999999d", "{:>9999999}") would allocate that many characters.
_HUGE_FORMAT_NUMBER: Final = re.compile(r"\d{7,}")
# Filters whose extra integer argument is a width or a count of output pieces.
_WIDTH_FILTERS: Final = frozenset({"center", "indent", "wordwrap", "batch", "slice", "truncate"})
_WIDTH_METHODS: Final = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs"})


class RenderLimitError(TemplateError):
    """A render exceeded its output, value-size or time budget."""


@dataclass
class _Budget:
    max_chars: int
    deadline: float
    seconds: float

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise RenderLimitError(f"render exceeded {self.seconds:g} s and was abandoned")


_BUDGET: ContextVar[_Budget | None] = ContextVar("prompt_render_budget", default=None)


def _budget() -> _Budget:
    budget = _BUDGET.get()
    if budget is None:  # rendered outside render_bounded (a direct Template.render): the size checks only
        return _Budget(MAX_PROMPT_CHARS, math.inf, math.inf)
    return budget


def _size(value: Any) -> int | None:
    return len(value) if isinstance(value, str | list | tuple | dict | set | frozenset | bytes) else None


def _check_size(value: Any, what: str) -> Any:
    size = _size(value)
    limit = _budget().max_chars
    if size is not None and size > limit:
        raise RenderLimitError(f"{what} would make a value of {size:,} items/characters (limit {limit:,})")
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > MAX_INT_BITS:
        raise RenderLimitError(f"{what} would make an integer of {value.bit_length():,} bits (limit {MAX_INT_BITS:,})")
    return value


def _refuse_growth(what: str, size: float) -> None:
    limit = _budget().max_chars
    if size > limit:
        raise RenderLimitError(f"{what} would make a value of ~{size:,.0f} items/characters (limit {limit:,})")


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _check_binop(op: str, left: Any, right: Any) -> None:
    li, ri = _int(left), _int(right)
    if op == "**" and li is not None and ri is not None and ri > 0 and abs(li) > 1:
        bits = ri * math.log2(abs(li))
        if bits > MAX_INT_BITS:
            raise RenderLimitError(f"an integer power would have ~{bits:,.0f} bits (limit {MAX_INT_BITS:,})")
    elif op == "*":
        if li is not None and ri is not None and li.bit_length() + ri.bit_length() > MAX_INT_BITS + 1:
            raise RenderLimitError(f"a product of integers would exceed {MAX_INT_BITS:,} bits")
        for seq, count in ((left, ri), (right, li)):
            size = _size(seq)
            if size is not None and count is not None:
                _refuse_growth(f"repeating a {type(seq).__name__} of length {size:,} {count:,} times", size * count)
    elif op == "+":
        ls, rs = _size(left), _size(right)
        if ls is not None and rs is not None:
            _refuse_growth("concatenation", ls + rs)
    elif op == "%" and isinstance(left, str) and _HUGE_FORMAT_NUMBER.search(left):
        raise RenderLimitError("a format string with a 7-digit width or precision")


def _check_join(separator: str, items: Any) -> None:
    if isinstance(items, list | tuple):
        total = sum(len(x) for x in items if isinstance(x, str)) + len(separator) * max(len(items) - 1, 0)
        _refuse_growth("join", total)


def _check_replace(text: Any, old: Any, new: Any) -> None:
    if isinstance(text, str) and isinstance(old, str) and isinstance(new, str) and len(new) > len(old):
        count = text.count(old) if old else len(text) + 1
        _refuse_growth("replace", len(text) + count * (len(new) - len(old)))


def _check_widths(what: str, args: Iterable[Any]) -> None:
    for arg in args:
        if (n := _int(arg)) is not None:
            _refuse_growth(f"{what} with width/count {n:,}", abs(n))


def _guard_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    passes = 1 if _PassArg.from_obj(func) is not None else 0

    @functools.wraps(func)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        _budget().check_time()
        value, extra = (args[passes], args[passes + 1 :]) if len(args) > passes else (None, ())
        if name in _WIDTH_FILTERS:
            _check_widths(f"filter {name}", [*extra, *kwargs.values()])
        elif name == "join" and value is not None and not isinstance(value, str):
            value = list(value)  # a generator (map, select) is materialised once, checked, and handed on
            args = (*args[:passes], value, *extra)
            _check_join(str(extra[0]) if extra else str(kwargs.get("d", "")), value)
        elif name == "replace" and len(extra) >= 2:
            _check_replace(value, extra[0], extra[1])
        elif name == "format" and isinstance(value, str) and _HUGE_FORMAT_NUMBER.search(value):
            raise RenderLimitError("a format string with a 7-digit width or precision")
        return _check_size(func(*args, **kwargs), f"filter {name}")

    return guarded


class _BoundedCodeGenerator(CodeGenerator):
    # Jinja2 forbids custom node types, so the deadline check is written into each ``for`` body as it is compiled.
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._loop_bodies: set[int] = set()

    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        self._loop_bodies.add(id(node.body))
        super().visit_For(node, frame)

    def blockvisit(self, nodes: Iterable[nodes.Node], frame: Frame) -> None:
        if id(nodes) in self._loop_bodies:
            self.writeline("environment.tick()")
        super().blockvisit(nodes, frame)

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox plus the size and time checks described in the module docstring."""

    code_generator_class = _BoundedCodeGenerator
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.globals.pop("lipsum", None)
        self.filters = {name: _guard_filter(name, func) for name, func in self.filters.items()}

    def tick(self) -> None:
        _budget().check_time()

    def concat(self, parts: Iterable[Any]) -> str:
        _budget().check_time()
        texts = [str(part) for part in parts]
        _refuse_growth("the ~ operator", sum(map(len, texts)))
        return "".join(texts)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        _budget().check_time()
        _check_binop(operator, left, right)
        return _check_size(super().call_binop(context, operator, left, right), f"the {operator} operator")

    def getattr(self, obj: Any, attribute: str) -> Any:
        _budget().check_time()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        _budget().check_time()
        return super().getitem(obj, argument)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is not None and _HUGE_FORMAT_NUMBER.search(value.__self__):
            raise RenderLimitError("a format string with a 7-digit width or precision")
        return wrapped

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _budget().check_time()
        owner = getattr(__obj, "__self__", None)
        method = getattr(__obj, "__name__", "")
        if isinstance(owner, str | list | tuple):
            if method in _WIDTH_METHODS:
                _check_widths(f"{type(owner).__name__}.{method}", [*args, *kwargs.values()])
            elif method == "join" and isinstance(owner, str) and args and not isinstance(args[0], str):
                args = (list(args[0]), *args[1:])
                _check_join(owner, args[0])
            elif method == "replace" and isinstance(owner, str) and len(args) >= 2:
                _check_replace(owner, args[0], args[1])
        result = super().call(__context, __obj, *args, **kwargs)
        return _check_size(result, f"calling {method or type(__obj).__name__}")


def render_bounded(
    template: Any, context: Mapping[str, Any], *, max_chars: int = MAX_PROMPT_CHARS, seconds: float = MAX_RENDER_SECONDS
) -> str:
    """Render ``template`` (compiled by a :class:`BoundedSandbox`) within ``max_chars`` and ``seconds``."""
    budget = _Budget(max_chars, time.monotonic() + seconds, seconds)
    token = _BUDGET.set(budget)
    chunks: list[str] = []
    total = 0
    stream = template.generate(**dict(context))
    try:
        for chunk in stream:
            total += len(chunk)
            if total > max_chars:
                raise RenderLimitError(f"output exceeded {max_chars:,} characters and was abandoned")
            chunks.append(chunk)
            budget.check_time()
    finally:
        stream.close()
        _BUDGET.reset(token)
    return "".join(chunks)
