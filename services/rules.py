"""The indicator-rule vote: a strategy's rules (``decision.rules``) evaluated on the newest usable bar.

Each rule's condition (the language of :mod:`models.rule_expr`, parsed once) reads the newest bar's indicator
values and ``close`` (and, for ``crosses_above`` / ``crosses_below``, the previous usable bar's under ``prev:``). A
rule whose names have no value yet (warming up) does not apply.

``score = sum(sign * weight of the rules that hold) / total`` in [-1, 1], ``sign`` +1 for BUY and -1 for SELL, and
``total`` the weights of the applicable rules, a ``group`` of alternatives counting once with its largest weight.
BUY when ``score >= threshold``, SELL when ``score <= -threshold``, else HOLD. Confidence (2 places): BUY/SELL
``0.5 + 0.45 * |score|``, HOLD ``0.5 - 0.45 * |score|``; no applicable rule: HOLD with confidence 0.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final, Literal

import numpy as np

from models.strategy import Rule

__all__ = [
    "RuleSet",
    "RuleVote",
    "RulesVerdict",
    "evaluate_rules",
    "rule_set",
    "vote_action",
    "vote_confidence",
    "vote_direction",
]

VoteAction = Literal["BUY", "SELL", "HOLD"]
_SIGN: Final = {"BUY": 1, "SELL": -1}
_ACTIONS: Final[dict[int, VoteAction]] = {1: "BUY", -1: "SELL", 0: "HOLD"}


@dataclass(frozen=True)
class RuleVote:
    """One group's vote (a rule without a group is its own group)."""

    label: str
    weight: float
    direction: int  # +1 BUY, -1 SELL, 0 no vote
    text: str


@dataclass(frozen=True)
class RulesVerdict:
    action: VoteAction
    score: float
    confidence: float
    votes: tuple[RuleVote, ...]
    not_applicable: tuple[str, ...] = ()
    total: float = 0.0  # the weights the score was divided by

    @property
    def text(self) -> str:
        """The votes in words: ``uptrend -> BUY (weight 2) [sma_fast 103.00, ...]; rsi: no vote ...``."""
        parts = [v.text for v in self.votes]
        if self.not_applicable:
            parts.append("no value yet for " + ", ".join(self.not_applicable))
        return "; ".join(parts)


def vote_confidence(action: VoteAction, score: float) -> float:
    """The confidence of a vote's outcome: BUY/SELL ``0.5 + 0.45 |score|``, HOLD ``0.5 - 0.45 |score|``."""
    return round(0.5 + 0.45 * abs(score), 2) if action != "HOLD" else round(0.5 - 0.45 * abs(score), 2)


def vote_direction(score: Any, threshold: float) -> Any:
    """+1 (BUY) when ``score >= threshold``, -1 (SELL) when ``score <= -threshold``, else 0; elementwise on arrays."""
    buy = score >= threshold
    return 1 * buy - 1 * ((score <= -threshold) & (buy ^ True))


def vote_action(score: float, threshold: float) -> VoteAction:
    return _ACTIONS[int(vote_direction(score, threshold))]


@dataclass(frozen=True)
class _Member:
    rule: Rule
    sign: int
    outcome: Callable[[Mapping[str, float | None]], tuple[Any, Any]]
    names: tuple[str, ...]


