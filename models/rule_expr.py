"""The indicator-rule expression language: a tiny, safe parser and evaluator (never ``eval``/``exec``).

A rule's condition is one boolean expression over the newest bar's values, e.g.::

    sma_fast > sma_slow and close > sma_slow
    rsi_14 < 30 or close < bb_lowerband * 0.99
    not (macd_macdhist > 0)

Grammar (precedence low to high)::

    expr       := or_expr
    or_expr    := and_expr ("or" and_expr)*
    and_expr   := not_expr ("and" not_expr)*
    not_expr   := "not" not_expr | comparison | "(" expr ")"
    comparison := sum ("<" | "<=" | ">" | ">=" | "==" | "!=" | "crosses_above" | "crosses_below") sum
    sum        := product (("+" | "-") product)*
    product    := unary (("*" | "/") unary)*
    unary      := "-" unary | NUMBER | NAME | "(" sum ")"

Names are lowercase identifiers (indicator columns such as ``rsi_14``, ``bb_upperband``, and ``close``); which
names exist is checked by the strategy document against its indicators. There are no calls, attributes,
subscripts, strings or assignments: any other character is a :class:`RuleSyntaxError` naming it and its column.
Types are checked when parsing: ``and``/``or``/``not`` take conditions, comparisons take numbers, and the whole
expression must be a condition. Comparisons do not chain (``a < b < c`` is an error: write ``a < b and b < c``).

``a crosses_above b`` holds when ``a <= b`` on the previous usable bar and ``a > b`` on the newest
(``crosses_below`` the mirror); the previous bar's values are passed under ``prev:<name>`` keys
(:data:`PREVIOUS_PREFIX`, a prefix no name can have), and :attr:`Condition.needs_previous` says whether a condition
reads them.

Evaluation: :meth:`Condition.evaluate` returns ``None`` (the rule does not apply) when a name it uses has no value
(an indicator still warming up) or a division by zero occurs; otherwise True/False. Compiled to closures once, so
a replay evaluating it on every bar pays no parsing.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final

__all__ = ["PREVIOUS_PREFIX", "Condition", "RuleSyntaxError", "parse_condition"]

MAX_LENGTH: Final = 500
CROSSINGS: Final = ("crosses_above", "crosses_below")
KEYWORDS: Final = frozenset({"and", "or", "not", *CROSSINGS})
PREVIOUS_PREFIX: Final = "prev:"
_COMPARE: Final[dict[str, Callable[[Any, Any], Any]]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}
_TOKEN: Final = re.compile(
    r"\s*(?:(?P<number>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|\.\d+)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<op><=|>=|==|!=|[<>+\-*/()]))"
)
_ALLOWED: Final = (
    "names, numbers, comparisons (< <= > >= == != crosses_above crosses_below), + - * /, parentheses and and/or/not"
)

Values = Mapping[str, Any]  # name -> float | None (one bar), or name -> float array (many bars, NaN: no value)
# A compiled node returns (value, bad): ``bad`` True where a name has no value (or a division by zero), so the rule
# does not apply there. Both are scalars for one bar and arrays for many.
_Pair = tuple[Any, Any]
_Num = Callable[[Values], _Pair]
_Bool = Callable[[Values], _Pair]
_NAN: Final = float("nan")


class RuleSyntaxError(ValueError):
    """The expression is not in the rule language; the message says what and where (1-based column)."""


@dataclass(frozen=True)
class _Tok:
    kind: str  # number | name | op | end
    text: str
    col: int


def _tokens(text: str) -> list[_Tok]:
    out: list[_Tok] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            bad = text[pos:].lstrip()[0]
            col = len(text) - len(text[pos:].lstrip()) + 1
            raise RuleSyntaxError(f"unexpected character {bad!r} at column {col}: only {_ALLOWED} are allowed")
        kind = match.lastgroup or "op"
        start = match.start(kind)
        out.append(_Tok(kind, match.group(kind), start + 1))
        pos = match.end()
    out.append(_Tok("end", "", len(text) + 1))
    return out


@dataclass(frozen=True)
class _Expr:
    kind: str  # "num" or "bool"
    fn: Callable[[Values], _Pair]
    text: str


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = _tokens(text)
        self.i = 0
        self.names: set[str] = set()
        self.needs_previous = False

    @property
    def tok(self) -> _Tok:
        return self.toks[self.i]

    def _next(self) -> _Tok:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def _fail(self, message: str, tok: _Tok | None = None) -> RuleSyntaxError:
        t = tok or self.tok
        where = "at the end" if t.kind == "end" else f"at column {t.col} ({t.text!r})"
        return RuleSyntaxError(f"{message} {where}")

    def _expect(self, text: str) -> None:
        if self.tok.text != text or self.tok.kind not in ("op",):
            raise self._fail(f"expected {text!r}")
        self._next()

    def _is_keyword(self, word: str) -> bool:
        return self.tok.kind == "name" and self.tok.text == word

    def parse(self) -> _Expr:
        if self.tok.kind == "end":
            raise RuleSyntaxError("empty condition: write e.g. 'rsi_14 < 30'")
        expr = self._or()
        if self.tok.kind != "end":
            raise self._fail("unexpected text")
        if expr.kind != "bool":
            raise RuleSyntaxError(f"{self.text!r} is a number, not a condition: compare it, e.g. '{expr.text} > 0'")
        return expr

    def _bool(self, expr: _Expr, word: str) -> _Bool:
        if expr.kind != "bool":
            sides = "a condition after it" if word == "not" else "conditions on both sides"
            raise RuleSyntaxError(f"'{word}' needs {sides}, got the number {expr.text!r}")
        fn = expr.fn
        return fn

    def _logical(self, word: str, operand: Callable[[], _Expr], combine: Callable[[_Bool, _Bool], _Bool]) -> _Expr:
        left = operand()
        while self._is_keyword(word):
            self._next()
            right = operand()
            fn = combine(self._bool(left, word), self._bool(right, word))
            left = _Expr("bool", fn, f"{left.text} {word} {right.text}")
        return left

    def _or(self) -> _Expr:
        return self._logical("or", self._and, _either)

    def _and(self) -> _Expr:
        return self._logical("and", self._not, _both)

    def _not(self) -> _Expr:
        if self._is_keyword("not"):
            self._next()
            inner = self._not()
            return _Expr("bool", _negate(self._bool(inner, "not")), f"not {inner.text}")
        return self._comparison()

    def _at_comparison(self) -> bool:
        tok = self.tok
        return (tok.kind == "op" and tok.text in _COMPARE) or (tok.kind == "name" and tok.text in CROSSINGS)

    def _comparison(self) -> _Expr:
        left = self._sum()
        if not self._at_comparison():
            return left
        op = self._next().text
        right = self._sum()
        if left.kind != "num" or right.kind != "num":
            raise RuleSyntaxError(f"'{op}' compares numbers, not conditions: {left.text} {op} {right.text}")
        if self._at_comparison():
            raise self._fail("comparisons do not chain (write 'a < b and b < c')")
        a, b = left.fn, right.fn
        if op in CROSSINGS:
            self.needs_previous = True
            fn = _crossing(op == "crosses_above", a, b)
        else:
            fn = _compare(_COMPARE[op], a, b)
        return _Expr("bool", fn, f"{left.text} {op} {right.text}")

    def _sum(self) -> _Expr:
        left = self._product()
        while self.tok.kind == "op" and self.tok.text in "+-":
            op = self._next().text
            right = self._product()
            left = self._arith(op, left, right)
        return left

    def _product(self) -> _Expr:
        left = self._unary()
        while self.tok.kind == "op" and self.tok.text in "*/":
            op = self._next().text
            right = self._unary()
            left = self._arith(op, left, right)
        return left

    def _arith(self, op: str, left: _Expr, right: _Expr) -> _Expr:
        if left.kind != "num" or right.kind != "num":
            raise RuleSyntaxError(f"'{op}' works on numbers, not conditions: {left.text} {op} {right.text}")
        return _Expr("num", _arith(op, left.fn, right.fn), f"{left.text} {op} {right.text}")

    def _unary(self) -> _Expr:
        tok = self.tok
        if tok.kind == "op" and tok.text == "-":
            self._next()
            inner = self._unary()
            if inner.kind != "num":
                raise RuleSyntaxError(f"'-' needs a number, got the condition {inner.text!r}")
            fn: _Num = inner.fn
            return _Expr("num", _minus(fn), f"-{inner.text}")
        if tok.kind == "number":
            self._next()
            return _Expr("num", _leaf(value=float(tok.text)), tok.text)
        if tok.kind == "name":
            if tok.text in KEYWORDS:
                what = "misplaced 'not'" if tok.text == "not" else f"'{tok.text}' needs something before it"
                raise self._fail(what)
            self._next()
            if self.tok.kind == "op" and self.tok.text == "(":
                raise self._fail(f"calls are not allowed ({tok.text}(...)): only {_ALLOWED}", tok)
            if not re.fullmatch(r"[a-z][a-z0-9_]*", tok.text):
                raise self._fail(
                    "names are lowercase indicator columns (letters, digits, '_', starting with a letter)", tok
                )
            name = tok.text
            self.names.add(name)
            return _Expr("num", _leaf(name=name), name)
        if tok.kind == "op" and tok.text == "(":
            self._next()
            inner = self._or()
            self._expect(")")
            return _Expr(inner.kind, inner.fn, f"({inner.text})")
        raise self._fail("expected a name, a number or '('")


class _leaf:  # a name or a number; _compare reads .name / .value to specialise
    __slots__ = ("name", "value")

    def __init__(self, *, name: str | None = None, value: float | None = None) -> None:
        self.name, self.value = name, value

    def __call__(self, v: Values) -> _Pair:
        if self.name is None:
            return self.value, False
        x = v.get(self.name)
        if x is None:
            return _NAN, True
        return x, x != x  # x != x: NaN (still warming up); elementwise for an array


def _either(a: _Bool, b: _Bool) -> _Bool:
    def fn(v: Values) -> _Pair:
        (x, xb), (y, yb) = a(v), b(v)
        return x | y, xb | yb

    return fn


def _both(a: _Bool, b: _Bool) -> _Bool:
    def fn(v: Values) -> _Pair:
        (x, xb), (y, yb) = a(v), b(v)
        return x & y, xb | yb

    return fn


def _negate(a: _Bool) -> _Bool:
    def fn(v: Values) -> _Pair:
        x, xb = a(v)
        return x ^ True, xb

    return fn


def _compare(op: Callable[[Any, Any], Any], a: _Num, b: _Num) -> _Bool:
    left, right = getattr(a, "name", None), getattr(b, "name", None)
    const = getattr(b, "value", None)
    if left is not None and right is not None:  # name <op> name: the common case, one closure

        def names(v: Values) -> _Pair:
            x, y = v.get(left), v.get(right)
            if x is None or y is None:
                return False, True
            return op(x, y), (x != x) | (y != y)

        return names
    if left is not None and const is not None:  # name <op> number

        def name_const(v: Values) -> _Pair:
            x = v.get(left)
            if x is None:
                return False, True
            return op(x, const), x != x

        return name_const

    def fn(v: Values) -> _Pair:
        (x, xb), (y, yb) = a(v), b(v)
        return op(x, y), xb | yb | (x != x) | (y != y)

    return fn


def _arith(op: str, a: _Num, b: _Num) -> _Num:
    def fn(v: Values) -> _Pair:
        (x, xb), (y, yb) = a(v), b(v)
        if op == "+":
            return x + y, xb | yb
        if op == "-":
            return x - y, xb | yb
        if op == "*":
            return x * y, xb | yb
        zero = y == 0  # a division by zero: the rule does not apply
        return x / (y + zero), xb | yb | zero

    return fn


def _minus(a: _Num) -> _Num:
    def fn(v: Values) -> _Pair:
        x, xb = a(v)
        return -x, xb

    return fn


class _Previous(Mapping[str, Any]):
    """The previous bar's view of a values mapping (``prev:<name>`` read as ``<name>``)."""

    __slots__ = ("_values",)

    def __init__(self, values: Values) -> None:
        self._values = values

    def __getitem__(self, name: str) -> Any:
        return self._values[PREVIOUS_PREFIX + name]

    def get(self, name: str, default: object = None) -> Any:
        return self._values.get(PREVIOUS_PREFIX + name)

    def __iter__(self) -> Iterator[str]:
        n = len(PREVIOUS_PREFIX)
        return (k[n:] for k in self._values if k.startswith(PREVIOUS_PREFIX))

    def __len__(self) -> int:
        return sum(1 for _ in self)


def _crossing(above: bool, a: _Num, b: _Num) -> _Bool:
    def fn(v: Values) -> _Pair:
        prev = _Previous(v)
        (x, xb), (y, yb), (px, pxb), (py, pyb) = a(v), b(v), a(prev), b(prev)
        total = x + y + px + py  # NaN when any is NaN (or infinities of both signs)
        bad = xb | yb | pxb | pyb | (total != total)
        return ((px <= py) & (x > y)) if above else ((px >= py) & (x < y)), bad

    return fn


@dataclass(frozen=True)
class Condition:
    """A parsed rule condition: its source, the names it reads, whether it reads the previous bar
    (``crosses_above`` / ``crosses_below``), and its compiled evaluator.

    The compiled closures are written with operators that work on floats and on numpy arrays alike, so the one
    evaluator serves a live run (:meth:`evaluate`, one bar) and a replay (:meth:`outcome` over arrays, every bar:
    :meth:`services.rules.RuleSet.directions`).
    """

    source: str
    names: frozenset[str]
    _fn: _Bool
    needs_previous: bool = False

    def evaluate(self, values: Values) -> bool | None:
        """True/False over ``values`` (name -> value); None when a name has no value (the rule does not apply)."""
        held, bad = self._fn(values)
        return None if bad else bool(held)

    def outcome(self, values: Values) -> tuple[Any, Any]:
        """``(held, bad)`` as compiled (``bad``: the rule does not apply): scalars for one bar, arrays for many."""
        return self._fn(values)


@lru_cache(maxsize=4096)
def parse_condition(text: str) -> Condition:
    """Parse ``text`` into a :class:`Condition`; raise :class:`RuleSyntaxError` with what and where."""
    if not isinstance(text, str):
        raise RuleSyntaxError(f"a condition is text, got {type(text).__name__}")
    if len(text) > MAX_LENGTH:
        raise RuleSyntaxError(f"condition is {len(text)} characters long (max {MAX_LENGTH})")
    parser = _Parser(text)
    expr = parser.parse()
    return Condition(text.strip(), frozenset(parser.names), expr.fn, parser.needs_previous)