class RuleSet:
    """Rules compiled once for repeated voting (a replay votes on every bar): conditions, signs, name lists."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.rules = tuple(rules)
        groups: dict[str, list[_Member]] = {}
        for r in self.rules:
            member = _Member(r, _SIGN[r.action], r.condition.outcome, tuple(sorted(r.names)))
            groups.setdefault(r.group or r.label, []).append(member)
        self._groups = tuple(
            (label, tuple(members), tuple(sorted({n for m in members for n in m.names})))
            for label, members in groups.items()
        )

    def vote(self, values: Mapping[str, float | None], *, threshold: float) -> RulesVerdict:
        """Vote over ``values`` (column name -> newest value, ``close`` included); see the module docstring."""
        outcomes = [[m.outcome(values) for m in members] for _, members, _ in self._groups]
        numbers, total_, points_ = self._tally(outcomes)
        total, points = float(total_), float(points_)
        not_applicable: list[str] = []
        votes: list[RuleVote] = []
        for (label, members, names), results, (weight_, net_) in zip(self._groups, outcomes, numbers, strict=True):
            weight, net = float(weight_), float(net_)
            texts: list[str] = []
            for m, (held, bad) in zip(members, results, strict=True):
                if bad:
                    not_applicable.append(m.rule.label)
                elif held:
                    texts.append(
                        f"{m.rule.label} -> {m.rule.action} (weight {m.rule.weight:g}){_values_text(m.names, values)}"
                    )
            if weight == 0.0:  # no member applies
                continue
            text = "; ".join(texts) if texts else f"{label}: no vote (weight {weight:g}){_values_text(names, values)}"
            votes.append(RuleVote(label, weight, 1 if net > 0 else -1 if net < 0 else 0, text))
        if total == 0:
            return RulesVerdict("HOLD", 0.0, 0.0, (), tuple(not_applicable))
        score = max(-1.0, min(1.0, points / total))
        action = vote_action(score, threshold)
        return RulesVerdict(action, score, vote_confidence(action, score), tuple(votes), tuple(not_applicable), total)

    def directions(self, values: Mapping[str, Any], size: int, *, threshold: float) -> np.ndarray[Any, Any]:
        """The vote's direction on ``size`` bars at once (name -> float array, NaN: no value): +1 BUY, -1 SELL,
        0 HOLD (no applicable rule included), as :meth:`vote` decides on each bar's values (same arithmetic)."""
        with np.errstate(all="ignore"):  # NaN compares and divisions by zero are the "bad" masks, not warnings
            outcomes = [[m.outcome(values) for m in members] for _, members, _ in self._groups]
            _, total, points = self._tally(outcomes)
            score = np.clip(points / np.where(total > 0, total, 1.0), -1.0, 1.0)
        direction = np.where(np.asarray(total) > 0, vote_direction(score, threshold), 0)
        return np.broadcast_to(direction, (size,)).astype(np.int8)  # rules of constants alone: one value for all

    def _tally(self, outcomes: list[list[tuple[Any, Any]]]) -> tuple[list[tuple[Any, Any]], Any, Any]:
        """Per group ``(weight, net)`` and the sums ``total`` and ``points`` from each member's ``(held, bad)``:
        a group weighs its largest applicable member's weight and nets the signed weights of the members that
        hold. Scalars for one bar, arrays for many (the same operations, in the same order)."""
        numbers: list[tuple[Any, Any]] = []
        total: Any = 0.0
        points: Any = 0.0
        larger: Callable[[Any, Any], Any] = max  # one bar: floats; many: arrays, elementwise
        for (_, members, _), results in zip(self._groups, outcomes, strict=True):
            weight: Any = 0.0
            net: Any = 0.0
            for m, (held, bad) in zip(members, results, strict=True):
                applies = bad ^ True
                if isinstance(applies, np.ndarray):
                    larger = np.maximum
                weight = larger(weight, applies * m.rule.weight)  # x * True is x, x * False is 0.0
                net = net + (applies & held) * (m.sign * m.rule.weight)
            numbers.append((weight, net))
            total = total + weight
            points = points + net
        return numbers, total, points


def _values_text(names: tuple[str, ...], values: Mapping[str, float | None]) -> str:
    shown = [f"{n} {value:.2f}" for n in names if (value := values.get(n)) is not None]
    return f" [{', '.join(shown)}]" if shown else ""


@lru_cache(maxsize=256)
def rule_set(rules: tuple[Rule, ...]) -> RuleSet:
    """The compiled :class:`RuleSet` of ``rules`` (cached: a strategy's rules compile once per process)."""
    return RuleSet(rules)


def evaluate_rules(rules: Sequence[Rule], values: Mapping[str, float | None], *, threshold: float) -> RulesVerdict:
    """Vote ``rules`` over ``values`` (column name -> newest value, ``close`` included); see the module docstring."""
    return rule_set(tuple(rules)).vote(values, threshold=threshold)
